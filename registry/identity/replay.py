"""One-time assertion ids: a forwarded call's assertion is good for one request.

The ids are kept in this process until the assertion they came with expires, so an
assertion captured on the wire (or reused by a linked node) is refused the second time
within its lifetime; after it, its expiry refuses it anyway. The set is bounded: when
it is full of live ids, new assertions are refused (503) rather than old ids forgotten,
so a flood cannot make room for a replay.

Per process: several gateway processes sharing one store each keep their own, so a
replay sent to another process of the same node is not caught there. Linked nodes call
a node through one URL; where that URL balances over several processes, the window
is the assertion's lifetime (five minutes), and the route binding still holds.
"""

from __future__ import annotations

import heapq
import threading
import time

from yunnao.plugins.errors import Unauthorized, Unavailable

MAX_IDS = 200_000


class OneTimeIds:
    """The ids seen, each until its expiry (epoch seconds)."""

    def __init__(self, max_ids: int = MAX_IDS) -> None:
        self.max_ids = max_ids
        self._seen: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, jti: str, expires: float, *, peer: str, now: float | None = None) -> None:
        """Record ``jti`` as used; :class:`Unauthorized` if it was used before."""
        now = time.time() if now is None else now
        key = f"{peer}\0{jti}"
        with self._lock:
            self._forget_expired(now)
            if key in self._seen:
                raise Unauthorized(
                    f"assertion {jti} from node {peer} was used before: an assertion is "
                    "good for one request"
                )
            if len(self._seen) >= self.max_ids:
                raise Unavailable("too many forwarded calls in flight; retry shortly")
            self._seen[key] = expires
            heapq.heappush(self._expiries, (expires, key))

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, key = heapq.heappop(self._expiries)
            self._seen.pop(key, None)
