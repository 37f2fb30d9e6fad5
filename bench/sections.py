"""Writing a benchmark's figures into its marked section of ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path


def write(section: str, out: Path, start: str, end: str, *, heading: str = "") -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``out`` with
    ``section`` (which carries both markers), or append it (under ``heading``)."""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + section + "\n"
    out.write_text(text)
