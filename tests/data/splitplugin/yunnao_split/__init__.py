"""Four versions of one capability for the traffic split tests: each answers with its
own version number, except 1.3.0, which fails (a canary gone wrong)."""

from __future__ import annotations

from yunnao.plugins import capability, hookimpl

META = {"name": "which", "title": "Which version answered", "classification": "public"}


@capability(version="1.0.0", **META)
def which_1_0(n: int = 0) -> str:
    return "1.0.0"


@capability(version="1.1.0", **META)
def which_1_1(n: int = 0) -> str:
    return "1.1.0"


@capability(version="1.2.0", **META)
def which_1_2(n: int = 0) -> str:
    return "1.2.0"


@capability(version="1.3.0", **META)
def which_1_3(n: int = 0) -> str:
    raise RuntimeError("the new model is broken")


@hookimpl
def yunnao_capabilities():
    return [which_1_0, which_1_1, which_1_2, which_1_3]
