"""The Bento inspector: reads an uploaded Bento's APIs as capability specs, in the
sandbox.

Run as ``python -I -m yunnao.runtimes.adapters.bentoml.inspector <bento dir>`` inside
the sandbox (:func:`yunnao.registry.packages.bento.inspect_bento` starts it), with the
unpacked Bento and its environment read-only and no network. It imports the service
the way ``bentoml serve <bento dir>`` does (the department's code runs here, and only
here) through :func:`~.services.service_capabilities`, and writes one JSON document to
its standard output: ``{"capabilities": [...]}`` (each API's name, API, title, summary,
description and schemas), or ``{"error": "..."}`` with the traceback when the service
does not load. Whatever the service prints goes to standard error. The node reads the
document strictly and trusts nothing in it but its shape.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from yunnao.registry.packages.inspector import clipped, write_document


def describe(bento_dir: Path) -> dict[str, Any]:
    from .services import service_capabilities

    try:
        specs = service_capabilities(str(bento_dir), bento_dir)
    except Exception:  # the department's import error, for its author
        return {"error": clipped(traceback.format_exc())}
    return {
        "capabilities": [
            {
                "name": spec["name"],
                "api": spec["runtime"]["config"]["api"],
                "title": spec["title"],
                "summary": spec["summary"],
                "description": spec["description"],
                "input_schema": spec["input_schema"],
                "output_schema": spec["output_schema"],
            }
            for spec in specs
        ]
    }


def main(argv: list[str] | None = None) -> int:
    usage = "python -m yunnao.runtimes.adapters.bentoml.inspector <bento dir>"
    return write_document(argv, usage, lambda bento_dir: describe(Path(bento_dir)))


if __name__ == "__main__":
    sys.exit(main())
