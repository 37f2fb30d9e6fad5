"""Invocation throughput and latency: the gateway against what it fronts.

One load generator (``wrk``, ``apt-get install wrk``) sends the same request (a greeting
for one name, the ``greet`` capability of ``tests/data/rtplugin``) to each target, for
``--duration`` seconds at concurrency 1 and 32, after a warm-up:

(a) a bare Starlette JSON endpoint (``bench/bare_app.py``, same uvicorn);
(b) the gateway → the in-process runtime (anonymous; ``b-token``: with a node token);
(c) Triton directly (V2 infer on the python-backend model) vs the gateway → Triton;
(d) BentoML directly vs the gateway → BentoML;
(e) Ray Serve's own HTTP proxy vs the gateway → a Ray deployment handle;
(f) the gateway → the ``sandbox`` runtime: the same capability rebound, on the node of
    (b), to a sandboxed worker (bubblewrap real, ``apt-get install bubblewrap``), quoted
    against (b) from the same run.

Every server is real and runs on this machine, so the load generator, the gateway
and the runtime share its cores: figures are ratios within one run, not capacities.
Results go into the marked section of ``docs/benchmarks.md``.

    python bench/invoke.py                       # all targets, 10 s per cell
    python bench/invoke.py --only a,b --duration 3 --out -
    python bench/invoke.py --only b,f --duration 3 --out -   # in-process vs sandbox
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from tests.realservers import free_port  # noqa: E402
from tests.realservers.yunnao_node import YunnaoProcess  # noqa: E402
from tests.runtime_support import RT_PLUGIN_DIR  # noqa: E402
from yunnao.runtimes.adapters.base import Target  # noqa: E402

START, END = "<!-- bench:invoke start -->", "<!-- bench:invoke end -->"
NAMESPACE = "bench.yunnao-rt"
PAYLOAD = {"input": {"name": "李雷"}}
# What the runtimes name the deployment of bench.yunnao-rt/greet@1.0.0.
SLUG = Target(NAMESPACE, "greet", "1.0.0", "any").slug
console = Console(stderr=True)


@dataclass
class Cell:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Request:
    url: str
    body: bytes
    content_type: str = "application/json"
    token: str | None = None  # sent as a bearer token


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(req: Request, connections: int, duration: float) -> Cell:
    """One wrk run; its requests/s, p50, p99 and non-2xx count."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, encoding="utf-8") as script:
        # A long-bracket string: the body's bytes as they are (Lua has no \u escapes).
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [==[{req.body.decode()}]==]\n"
            f'wrk.headers["Content-Type"] = "{req.content_type}"\n'
        )
        if req.token:
            script.write(f'wrk.headers["Authorization"] = "Bearer {req.token}"\n')
    try:
        out = subprocess.run(
            ["wrk", "-t", str(min(connections, 2)), "-c", str(connections),
             "-d", f"{max(1, round(duration))}s", "--latency", "-s", script.name, req.url],
            capture_output=True, text=True, check=True, timeout=duration + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    dist = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(dist) != 2:
        raise RuntimeError(f"unexpected wrk output for {req.url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*?(\d+) timeout", out)
    errors = (int(bad.group(1)) if bad else 0) + (int(errs.group(1)) if errs else 0)
    return Cell(rps, _ms(dist["50"]), _ms(dist["99"]), errors)


def check(req: Request) -> None:
    """The target answers this request correctly before it is measured."""
    headers = {"Content-Type": req.content_type}
    if req.token:
        headers["Authorization"] = f"Bearer {req.token}"
    resp = httpx.post(req.url, content=req.body, headers=headers, timeout=60)
    if resp.status_code != 200:
        raise RuntimeError(f"{req.url} answered {resp.status_code}: {resp.text[:300]}")


def measure(req: Request, duration: float) -> dict[int, Cell]:
    check(req)
    wrk(req, 4, min(2.0, duration))  # warm-up: connections, JIT caches, lazy loads
    return {c: wrk(req, c, duration) for c in (1, 32)}


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def bare_app() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-proxy-headers"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"{url}/greet", json=PAYLOAD, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait()


@contextlib.contextmanager
def node(workdir: Path, runtimes: dict | None = None, **extra_env: str) -> Iterator[YunnaoProcess]:
    env = {
        "YUNNAO_NODE_ID": "bench",
        "YUNNAO_PLUGINS": "false",
        "YUNNAO_RUNTIMES": json.dumps(runtimes or {}),
        **extra_env,
    }
    proc = YunnaoProcess(
        workdir, "--plugin", str(RT_PLUGIN_DIR / "yunnao_rt"), "--publish-plugins",
        "--log-level", "warning", env=env,
    )  # fmt: skip
    proc.start(timeout=180)
    try:
        yield proc
    finally:
        proc.stop()


def gateway_request(base: str, name: str = "greet") -> Request:
    return Request(f"{base}/v1/invoke/{NAMESPACE}/{name}", json.dumps(PAYLOAD).encode())


def bind(base: str, token: str, rtype: str, config: dict) -> None:
    """Rebind the bench capability to another runtime, as an operator would."""
    resp = httpx.put(
        f"{base}/v1/capabilities/{NAMESPACE}/greet/versions/1.0.0/runtime",
        json={"type": rtype, "config": config},
        headers={"Authorization": f"Bearer {token}"},
    )
    resp.raise_for_status()


def operator_token(workdir: Path) -> str:
    yunnao = str(Path(sys.executable).parent / "yunnao")
    return subprocess.run(
        # Scoped to the node itself: only its operators bind to another host's URL.
        [yunnao, "token", "create", "--role", "operator", "--namespace", "bench",
         "--node-id", "bench"],
        cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


# ---------------------------------------------------------------- report


@dataclass
class Row:
    label: str
    cells: dict[int, Cell]


def render(rows: dict[str, Row], duration: float, failures: list[str]) -> str:
    lines = [
        START,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; wrk, {duration:g} s "
        "per cell after a warm-up; payload: the `greet` capability's input (one name).",
        "",
        "| target | c=1 req/s | c=1 p50 | c=1 p99 | c=32 req/s | c=32 p50 | c=32 p99 | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows.values():
        c1, c32 = row.cells[1], row.cells[32]
        lines.append(
            f"| {row.label} | {c1.rps:,.0f} | {c1.p50_ms:.2f} ms | {c1.p99_ms:.2f} ms | "
            f"{c32.rps:,.0f} | {c32.p50_ms:.2f} ms | {c32.p99_ms:.2f} ms | "
            f"{c1.errors + c32.errors} |"
        )
    lines += ["", "Against the targets:", ""]
    for line in verdicts(rows) + failures:
        lines.append(f"- {line}")
    lines += ["", END]
    return "\n".join(lines)


def verdicts(rows: dict[str, Row]) -> list[str]:
    out = []
    if "a" in rows and "b" in rows:
        for c in (1, 32):
            ratio = rows["b"].cells[c].rps / rows["a"].cells[c].rps
            verdict = "meets" if ratio >= 0.6 else "misses"
            out.append(
                f"(b)/(a) throughput at c={c}: {ratio:.0%} ({verdict} the aim of at least 60%)"
            )
    if "a" in rows and "b-token" in rows:
        for c in (1, 32):
            ratio = rows["b-token"].cells[c].rps / rows["a"].cells[c].rps
            out.append(
                f"(b) with a node token, against (a), at c={c}: {ratio:.0%} of the throughput"
            )
    for key, name in (("c", "Triton"), ("d", "BentoML")):
        direct, via = rows.get(f"{key}-direct"), rows.get(f"{key}-gateway")
        if direct and via:
            added = via.cells[1].p50_ms - direct.cells[1].p50_ms
            verdict = "meets" if added < 1 else "misses"
            out.append(
                f"gateway → {name} adds {added:+.2f} ms p50 at c=1 over calling it "
                f"directly ({verdict} the aim of under 1 ms)"
            )
            ratio = via.cells[32].rps / direct.cells[32].rps
            line = (
                f"gateway → {name} at c=32: {ratio:.0%} of calling it directly's throughput, "
                f"{via.cells[32].p50_ms - direct.cells[32].p50_ms:+.2f} ms p50"
            )
            if key == "c":
                line += f" ({'meets' if ratio >= 0.4 else 'misses'} the aim of at least 40%)"
            out.append(line)
    if "b" in rows and "f" in rows:
        out += sandbox_verdicts(rows["b"], rows["f"])
    direct, via = rows.get("e-direct"), rows.get("e-gateway")
    if direct and via:
        for c in (1, 32):
            ratio = via.cells[c].rps / direct.cells[c].rps
            p50 = via.cells[c].p50_ms / direct.cells[c].p50_ms
            # Within 5% is noise on these machines: call that level, not a win.
            if ratio > 1.05 and p50 < 1:
                verdict = "beats it"
            elif ratio < 0.95 or p50 > 1.05:
                verdict = "does not beat it"
            else:
                verdict = "level with it, within noise"
            out.append(
                f"gateway → Ray handle at c={c}: {ratio:.2f}× the throughput and {p50:.2f}× "
                f"the p50 of Ray's own HTTP proxy ({verdict})"
            )
    return out


def sandbox_verdicts(inprocess: Row, sandboxed: Row) -> list[str]:
    """(f) against (b): the aim at c=1 is a p50 within 0.5 ms and half the throughput."""
    out = []
    for c in (1, 32):
        was, now = inprocess.cells[c], sandboxed.cells[c]
        ratio, added = now.rps / was.rps, now.p50_ms - was.p50_ms
        line = (
            f"(f)/(b), sandboxed worker against in-process, at c={c}: {ratio:.0%} of the "
            f"throughput, {now.p50_ms / was.p50_ms:.2f}× the p50 ({added:+.2f} ms), "
            f"{now.p99_ms / was.p99_ms:.2f}× the p99"
        )
        if c == 1:
            met = ratio >= 0.5 and added <= 0.5
            line += (
                f" ({'meets' if met else 'misses'} the aim of a p50 within 0.5 ms and at "
                "least 50% of the throughput)"
            )
        out.append(line)
    return out


# ---------------------------------------------------------------- scenarios


Scenario = Callable[[Path, float, dict[str, Row]], None]


def run_local(workdir: Path, duration: float, rows: dict[str, Row], only: set[str]) -> None:
    if "a" in only:
        with bare_app() as url:
            console.print("(a) bare Starlette")
            rows["a"] = Row("(a) bare Starlette JSON endpoint", measure(
                Request(f"{url}/greet", json.dumps(PAYLOAD).encode()), duration))  # fmt: skip
    if "b" in only or "f" in only:  # (f) is quoted against (b) from the same node
        with node(workdir / "b") as gw:
            console.print("(b) gateway → in-process")
            rows["b"] = Row("(b) gateway → in-process", measure(gateway_request(gw.url), duration))
            if "b-token" in only:  # the same calls, each with a node token
                console.print("(b) with a bearer token")
                req = gateway_request(gw.url)
                req.token = operator_token(gw.cwd)
                rows["b-token"] = Row("(b) gateway → in-process, with a node token",
                                      measure(req, duration))  # fmt: skip
            if "f" in only:
                console.print("(f) gateway → sandboxed worker")
                rows["f"] = Row(
                    "(f) gateway → sandboxed worker (bwrap)",
                    via_gateway(gw, "sandbox", {}, duration),
                )


def via_gateway(gw: YunnaoProcess, rtype: str, config: dict, duration: float) -> dict[int, Cell]:
    bind(gw.url, operator_token(gw.cwd), rtype, config)
    return measure(gateway_request(gw.url), duration)


def scenario_triton(workdir: Path, duration: float, rows: dict[str, Row]) -> None:
    from tests.realservers.triton import TritonProcess

    server = TritonProcess(workdir / "triton").start()
    runtimes = {"triton": {"url": server.url, "repository": str(server.repository)}}
    try:
        with node(workdir / "node", runtimes) as gw:
            console.print("(c) gateway → Triton")
            rows["c-gateway"] = Row("(c) gateway → Triton", via_gateway(gw, "triton", {}, duration))
            # The same call straight to Triton's V2 endpoint: the wrapper model the node
            # wrote takes the JSON input as the bytes of one UINT8 tensor.
            data = list(json.dumps(PAYLOAD["input"]).encode())
            infer = {
                "inputs": [
                    {"name": "INPUT_JSON", "shape": [len(data)], "datatype": "UINT8", "data": data}
                ],
                "outputs": [{"name": "OUTPUT_JSON"}],
            }
            url = f"http://{server.url}/v2/models/{SLUG}/infer"
            console.print("(c) Triton directly")
            rows["c-direct"] = Row("(c) Triton directly (V2 infer)", measure(
                Request(url, json.dumps(infer).encode()), duration))  # fmt: skip
    finally:
        server.stop()


def scenario_bentoml(workdir: Path, duration: float, rows: dict[str, Row]) -> None:
    from tests.realservers.bentoml import BentoMLServer

    server = BentoMLServer("service:Greeter", ROOT / "tests" / "data" / "bento_svc", workdir)
    server.start()
    try:
        console.print("(d) BentoML directly")
        direct = Request(f"{server.url}/greet", json.dumps(PAYLOAD["input"]).encode())
        rows["d-direct"] = Row("(d) BentoML directly", measure(direct, duration))
        with node(workdir / "node") as gw:
            console.print("(d) gateway → BentoML")
            config = {"url": server.url, "api": "greet"}
            rows["d-gateway"] = Row(
                "(d) gateway → BentoML", via_gateway(gw, "bentoml", config, duration)
            )
    finally:
        server.stop()


def scenario_ray(workdir: Path, duration: float, rows: dict[str, Row]) -> None:
    from tests.realservers.ray import RayHead

    head = RayHead(workdir / "ray").start()
    proxy = free_port()
    runtimes = {"rayserve": {"address": head.address, "http_port": proxy}}
    try:
        with node(workdir / "node", runtimes, RAY_AUTH_MODE="disabled") as gw:
            console.print("(e) gateway → Ray handle")
            rows["e-gateway"] = Row(
                "(e) gateway → Ray deployment handle",
                via_gateway(gw, "rayserve", {"num_cpus": 0.5}, duration),
            )
            console.print("(e) Ray's own HTTP proxy")
            direct = Request(
                f"http://127.0.0.1:{proxy}/{SLUG}", json.dumps(PAYLOAD["input"]).encode()
            )
            rows["e-direct"] = Row("(e) Ray Serve's own HTTP proxy", measure(direct, duration))
    finally:
        head.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per cell")
    parser.add_argument("--only", default="a,b,b-token,c,d,e,f", help="comma-separated targets")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or -"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/invoke.py needs wrk: apt-get install -y wrk")
    only = set(args.only.split(","))
    rows: dict[str, Row] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="yunnao-bench-invoke-") as tmp:
        workdir = Path(tmp)
        run_local(workdir, args.duration, rows, only)
        for key, scenario in SCENARIOS.items():
            if key in only:
                try:
                    scenario(workdir / key, args.duration, rows)
                except Exception as exc:  # report what was measured; say what failed
                    console.print_exception()
                    failures.append(f"({key}) failed: {type(exc).__name__}: {exc}".splitlines()[0])
    section = render(rows, args.duration, failures)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END, heading="## Invocation")
        console.print(f"wrote {args.out}")


SCENARIOS: dict[str, Scenario] = {"c": scenario_triton, "d": scenario_bentoml, "e": scenario_ray}

if __name__ == "__main__":
    main()
