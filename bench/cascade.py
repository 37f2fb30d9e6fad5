"""Cascade throughput and latency: a district's catalog syncing up to its city.

1. Initial sync: ``--entries`` generated capabilities (one version each, none
   restricted) are loaded into a district's SQLite store (signed as they are written,
   as ``yunnao serve`` does), then a city (SQLite) is linked to it and pulls
   everything. The rate is quoted against the baseline of the same run: the district's
   own bulk publish of the same entries into its store. With ``--profile``, py-spy
   samples both processes during the sync and the top functions (own time) are
   printed.
2. Live mode: with the nodes linked and caught up, ``--live`` capabilities are
   published at the district one at a time; each is timed from the publish request
   until the city's own change feed (long-polled) shows it. The baseline is the same
   publish timed until the district's own feed shows it.

Both nodes are real ``yunnao serve`` processes on loopback; results go into the marked
section of ``docs/benchmarks.md``.

    python bench/cascade.py                          # 100,000 entries, 200 live publishes
    python bench/cascade.py --entries 10000 --live 50 --out -    # quick look
    python bench/cascade.py --entries 20000 --live 0 --out - --profile   # where time goes
"""

from __future__ import annotations

import argparse
import collections
import itertools
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from bench.catalog_gen import entries  # noqa: E402
from tests.realservers.yunnao_node import YunnaoProcess  # noqa: E402
from yunnao.cascade.feed import Feed  # noqa: E402
from yunnao.registry import db, migrate  # noqa: E402
from yunnao.registry.identity import tokens  # noqa: E402
from yunnao.registry.store import RegistryStore  # noqa: E402

DISTRICT, CITY = "sd.qd.shinan", "sd.qd"
BATCH = 1000
START, END = "<!-- bench:cascade start -->", "<!-- bench:cascade end -->"
console = Console(stderr=True)


def progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def load(data_dir: Path, count: int) -> float:
    """Publish ``count`` entries into the district's store; entries per second."""
    engine = db.create_engine(f"sqlite:///{data_dir / 'registry.db'}")
    migrate.upgrade(engine)
    store = RegistryStore(engine, DISTRICT)
    key = tokens.load_or_create_key(data_dir / "node_key.pem")
    store.ensure_node(public_key=tokens.public_key_text(key))
    store.signer = Feed(engine, DISTRICT, key).sign_logged  # as `yunnao serve` wires it
    items = (
        (ns, name, spec.model_copy(update={"classification": "public"}))
        for ns, name, spec in entries(count, DISTRICT)
    )
    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("district: publishing", total=count)
        while batch := list(itertools.islice(items, BATCH)):
            store.publish_many(batch)
            bar.advance(task, len(batch))
    rate = count / (time.perf_counter() - start)
    engine.dispose()
    return rate


def admin(data_dir: Path, node_id: str) -> dict[str, str]:
    key = tokens.load_or_create_key(data_dir / "node_key.pem")
    token = tokens.issue(
        key,
        node_id=node_id,
        subject="bench",
        role="admin",
        scopes=[node_id],
        ttl=timedelta(hours=4),
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class SyncResult:
    capabilities: int
    items: int
    seconds: float
    publish_rate: float


PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def profiles(nodes: dict[str, YunnaoProcess], out: Path) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on each node (collapsed stacks into ``out``/<name>.txt)."""
    spies = []
    for name, node in nodes.items():
        assert node.proc is not None
        spies.append(
            subprocess.Popen(
                [str(PY_SPY), "record", "--pid", str(node.proc.pid), "--format", "raw",
                 "--rate", "200", "--nonblocking", "--threads", "--output",
                 str(out / f"{name}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    return spies


def top(path: Path, count: int = 15) -> list[str]:
    """The functions with the most samples of their own in py-spy's collapsed stacks,
    with the share of the samples taken while running (idle stacks left out)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, hits = line.rpartition(" ")
        frames = stack.split(";")
        leaf = re.sub(r":\d+\)$", ")", frames[-1])  # a function, not each of its lines
        if any(idle in leaf for idle in ("select (selectors", "_worker (concurrent", "wait (")):
            continue
        own[leaf] += int(hits)
        total += int(hits)
    return [f"{hits / total:6.1%}  {frame}" for frame, hits in own.most_common(count)]


def initial_sync(
    district: YunnaoProcess, city: YunnaoProcess, count: int, rate: float
) -> SyncResult:
    d_auth, c_auth = admin(district.cwd / "var", DISTRICT), admin(city.cwd / "var", CITY)
    link = {"id": DISTRICT, "relation": "child", "url": district.url}
    start = time.perf_counter()
    resp = httpx.post(f"{city.url}/v1/cascade/peers", json=link, headers=c_auth, timeout=30)
    resp.raise_for_status()
    parent = {"id": CITY, "relation": "parent", "url": city.url}
    httpx.post(f"{district.url}/v1/cascade/peers", json=parent, headers=d_auth).raise_for_status()
    with progress() as bar:
        task = bar.add_task("city: syncing (feed positions)", total=None)
        while True:
            peer = httpx.get(f"{city.url}/v1/cascade/peers", headers=c_auth).json()["items"][0]
            bar.update(task, completed=peer["checkpoint"], total=peer["head"] or None)
            if peer["head"] and peer["checkpoint"] >= peer["head"]:
                break
            if peer["failures"]:
                raise RuntimeError(f"sync failed: {peer['last_error']}")
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    return SyncResult(count, peer["applied"], seconds, rate)


def _head(node: YunnaoProcess, auth: dict[str, str]) -> int:
    return httpx.get(f"{node.url}/v1/cascade/changes", params={"limit": 1}, headers=auth).json()[
        "head"
    ]


def _watch(node: YunnaoProcess, auth: dict[str, str], since: int, key: str, out: dict) -> None:
    """Long-poll ``node``'s own feed until ``key`` appears; record when."""
    with httpx.Client(timeout=30) as client:
        while True:
            page = client.get(
                f"{node.url}/v1/cascade/changes",
                params={"since": since, "wait": 20, "limit": 1000},
                headers=auth,
            ).json()
            if any(i["key"] == key for i in page["items"]):
                out["at"] = time.perf_counter()
                return
            since = page["next"]


def live(
    district: YunnaoProcess, city: YunnaoProcess, count: int
) -> tuple[list[float], list[float]]:
    """Seconds from publish to the district's own feed, and to the city's feed."""
    d_auth, c_auth = admin(district.cwd / "var", DISTRICT), admin(city.cwd / "var", CITY)
    local, remote = [], []
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            ns, name = f"{DISTRICT}.live", f"live-{i:04d}"
            key = f"{ns}/{name}"
            seen_d: dict[str, float] = {}
            seen_c: dict[str, float] = {}
            watchers = [
                threading.Thread(
                    target=_watch, args=(district, d_auth, _head(district, d_auth), key, seen_d)
                ),
                threading.Thread(
                    target=_watch, args=(city, c_auth, _head(city, c_auth), key, seen_c)
                ),
            ]
            for w in watchers:
                w.start()
            time.sleep(0.05)  # both long polls are waiting
            started = time.perf_counter()
            body = {"version": "1.0.0", "title": f"实时 {i}", "classification": "public"}
            resp = client.post(
                f"{district.url}/v1/capabilities/{ns}/{name}/versions", json=body, headers=d_auth
            )
            resp.raise_for_status()
            for w in watchers:
                w.join(30)
            local.append(seen_d["at"] - started)
            remote.append(seen_c["at"] - started)
    return local, remote


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(sync: SyncResult, local: list[float], remote: list[float]) -> str:
    cap_rate = sync.capabilities / sync.seconds
    item_rate = sync.items / sync.seconds
    gap = statistics.mean(r - loc for r, loc in zip(remote, local, strict=True)) * 1000
    lines = [
        START,
        f"`bench/cascade.py` on {platform.machine()}, Python {platform.python_version()}, "
        "a district and a city as `yunnao serve` processes on SQLite, on the same machine.",
        "",
        f"### Initial sync of {sync.capabilities:,} capabilities",
        "",
        "| | figure | ratio to baseline |",
        "| --- | ---: | ---: |",
        f"| baseline: the district publishing them into its own store | "
        f"{sync.publish_rate:,.0f} capabilities/s | 1.0 |",
        f"| the city pulling them from the district (link to caught up) | "
        f"{cap_rate:,.0f} capabilities/s ({sync.seconds:.1f} s) | "
        f"{cap_rate / sync.publish_rate:.2f} |",
        f"| the same, in feed entries (namespace, capability and version entries) | "
        f"{item_rate:,.0f} entries/s ({sync.items:,} entries) | |",
        "",
        f"### Live: publish at the district → visible at the city ({len(remote)} publishes)",
        "",
        "| | p50 | p99 | ratio (p50) |",
        "| --- | ---: | ---: | ---: |",
        f"| baseline: in the district's own feed | {pct(local, 50) * 1000:.1f} ms | "
        f"{pct(local, 99) * 1000:.1f} ms | 1.0 |",
        f"| in the city's feed | {pct(remote, 50) * 1000:.1f} ms | {pct(remote, 99) * 1000:.1f} ms "
        f"| {pct(remote, 50) / pct(local, 50):.1f} |",
        f"| difference (the cascade's own share), mean | {gap:.1f} ms | | |",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="capabilities to sync")
    parser.add_argument("--live", type=int, default=200, help="publishes timed in live mode")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or - "
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample both nodes with py-spy during the sync"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yunnao-bench-cascade-") as tmp:
        root = Path(tmp)
        rate = load(root / DISTRICT / "var", args.entries)
        district = YunnaoProcess(root / DISTRICT, "--node-id", DISTRICT)
        city = YunnaoProcess(root / CITY, "--node-id", CITY)
        nodes: list[Any] = []
        try:
            for node in (district, city):
                nodes.append(node.start(timeout=120))
            spies = profiles({"district": district, "city": city}, root) if args.profile else []
            sync = initial_sync(district, city, args.entries, rate)
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                spy.wait(60)
            for name in ("district", "city") if spies else ():
                console.print(f"[bold]{name}[/]: top functions by own samples (py-spy)")
                console.print("\n".join(top(root / f"{name}.txt")), markup=False)
            console.print(f"initial sync: {sync.capabilities / sync.seconds:,.0f} capabilities/s")
            local, remote = live(district, city, args.live) if args.live else ([0.0], [0.0])
        finally:
            for node in nodes:
                node.stop()
    section = report(sync, local, remote)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END, heading="## Cascade")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
