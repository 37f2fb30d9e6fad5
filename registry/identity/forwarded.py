"""A caller vouched for by a linked node, and what the node's assertion binds it to.

A linked node's assertion (see ``yunnao.registry.identity.assertions``) is verified
once, by the authentication middleware; the identity it yields is a :class:`Forwarded`,
which keeps the claims that limit the assertion's use: its purpose and the route it was
made for (checked against the request, once per ``jti``), and for a forwarded call the
nodes the call has visited and the caller's deadline (the invocation route refuses a
loop and never works past the deadline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..access import Identity


@dataclass(frozen=True)
class Forwarded(Identity):
    """An identity from a linked node's assertion (``peer`` is that node)."""

    purpose: str = "invoke"  # "invoke" (a forwarded call) or "cascade" (the feed)
    route: str | None = None  # the request path an invoke assertion was made for
    jti: str | None = None
    expires: float = 0.0  # epoch seconds: the assertion's own expiry
    visited: tuple[str, ...] = field(default_factory=tuple)  # nodes the call went through
    deadline: float | None = None  # epoch seconds: when the original caller stops waiting

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left until the caller's deadline (None: no deadline given)."""
        if self.deadline is None:
            return None
        return self.deadline - (time.time() if now is None else now)


def forwarded(identity: Identity) -> Forwarded | None:
    """``identity`` as a forwarded call's caller, or None for a caller of this node."""
    return identity if isinstance(identity, Forwarded) and identity.purpose == "invoke" else None
