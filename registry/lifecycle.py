"""The lifecycle of a version: draft → published → deprecated → retired.

A deprecated version may be reinstated (deprecated → published); nothing leaves
``retired``. Any other move is refused with :class:`IllegalTransition`.
"""

from __future__ import annotations

from yunnao.plugins.errors import FieldError, IllegalTransition

ALLOWED: dict[str, frozenset[str]] = {
    "draft": frozenset({"published"}),
    "published": frozenset({"deprecated"}),
    "deprecated": frozenset({"published", "retired"}),
    "retired": frozenset(),
}

# Which version represents a capability in the catalog: the newest version of the first
# status in this order that has any.
CURRENT_PREFERENCE = ("published", "deprecated", "draft", "retired")


def check(current: str, target: str) -> None:
    """Raise unless ``current`` → ``target`` is a legal move."""
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (retired is final)"
        raise IllegalTransition(
            f"cannot move a {current} version to {target}; allowed from {current}: {allowed}",
            errors=[FieldError("status", f"{current} → {target} is not allowed")],
        )
