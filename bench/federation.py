"""A federation at scale, simulated: a province, 3 cities and 9 districts on one machine.

Thirteen real ``yunnao serve`` processes on SQLite with small settings (no plugins, no
job workers, slow health probes), linked district → city → province through the link
API (``POST /v1/cascade/peers`` on both sides, what ``yunnao cascade add-child`` and
``add-parent`` send). Each district's store is first loaded with ``--per-district``
generated capabilities (public and internal: everything that travels up), straight
through the store as ``bench/cascade.py`` does. Then:

a. initial sync: from the first link until the province lists all 9 × N capabilities
   (its search total, polled), with the rate at the province and at each city; the
   baseline is the districts' own publish path for the same entries;
b. live: ``--live`` publishes spread over the districts, each timed from the publish
   request until the province's own change feed (long-polled) shows it, two hops up;
   baselines: the same publish in the district's own feed and in its city's;
c. narrowing: ``--narrow`` of those capabilities made ``restricted`` at their district
   (a class that never leaves its node), each timed until the tombstone is in the
   city's and the province's feeds (applied: they no longer list it); baseline: the
   district's own feed;
d. calls: ``--calls`` calls of the test plugin's ``greet`` (served in process by one
   district, the only node with a plugin) made at the district (baseline), through its
   city and through the province, with each node's CPU and the usage records and audit
   events each call leaves;
e. PostgreSQL: ``--postgres`` of the same capabilities and the calls' usage records
   written into a PostgreSQL store, for its size per capability and per record.

CPU, RSS and store size per node kind are read from the processes (psutil) and the
stores. Results go into the ``bench:federation`` section of ``docs/benchmarks.md``; the
sizing of a province in ``docs/operating.md`` is worked out from them.

    python bench/federation.py                                # 10,000 per district
    python bench/federation.py --per-district 500 --out -     # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from bench.federation_report import (  # noqa: E402
    CALLEE,
    CITIES,
    CITY_OF,
    DISTRICTS,
    END,
    GREET,
    PROVINCE,
    START,
    call_rows,
    report,
    store_stats,
)
from bench.federation_stores import load, postgres, usage_records  # noqa: E402
from tests.realservers.yunnao_node import YunnaoProcess  # noqa: E402
from tests.runtime_support import RT_PLUGIN_DIR  # noqa: E402
from yunnao.registry.identity import tokens  # noqa: E402

# Small settings: thirteen nodes share the machine's cores.
SMALL = {
    "YUNNAO_PLUGINS": "false",
    "YUNNAO_JOB_WORKERS": "0",
    "YUNNAO_HEALTH_PROBE_INTERVAL": "30",
    "YUNNAO_HEALTH_PROBE_TIMEOUT": "10",
    "YUNNAO_HEALTH_LATE_AFTER": "600",
    "YUNNAO_USAGE_ROLLUP_INTERVAL": "3600",
}
console = Console(stderr=True)


# ---------------------------------------------------------------- nodes


@dataclass
class Site:
    node_id: str
    proc: YunnaoProcess
    auth: dict[str, str] = field(default_factory=dict)
    startup_cpu: float = 0.0

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def kind(self) -> str:
        return {1: "province", 2: "city"}.get(self.node_id.count(".") + 1, "district")

    def cpu(self) -> float:
        """CPU seconds the node's process (and any children) used so far."""
        assert self.proc.proc is not None
        p = psutil.Process(self.proc.proc.pid)
        total = sum(p.cpu_times()[:2])
        for child in p.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total

    def rss(self) -> int:
        assert self.proc.proc is not None
        return psutil.Process(self.proc.proc.pid).memory_info().rss


def admin(data_dir: Path, node_id: str) -> dict[str, str]:
    key = tokens.load_or_create_key(data_dir / "node_key.pem")
    token = tokens.issue(
        key, node_id=node_id, subject="bench", role="admin", scopes=[node_id],
        ttl=timedelta(hours=4),
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


def make_sites(root: Path) -> dict[str, Site]:
    ids = [PROVINCE, *CITIES, *DISTRICTS]
    plugin = ["--plugin", str(RT_PLUGIN_DIR / "yunnao_rt"), "--publish-plugins"]
    return {
        n: Site(n, YunnaoProcess(root / n, "--node-id", n, *(plugin if n == CALLEE else []),
                                 env=SMALL))
        for n in ids
    }  # fmt: skip


def start_nodes(sites: dict[str, Site]) -> None:
    """Start every node at once (a failed one raises; the caller stops the rest)."""
    with ThreadPoolExecutor(len(sites)) as pool:
        list(pool.map(lambda s: s.proc.start(timeout=300), sites.values()))
    for site in sites.values():
        site.auth = admin(site.proc.cwd / "var", site.node_id)
        site.startup_cpu = site.cpu()


def link(parent: Site, child: Site) -> None:
    """Link ``child`` under ``parent``, one request on each side."""
    for at, body in (
        (parent, {"id": child.node_id, "relation": "child", "url": child.url}),
        (child, {"id": parent.node_id, "relation": "parent", "url": parent.url}),
    ):
        resp = httpx.post(f"{at.url}/v1/cascade/peers", json=body, headers=at.auth, timeout=60)
        resp.raise_for_status()


def total(site: Site, client: httpx.Client) -> int:
    resp = client.get(f"{site.url}/v1/capabilities", params={"per_page": 1}, headers=site.auth)
    resp.raise_for_status()
    return resp.json()["total"]


def peers(site: Site) -> list[dict[str, Any]]:
    resp = httpx.get(f"{site.url}/v1/cascade/peers", headers=site.auth, timeout=60)
    resp.raise_for_status()
    return resp.json()["items"]


# ---------------------------------------------------------------- a. initial sync


@dataclass
class Sync:
    seconds: dict[str, float]  # node id -> seconds from the first link to complete
    entries: dict[str, int]  # node id -> feed entries it applied
    cpu: dict[str, float]  # node id -> CPU seconds during the sync
    expect: dict[str, int]  # node id -> capabilities it lists when complete


def initial_sync(sites: dict[str, Site], timeout: float) -> Sync:
    with httpx.Client(timeout=60) as client:
        own = {d: total(sites[d], client) for d in DISTRICTS}
    expect = {c: sum(own[d] for d in ds) for c, ds in CITIES.items()}
    expect[PROVINCE] = sum(own.values())
    cpu0 = {n: s.cpu() for n, s in sites.items()}
    start = time.perf_counter()
    for city, districts in CITIES.items():
        link(sites[PROVINCE], sites[city])
        for district in districts:
            link(sites[city], sites[district])
    done: dict[str, float] = {}
    last_report = 0.0
    with httpx.Client(timeout=60) as client:
        while len(done) < len(expect):
            now = time.perf_counter() - start
            if now > timeout:
                raise RuntimeError(f"sync not done after {timeout:.0f} s: {done}")
            for node in expect:
                if node not in done and total(sites[node], client) >= expect[node]:
                    done[node] = time.perf_counter() - start
            if now - last_report > 15:
                last_report = now
                have = total(sites[PROVINCE], client)
                console.print(f"  {now:5.0f} s: province lists {have:,} of {expect[PROVINCE]:,}")
            time.sleep(0.25)
    cpu = {n: s.cpu() - cpu0[n] for n, s in sites.items()}
    # Caught up everywhere (the totals count capabilities; the feeds also carry
    # namespaces and versions): then count the entries each node applied.
    applied: dict[str, int] = {}
    for node in expect:
        deadline = time.monotonic() + 120
        while True:
            items = peers(sites[node])
            if all(p["checkpoint"] >= p["head"] > 0 for p in items if p["relation"] == "child"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node} not caught up: {items}")
            time.sleep(0.2)
        applied[node] = sum(p["applied"] for p in items if p["relation"] == "child")
    return Sync(done, applied, cpu, expect)


def idle(sites: dict[str, Site], seconds: float) -> dict[str, float]:
    """Share of one core each node uses while linked, caught up and not asked anything
    (its long polls of its children, answering its parent's, health probes)."""
    cpu0 = {n: s.cpu() for n, s in sites.items()}
    time.sleep(seconds)
    return {n: (s.cpu() - cpu0[n]) / seconds for n, s in sites.items()}


# ---------------------------------------------------------------- b and c: live


def head(site: Site) -> int:
    resp = httpx.get(f"{site.url}/v1/cascade/changes", params={"limit": 1}, headers=site.auth)
    resp.raise_for_status()
    return resp.json()["head"]


def watch(site: Site, since: int, key: str, op: str, out: dict[str, float]) -> None:
    """Long-poll ``site``'s own feed until an ``op`` item for ``key`` appears."""
    with httpx.Client(timeout=40) as client:
        while True:
            page = client.get(
                f"{site.url}/v1/cascade/changes",
                params={"since": since, "wait": 20, "limit": 1000},
                headers=site.auth,
            ).json()
            if any(i["key"] == key and i["op"] == op for i in page["items"]):
                out[site.node_id] = time.perf_counter()
                return
            since = page["next"]


def timed(sites: list[Site], key: str, op: str, act: Any) -> list[float]:
    """Seconds from ``act()`` until each of ``sites``' feeds shows ``op`` for ``key``."""
    seen: dict[str, float] = {}
    watchers = [
        threading.Thread(target=watch, args=(s, head(s), key, op, seen), daemon=True) for s in sites
    ]
    for w in watchers:
        w.start()
    time.sleep(0.05)  # the long polls are waiting
    started = time.perf_counter()
    act()
    for w in watchers:
        w.join(60)
    missing = [s.node_id for s in sites if s.node_id not in seen]
    if missing:
        raise RuntimeError(f"{op} of {key} not seen within 60 s at {missing}")
    return [seen[s.node_id] - started for s in sites]


def live(sites: dict[str, Site], count: int) -> tuple[list[list[float]], list[str]]:
    """Publish ``count`` capabilities over the districts; per publish the seconds to
    the district's, its city's and the province's feed, and the refs published."""
    out, refs = [], []
    for i in range(count):
        district = sites[DISTRICTS[i % len(DISTRICTS)]]
        ns, name = f"{district.node_id}.live", f"live-{i:04d}"

        def publish(d: Site = district, ns: str = ns, name: str = name, i: int = i) -> None:
            body = {"version": "1.0.0", "title": f"实时 {i}", "classification": "public"}
            url = f"{d.url}/v1/capabilities/{ns}/{name}/versions"
            httpx.post(url, json=body, headers=d.auth, timeout=30).raise_for_status()

        path = [district, sites[CITY_OF[district.node_id]], sites[PROVINCE]]
        out.append(timed(path, f"{ns}/{name}", "upsert", publish))
        refs.append(f"{ns}/{name}")
    return out, refs


def narrow(sites: dict[str, Site], refs: list[str]) -> list[list[float]]:
    """Make each of ``refs`` restricted at its district; seconds until the tombstone is
    in the district's, its city's and the province's feeds."""
    out = []
    for ref in refs:
        district = sites[ref.split("/")[0].rsplit(".", 1)[0]]

        def restrict(d: Site = district, ref: str = ref) -> None:
            body = {"classification": "restricted"}
            url = f"{d.url}/v1/capabilities/{ref}"
            httpx.patch(url, json=body, headers=d.auth, timeout=30).raise_for_status()

        path = [district, sites[CITY_OF[district.node_id]], sites[PROVINCE]]
        out.append(timed(path, ref, "delete", restrict))
        for site in path[1:]:  # no longer listed there
            resp = httpx.get(f"{site.url}/v1/capabilities/{ref}", headers=site.auth)
            if resp.status_code != 404:
                raise RuntimeError(f"{ref} still at {site.node_id}: {resp.status_code}")
    return out


def calls(sites: dict[str, Site], count: int) -> list[list[float]]:
    """``count`` calls of the district's greet, one at a time, anonymous: at the
    district, through its city, through the province; seconds each."""
    path = [sites[CALLEE], sites[CITY_OF[CALLEE]], sites[PROVINCE]]
    body = {"input": {"name": "李雷"}}
    out: list[list[float]] = [[] for _ in path]
    with httpx.Client(timeout=30) as client:
        for _ in range(count // 10 + 1):  # warm-up: connections, caches, the breaker
            for site in path:
                client.post(f"{site.url}/v1/invoke/{GREET}", json=body).raise_for_status()
        for _ in range(count):
            for i, site in enumerate(path):
                started = time.perf_counter()
                client.post(f"{site.url}/v1/invoke/{GREET}", json=body).raise_for_status()
                out[i].append(time.perf_counter() - started)
    return [list(col) for col in zip(*out, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--per-district", type=int, default=10_000, help="capabilities loaded into each district"
    )
    parser.add_argument("--live", type=int, default=50, help="publishes timed to the province")
    parser.add_argument("--narrow", type=int, default=20, help="narrowings timed (≤ --live)")
    parser.add_argument("--calls", type=int, default=200, help="calls timed at each level")
    parser.add_argument(
        "--postgres",
        type=int,
        default=2000,
        help="capabilities loaded into a PostgreSQL store to measure its size (0: skip)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the sync may take")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or - "
    )
    args = parser.parse_args()
    if args.postgres < 0:
        parser.error("--postgres must be 0 (skip) or more")
    if min(args.per_district, args.live, args.calls) < 1 or not 1 <= args.narrow <= args.live:
        parser.error("--per-district, --live and --calls must be at least 1, --narrow 1 to --live")
    began = time.perf_counter()
    run: dict[str, Any] = {"per_district": args.per_district}
    with tempfile.TemporaryDirectory(prefix="yunnao-bench-federation-") as tmp:
        root = Path(tmp)
        console.print(f"loading {args.per_district:,} capabilities into each of 9 districts")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            loads = list(
                pool.map(load, [root / d / "var" for d in DISTRICTS], DISTRICTS,
                         [args.per_district] * 9)
            )  # fmt: skip
        run["load_seconds"] = time.perf_counter() - t0
        run["load_rate"] = args.per_district / (sum(s for _, s in loads) / len(loads))
        console.print(f"  {run['load_seconds']:.0f} s; starting 13 nodes")
        t0 = time.perf_counter()
        sites = make_sites(root)
        try:
            start_nodes(sites)
            run["startup_seconds"] = time.perf_counter() - t0
            console.print("linking; waiting for the province to list everything")
            run["sync"] = initial_sync(sites, args.timeout)
            console.print(f"  province complete after {run['sync'].seconds[PROVINCE]:.1f} s")
            run["rss"] = {n: s.rss() for n, s in sites.items()}
            run["idle"] = idle(sites, 10.0)
            run["stores"] = {n: store_stats(s) for n, s in sites.items()}
            console.print(f"live: {args.live} publishes")
            run["live"], refs = live(sites, args.live)
            console.print(f"narrowing: {args.narrow}")
            run["narrow"] = narrow(sites, refs[: args.narrow])
            console.print(f"calls: {args.calls} through each of 3 levels")
            path = [CALLEE, CITY_OF[CALLEE], PROVINCE]
            before = {n: call_rows(sites[n]) for n in path}
            cpu0, t0 = {n: sites[n].cpu() for n in path}, time.perf_counter()
            run["calls"] = calls(sites, args.calls)
            # Each node's CPU over the calls, less what it spends idle in that time.
            spent = time.perf_counter() - t0
            run["call_cpu"] = {n: sites[n].cpu() - cpu0[n] - run["idle"][n] * spent for n in path}
        finally:
            for site in sites.values():
                site.proc.stop()  # a clean stop writes the buffered usage records
        after = {n: call_rows(sites[n]) for n in path}
        run["call_rows"] = {n: (before[n], after[n]) for n in path}
        if args.postgres:
            console.print(f"PostgreSQL: {args.postgres:,} capabilities and the calls' usage")
            usage = usage_records(sites[CALLEE].proc.cwd / "var" / "registry.db")
            run["pg"] = postgres(root / "pg", CALLEE, args.postgres, usage)
        run["sites"] = sites
    run["seconds"] = time.perf_counter() - began
    section = report(run)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END, heading="## Federation")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
