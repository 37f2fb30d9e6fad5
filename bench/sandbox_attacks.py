"""The sandbox under attack: how another department's capability answers while one
department's capability attacks the node from inside its sandboxed worker.

The scenario is the attack test's (``tests/sandbox_support.py``, the capabilities of
``tests/data/sandboxplugin``): a node data directory with a real embedded MLflow, real
bubblewrap workers (``apt-get install bubblewrap``) on the ``sandbox`` runtime, a
capability ``sd.qd.evil/attack`` that reads the node key, the store, MLflow's database,
another namespace's model and the node's source; opens a socket to a listener of the
node's; allocates 8 GiB; forks a thousand processes; loops forever. Meanwhile
``sd.qd.good/echo`` is called over and over (5 ms apart), each call timed at the
runtime (no HTTP): ``--before`` calls before the attacks, then every call while they
run. Each round starts a fresh runtime; the figures pool the rounds. Results go into
the marked section of ``docs/benchmarks.md``.

    python bench/sandbox_attacks.py                       # 3 rounds, 1000 calls before each
    python bench/sandbox_attacks.py --rounds 1 --before 200 --out -
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from tests.sandbox_support import (  # noqa: E402
    EVIL,
    GOOD,
    SPIN_TIMEOUT,
    Node,
    Outcome,
    Watch,
    percentile,
    run_attacks,
)
from yunnao.plugins.errors import CapabilityError, InvocationTimeout  # noqa: E402
from yunnao.registry.packages import sandbox  # noqa: E402

START, END = "<!-- bench:sandbox-attacks start -->", "<!-- bench:sandbox-attacks end -->"
HEADING = "## Sandbox under attack"
console = Console(stderr=True)


async def one_round(node: Node, before: int) -> tuple[Watch, dict[str, Outcome], bool]:
    """One fresh runtime: the watch, each attack's outcome, and whether the runtime
    was still healthy after them."""
    rt = node.runtime()
    attack, victim = node.target(EVIL, "attack"), node.target(GOOD, "echo")
    try:
        await asyncio.gather(rt.deploy(attack), rt.deploy(victim))
        with socket.create_server(("127.0.0.1", 0)) as listener:
            watch = Watch(rt, victim)
            watch.start()
            try:
                await watch.calls("before", before)
                watch.phase = "during"
                outcomes = await run_attacks(rt, node, attack, victim, listener.getsockname()[1])
            finally:
                await watch.stop()
        healthy = (await rt.health()).ok
    finally:
        await rt.close()
    return watch, outcomes, healthy


def judge(name: str, outcome: Outcome) -> tuple[bool, str]:
    """Whether the sandbox held against one attack, and what happened, in words."""
    answer, error = outcome.answer, outcome.error
    if name.startswith("read "):
        held = isinstance(answer, dict) and "read" not in answer
        return held, str(answer.get("error") if isinstance(answer, dict) else outcome)
    if name == "open a network socket":
        held = isinstance(answer, dict) and "connected" not in answer
        return held, str(answer.get("error") if isinstance(answer, dict) else outcome)
    if name == "allocate 8 GiB":
        held = isinstance(error, CapabilityError) and "MemoryError" in error.detail
        return held, "MemoryError at the worker's address-space limit (500 to the caller)"
    if name == "still alive":
        return isinstance(answer, dict) and "uid" in answer, "the worker answers on"
    if name == "fork 1000 processes":
        if not isinstance(answer, dict):
            return False, str(outcome)
        forked = answer.get("forked", 1000)
        return forked < 1000, f"stopped after {forked} processes: {answer.get('error', '')}"
    if name == "the node still forks":
        return answer is True, "yes" if answer is True else "no"
    if name == "loop forever":
        held = isinstance(error, InvocationTimeout)
        return held, f"504 after its {SPIN_TIMEOUT:g} s timeout; its worker killed"
    if name == "replaced":
        held = isinstance(answer, dict) and "uid" in answer
        return held, "a new worker answers"
    return False, str(outcome)


def render(rounds: list[tuple[Watch, dict[str, Outcome], bool]], before: int, took: float) -> str:
    latencies: dict[str, list[float]] = {"before": [], "during": []}
    failures: list[str] = []
    for watch, _, _ in rounds:
        for phase in latencies:
            latencies[phase] += watch.latencies.get(phase, [])
        failures += watch.failures
    lines = [
        START,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, {sandbox.bwrap() or 'no bwrap'}; "
        f"{len(rounds)} round(s) of {before} calls before the attacks, then the attacks "
        f"({took:.0f} s in all). `{GOOD}/echo` called every 5 ms, timed at the runtime.",
        "",
        f"| calls of `{GOOD}/echo` | calls | failed | p50 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, label in (("before", "before the attacks"), ("during", "during the attacks")):
        values = latencies[phase]
        failed = sum(1 for f in failures if f.startswith(f"{phase}:"))
        if not values:
            lines.append(f"| {label} | 0 | {failed} | | | |")
            continue
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        lines.append(
            f"| {label} | {len(values):,} | {failed} | {p50:.2f} ms | {p99:.2f} ms | "
            f"{max(values) * 1000:.2f} ms |"
        )
    lines += ["", "| attack (last round) | held | what happened | took |"]
    lines += ["| --- | --- | --- | ---: |"]
    _, outcomes, _ = rounds[-1]
    held_all = True
    for watch_round in rounds:
        held_all &= all(judge(n, o)[0] for n, o in watch_round[1].items()) and watch_round[2]
    for name, outcome in outcomes.items():
        held, text = judge(name, outcome)
        took = f"{outcome.seconds * 1000:,.1f} ms" if outcome.seconds else ""
        lines.append(f"| {name} | {'yes' if held else '**NO**'} | {text} | {took} |")
    lines += ["", "Against the acceptance:", ""]
    lines.append(
        f"- every attack failed or had its worker killed, in every round, and the runtime "
        f"stayed healthy: {'yes' if held_all else '**no**'}"
    )
    total = sum(len(v) for v in latencies.values())
    lines.append(
        f"- the other namespace answered every call throughout: "
        f"{'yes' if not failures else f'**no**, {len(failures)} of {total} failed'}"
        + (f" (first: {failures[0][:200]})" if failures else "")
    )
    if latencies["before"] and latencies["during"]:
        ratio = percentile(latencies["during"], 99) / percentile(latencies["before"], 99)
        lines.append(f"- its p99 during the attacks: {ratio:.1f}× its p99 before them")
    lines += ["", END]
    return "\n".join(lines)


async def bench(rounds: int, before: int) -> str:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="yunnao-bench-sandbox-") as tmp:
        console.print("publishing the test capabilities to an embedded MLflow")
        node = Node(Path(tmp) / "data")
        done: list[Any] = []
        for i in range(rounds):
            console.print(f"round {i + 1} of {rounds}")
            done.append(await one_round(node, before))
    return render(done, before, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh runtimes, one after another")
    parser.add_argument("--before", type=int, default=1000, help="calls timed before the attacks")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or -"
    )
    args = parser.parse_args()
    if sandbox.bwrap() is None:
        sys.exit("bench/sandbox_attacks.py needs bubblewrap: apt-get install -y bubblewrap")
    section = asyncio.run(bench(args.rounds, args.before))
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END, heading=HEADING)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
