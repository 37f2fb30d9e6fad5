"""``bench/federation.py`` works: its arguments are checked, and at a tiny size it runs
the whole federation (13 real nodes), its publishes reach the province, its narrowings
are withdrawn everywhere, and it writes its own section of a benchmarks file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "federation.py"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help_names_the_sizes() -> None:
    done = run("--help")
    assert done.returncode == 0, done.stderr
    for option in ("--per-district", "--live", "--narrow", "--calls", "--out"):
        assert option in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--per-district", "0"],
        ["--live", "0"],
        ["--calls", "0"],
        ["--live", "3", "--narrow", "4"],
        ["--narrow", "0"],
    ],
)
def test_sizes_out_of_range_are_refused_before_anything_starts(args: list[str]) -> None:
    done = run(*args, "--out", "-")
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
    assert "loading" not in done.stderr


@pytest.mark.slow
def test_a_tiny_federation_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Federation\n\n<!-- bench:federation start -->\nold\n"
                   "<!-- bench:federation end -->\n\n## After\n")  # fmt: skip
    done = run(
        "--per-district", "20", "--live", "2", "--narrow", "1", "--calls", "2",
        "--out", str(out), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "\nold\n" not in text and text.endswith("## After\n")
    section = text.split("<!-- bench:federation start -->")[1]
    assert re.search(r"the province lists all 1[89]\d \| [\d.]+ s", section)
    assert "withdrawn at the province" in section
    assert "through the province (two hops)" in section
    assert "### Per node kind" in section
