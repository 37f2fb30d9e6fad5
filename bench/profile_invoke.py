"""Where the gateway's time goes: ``py-spy record`` on a node while ``wrk`` drives
(b) of ``bench/invoke.py`` (the gateway in front of the in-process ``greet``), then the
top functions by own and total share of the samples, as a markdown table.

    python bench/profile_invoke.py                  # c=1 and c=32, 10 s each
    python bench/profile_invoke.py --conns 32 --duration 5 --top 25
    python bench/profile_invoke.py --token          # the same calls with a node token

Needs ``wrk`` and ``py-spy`` (in the virtualenv); py-spy attaches to the node's
process, so it needs ptrace rights over it (it is our own child here).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.invoke import Request, gateway_request, node, operator_token, wrk  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def _frame(name: str) -> str:
    """``handle (yunnao/runtimes/gateway/api.py:123)`` → ``handle (gateway/api.py)``."""
    func, _, where = name.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return f"{func} ({'/'.join(parts[-2:])})"


def top(raw: str, n: int) -> list[tuple[str, float, float]]:
    """From py-spy's collapsed stacks: (function, own %, total %) for the ``n`` with the
    most own time, idle (the event loop waiting) counted in the total."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:] if f]  # first: the thread
        if not frames:
            continue
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    return [(f, 100 * c / samples, 100 * total[f] / samples) for f, c in own.most_common(n)]


def profile(req: Request, pid: int, conns: int, duration: float, n: int) -> str:
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as out:
        path = out.name
    spy = subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
         "--duration", str(int(duration)), "--nonblocking", "--gil", "--output", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cell: list = []
    t = threading.Thread(target=lambda: cell.append(wrk(req, conns, duration)))
    t.start()
    t.join()
    spy.wait(timeout=duration + 60)
    raw = Path(path).read_text()
    Path(path).unlink()
    c = cell[0]
    lines = [
        f"c={conns}: {c.rps:,.0f} req/s, p50 {c.p50_ms:.2f} ms (under py-spy)",
        "",
        "| function | own | total |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| `{f}` | {o:.1f}% | {t:.1f}% |" for f, o, t in top(raw, n)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--conns", default="1,32")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--token", action="store_true", help="calls with a node token")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yunnao-profile-") as tmp, node(Path(tmp)) as gw:
        req = gateway_request(gw.url)
        if args.token:
            req.token = operator_token(gw.cwd)
        wrk(req, 4, 2)  # warm-up
        assert gw.proc is not None
        for conns in (int(c) for c in args.conns.split(",")):
            print(profile(req, gw.proc.pid, conns, args.duration, args.top))
            print()


if __name__ == "__main__":
    main()
