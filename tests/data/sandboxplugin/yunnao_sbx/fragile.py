"""A capability whose module imports on the node but not in a sandbox (as code that
needs a file or a privilege the sandbox does not give): its worker fails to load."""

from __future__ import annotations

import os

from yunnao.plugins import capability

if os.getuid() != 0:
    raise ImportError("this module only imports as root")


@capability(name="fragile", title="Loads only as root", version="1.0.0", classification="public")
def fragile(text: str) -> str:
    return text
