"""Vision frames per second: the example's detectors through the gateway, on each runtime.

One real node (``yunnao serve --publish-plugins``, the example plugins, a real Ray head
and a real ``tritonserver`` in its ``YUNNAO_RUNTIMES``) serves ``people-detect`` (OpenCV's
HOG people detector) and ``crowd-level`` (the ONNX model) of ``examples/vision``. Each is
bound in turn, as an operator does, to ``inprocess``, ``rayserve`` and ``triton``, and
sent JPEG frames as raw ``image/jpeg`` bodies on ``/v1/invoke`` by a pool of client
threads (one keep-alive connection each) at concurrency 1 and 4:

- ``people-detect``: ``synthetic.street(3)``, 640 × 360;
- ``crowd-level``: ``synthetic.crowd(...)``, 320 × 180, four frames (0, 2, 6 and 12
  people) in turn.

The baseline is the capability called in this process on the same JPEG bytes, base64
as the gateway hands them to a runtime (``people_detect.run``, a ``CrowdLevel``
instance), by as many threads. Each runtime's cell alternates with a baseline cell of
its own in rounds (4 rounds of a quarter of the frames each), and its frames per second
are quoted against that baseline's, so a neighbour's load falls on both sides of a ratio
alike. Every answer is checked against the baseline's
(same count of people, same crowd level) before a cell is timed. BentoML is not
measured: its runtime calls a BentoML service (``url``, ``service`` or an uploaded
Bento), and these plugin capabilities have none without writing one.

Results go into the marked section of ``docs/benchmarks.md``.

    python bench/vision.py              # about 4 minutes
    python bench/vision.py --quick --out -
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from yunnao_example_vision.crowd import CrowdLevel  # noqa: E402
from yunnao_example_vision.detect import people_detect  # noqa: E402
from yunnao_example_vision.synthetic import crowd, street  # noqa: E402

from bench import sections  # noqa: E402
from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess  # noqa: E402
from yunnao.plugins.capability import Capability  # noqa: E402

START, END = "<!-- bench:vision start -->", "<!-- bench:vision end -->"
NODE = "bench"
NAMESPACE = f"{NODE}.urban"  # the example's plugin namespace on this node
CONCURRENCY = (1, 4)
ROUNDS = 4  # each cell alternates with its baseline in this many rounds
# Bindings, as an operator would set them: two replicas (Ray) and two model instances
# (Triton), one per core of these machines, as the in-process runtime's threads run two
# frames at once on them.
BINDINGS: dict[str, dict[str, Any]] = {
    "inprocess": {},
    "rayserve": {"num_cpus": 0.5, "num_replicas": 2},
    "triton": {"instances": 2},
}
console = Console(stderr=True)


@dataclass
class Cell:
    frames: int
    seconds: float
    latencies_ms: list[float]
    errors: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


@dataclass
class Workload:
    """One capability's frames, and how to call it in this process."""

    name: str
    capability: Capability
    jpegs: list[bytes]
    frames: int  # frames per cell
    summary: Callable[[dict[str, Any]], Any]  # what an answer must agree on
    call: Callable[[dict[str, Any]], dict[str, Any]] = field(init=False)
    phases: dict[str, list[float]] = field(default_factory=dict)
    recording: bool = False  # phases are kept from the baseline's c=1 cells only

    def __post_init__(self) -> None:
        cap = self.capability
        instance = cap.instantiate()  # once, as a runtime does (an ONNX session)
        lock = threading.Lock()

        def call(data: dict[str, Any]) -> dict[str, Any]:
            # Timed in phases: base64 + JPEG decode (input validation), the model, and
            # the output's validation and encoding (people-detect's annotated JPEG).
            t0 = time.perf_counter()
            kwargs = cap.validate_input(data)
            t1 = time.perf_counter()
            value = instance(**kwargs)
            t2 = time.perf_counter()
            out = cap.dump_output(value)
            t3 = time.perf_counter()
            if self.recording:
                with lock:
                    for phase, ms in (("decode", t1 - t0), ("model", t2 - t1), ("encode", t3 - t2)):
                        self.phases.setdefault(phase, []).append(ms * 1000)
            return out

        self.call = call


def jpeg(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


def workloads(quick: bool) -> list[Workload]:
    rng = np.random.default_rng(21)
    return [
        Workload(
            "people-detect",
            people_detect,
            [jpeg(street(3)[0])],
            8 if quick else 32,
            lambda out: out["count"],
        ),
        Workload(
            "crowd-level",
            CrowdLevel,
            [jpeg(crowd(rng, n)) for n in (0, 2, 6, 12)],
            40 if quick else 400,
            lambda out: out["level"],
        ),
    ]


def timed(
    pool: ThreadPoolExecutor, send: Callable[[bytes], bool], jpegs: list[bytes], frames: int
) -> Cell:
    """``frames`` calls of ``send`` (the JPEGs in turn) by the threads of ``pool`` at once."""
    latencies: list[float] = []
    failed: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        t0 = time.perf_counter()
        ok = send(jpegs[i % len(jpegs)])
        with lock:
            latencies.append((time.perf_counter() - t0) * 1000)
            if not ok:
                failed.append(i)

    start = time.perf_counter()
    list(pool.map(one, range(frames)))
    return Cell(frames, time.perf_counter() - start, latencies, len(failed))


def alternating(work: Workload, gateway: Gateway, workers: int, rounds: int) -> tuple[Cell, Cell]:
    """The gateway's cell and the baseline's, in ``rounds`` alternating rounds of
    ``work.frames / rounds`` frames each (so a neighbour's load falls on both), each
    side's pool warmed first (its connections, caches)."""
    per_round = max(1, work.frames // rounds)
    mine, theirs = [], []
    with ThreadPoolExecutor(workers) as base_pool, ThreadPoolExecutor(workers) as gw_pool:
        timed(base_pool, baseline_sender(work), work.jpegs, workers)
        timed(gw_pool, gateway.send, work.jpegs, workers)
        for _ in range(rounds):
            work.recording = workers == 1
            theirs.append(timed(base_pool, baseline_sender(work), work.jpegs, per_round))
            work.recording = False
            mine.append(timed(gw_pool, gateway.send, work.jpegs, per_round))
    return pooled(mine), pooled(theirs)


# ---------------------------------------------------------------- the two sides


def baseline_sender(work: Workload) -> Callable[[bytes], bool]:
    def send(data: bytes) -> bool:
        work.call({"frame": base64.b64encode(data).decode("ascii")})
        return True

    return send


class Gateway:
    """Raw ``image/jpeg`` calls to one capability, one connection per thread."""

    def __init__(self, base: str, name: str) -> None:
        self.url = f"{base}/v1/invoke/{NAMESPACE}/{name}"
        self.local = threading.local()
        self.clients: list[httpx.Client] = []

    def post(self, data: bytes) -> httpx.Response:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=120)
            self.clients.append(client)
        return client.post(self.url, content=data, headers={"Content-Type": "image/jpeg"})

    def send(self, data: bytes) -> bool:
        return self.post(data).status_code == 200

    def close(self) -> None:
        for client in self.clients:
            client.close()


def operator_token(cwd: Path) -> str:
    return subprocess.run(
        [YUNNAO, "token", "create", "--role", "operator", "--namespace", NODE,
         "--node-id", NODE],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip


def bind(node: YunnaoProcess, token: str, name: str, rtype: str) -> None:
    resp = httpx.put(
        f"{node.url}/v1/capabilities/{NAMESPACE}/{name}/versions/1.0.0/runtime",
        json={"type": rtype, "config": BINDINGS[rtype]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
    )
    if resp.status_code != 200:
        raise RuntimeError(f"binding {name} to {rtype}: {resp.status_code} {resp.text[:300]}")


def agrees(work: Workload, gateway: Gateway) -> None:
    """Every frame's answer through the gateway is the baseline's (the first call also
    deploys the version on its runtime)."""
    for data in work.jpegs:
        resp = gateway.post(data)
        if resp.status_code != 200:
            raise RuntimeError(f"{work.name} answered {resp.status_code}: {resp.text[:300]}")
        want = work.summary(work.call({"frame": base64.b64encode(data).decode("ascii")}))
        got = work.summary(resp.json()["output"])
        if got != want:
            raise RuntimeError(f"{work.name}: {got!r} through the gateway, {want!r} in process")


# ---------------------------------------------------------------- servers


@contextmanager
def servers(workdir: Path, runtimes: set[str]) -> Iterator[YunnaoProcess]:
    """A Ray head, a tritonserver and a node that knows them; all stopped after."""
    from tests.realservers.ray import RayHead
    from tests.realservers.triton import TritonProcess

    head = RayHead(workdir / "ray") if "rayserve" in runtimes else None
    triton = TritonProcess(workdir / "triton") if "triton" in runtimes else None
    node: YunnaoProcess | None = None
    config: dict[str, Any] = {}
    try:
        if head is not None:
            console.print("starting a Ray head")
            head.start()
            config["rayserve"] = {"address": head.address}
        if triton is not None:
            console.print("starting tritonserver")
            triton.start()
            config["triton"] = {"url": triton.url, "repository": str(triton.repository)}
        env = {"YUNNAO_RUNTIMES": json.dumps(config), "RAY_AUTH_MODE": "disabled"}
        node = YunnaoProcess(workdir / "node", "--node-id", NODE, "--publish-plugins",
                             "--log-level", "warning", env=env)  # fmt: skip
        console.print("starting the node (publishing the example plugins)")
        node.start(timeout=240)
        yield node
    finally:
        if node is not None:
            node.stop()
        if triton is not None:
            triton.stop()
        if head is not None:
            head.stop()


# ---------------------------------------------------------------- report


@dataclass
class Result:
    runtime: str
    work: str
    cells: dict[int, Cell]
    baselines: dict[int, Cell]  # measured right before each cell


def pooled(cells: list[Cell]) -> Cell:
    return Cell(
        sum(c.frames for c in cells),
        sum(c.seconds for c in cells),
        [ms for c in cells for ms in c.latencies_ms],
        sum(c.errors for c in cells),
    )


def render(results: list[Result], works: list[Workload], failures: list[str], cmd: str) -> str:
    lines = [
        START,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `{cmd}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, no GPU, Python {platform.python_version()}. Frames per "
        "second (fps) over each cell's frames, sent in alternating rounds with its "
        "baseline's after a warm-up call per client thread; latency per frame as the "
        "client saw it. *× base* is the cell's fps over its own baseline's (the same "
        "capability called in this process, in the rounds between); the baseline row "
        "pools all of them.",
    ]
    for work in works:
        size = "640 × 360" if work.name == "people-detect" else "320 × 180"
        kib = statistics.mean(len(j) for j in work.jpegs) / 1024
        lines += [
            "",
            f"### {work.name} ({size} JPEG, {kib:.0f} KiB; {work.frames} frames per cell)",
            "",
            "| runtime | c=1 fps | c=1 p50 | c=1 p99 | c=1 × base | c=4 fps | c=4 p50 | "
            "c=4 p99 | c=4 × base | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        mine = [r for r in results if r.work == work.name]
        if not mine:
            continue
        base = {c: pooled([r.baselines[c] for r in mine]) for c in CONCURRENCY}
        rows = [("baseline: called in this process", base, None)]
        rows += [(f"gateway → {r.runtime}", r.cells, r.baselines) for r in mine]
        for label, cells, baselines in rows:
            out = [label]
            for c in CONCURRENCY:
                cell = cells[c]
                ratio = cell.fps / baselines[c].fps if baselines else 1.0
                out += [
                    f"{cell.fps:.1f}",
                    f"{cell.percentile(50):.1f} ms",
                    f"{cell.percentile(99):.1f} ms",
                    f"{ratio:.2f}",
                ]
            out.append(str(sum(cells[c].errors for c in CONCURRENCY)))
            lines.append("| " + " | ".join(out) + " |")
        phases = ", ".join(
            f"{phase} {statistics.median(ms):.1f} ms" for phase, ms in work.phases.items()
        )
        lines += [
            "",
            f"Where the baseline's time goes (median per frame, its c=1 cells): {phases} "
            "(decode: base64 and JPEG into the BGR array; model: the capability's own "
            "code; encode: validating and serialising the output).",
        ]
    if failures:
        lines += ["", "Not measured:", ""] + [f"- {line}" for line in failures]
    lines += ["", END]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def measure(
    node: YunnaoProcess, works: list[Workload], runtimes: list[str], rounds: int
) -> tuple[list[Result], list[str]]:
    token = operator_token(node.cwd)
    results: list[Result] = []
    failures: list[str] = []
    for rtype in runtimes:
        for work in works:
            gateway = Gateway(node.url, work.name)
            try:
                console.print(f"{work.name} → {rtype}: binding, checking the answers")
                bind(node, token, work.name, rtype)
                agrees(work, gateway)
                cells, baselines = {}, {}
                for c in CONCURRENCY:
                    cells[c], baselines[c] = alternating(work, gateway, c, rounds)
                    console.print(
                        f"  c={c}: {cells[c].fps:.1f} fps against {baselines[c].fps:.1f} "
                        f"in process ({cells[c].errors} errors)"
                    )
                results.append(Result(rtype, work.name, cells, baselines))
            except Exception as exc:  # report what was measured; say what failed
                console.print_exception()
                failures.append(
                    f"{work.name} on {rtype}: {type(exc).__name__}: {exc}".splitlines()[0]
                )
            finally:
                gateway.close()
    return results, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few frames, for development")
    parser.add_argument(
        "--runtimes", default="inprocess,rayserve,triton", help="comma-separated runtimes"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or -"
    )
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    unknown = set(runtimes) - set(BINDINGS)
    if unknown:
        sys.exit(f"unknown runtimes: {', '.join(sorted(unknown))} (known: {', '.join(BINDINGS)})")
    works = workloads(args.quick)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="yunnao-bench-vision-") as tmp,
        servers(Path(tmp), set(runtimes)) as node,
    ):
        results, failures = measure(node, works, runtimes, 2 if args.quick else ROUNDS)
    console.print(f"measured in {time.monotonic() - started:.0f} s")
    cmd = "python bench/vision.py" + (" --quick" if args.quick else "")
    if args.runtimes != parser.get_default("runtimes"):
        cmd += f" --runtimes {args.runtimes}"
    failures.append("bentoml: not bound (its runtime needs a BentoML service for these)")
    section = render(results, works, failures, cmd)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END, heading="## Vision")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
