"""What a node keeps and logs of the items a linked node sent that it rejected.

What a rejection keeps is bounded, since the peer chooses what it sends: the first
:data:`KEPT_PER_BATCH` of a batch are kept (each item cut to :data:`KEPT_ITEM_CHARS`),
the rest only counted; peer-supplied text is logged escaped, one line per rejection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlmodel import Session

from yunnao.registry.tables import Rejection

log = logging.getLogger("yunnao.cascade")

KEPT_PER_BATCH = 100  # rejections of one batch kept in cascade_rejection; the rest counted
KEPT_ITEM_CHARS = 4096  # of a rejected item's JSON kept with it
LOGGED_PER_BATCH = 20  # rejections of one batch logged one by one; the rest summed up
_REASON_CHARS = 500  # the column's size


def keep_rejections(s: Session, peer: str, rejected: list[tuple[str, dict[str, Any]]]) -> None:
    """Record ``peer``'s rejected items of one batch in transaction ``s`` (bounded)."""
    for reason, raw in rejected[:KEPT_PER_BATCH]:
        s.add(
            Rejection(
                peer=peer,
                origin=_text(raw, "origin", 330),
                entity=_text(raw, "entity", 16),
                key=_text(raw, "key", 600),
                reason=_clip(reason, _REASON_CHARS),
                item=_kept(raw),
            )
        )
    left = len(rejected) - KEPT_PER_BATCH
    if left > 0:
        s.add(
            Rejection(
                peer=peer,
                reason=f"{left} more rejected items of this batch were not kept "
                f"(only the first {KEPT_PER_BATCH} of a batch are)",
                item={"not_kept": left},
            )
        )


def log_rejections(peer: str, rejected: list[tuple[str, dict[str, Any]]]) -> None:
    # Every value a peer chose is logged as a quoted literal: no newline or control
    # character of its own ever reaches the log, so it cannot forge a log line.
    for reason, raw in rejected[:LOGGED_PER_BATCH]:
        log.warning(
            "rejected %s %s from %s (origin %s): %s",
            _quoted(_text(raw, "entity", 16)),
            _quoted(_text(raw, "key", 200)),
            peer,
            _quoted(_text(raw, "origin", 200)),
            _quoted(_clip(reason, _REASON_CHARS)),
        )
    if len(rejected) > LOGGED_PER_BATCH:
        log.warning(
            "rejected %d more items from %s (see the peer's rejections)",
            len(rejected) - LOGGED_PER_BATCH,
            peer,
        )


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 12] + " [truncated]"


def _quoted(text: str | None) -> str:
    """``text`` as one JSON string literal, every character that is not printable (line
    and paragraph separators included) escaped."""
    literal = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in literal)


def _kept(raw: Any) -> Any:
    """What a rejection keeps of the item: itself when small, else the start of its JSON
    marked as cut (a peer must not fill this node's store with its rejections)."""
    text = json.dumps(raw, default=repr)  # ASCII: what is kept is as long as it looks
    if len(text) <= KEPT_ITEM_CHARS:
        return raw
    return {"truncated": True, "chars": len(text), "start": text[:KEPT_ITEM_CHARS]}


def _text(raw: Any, name: str, size: int = 600) -> str | None:
    """A member of a (maybe malformed) item as text that fits its column."""
    value = raw.get(name) if isinstance(raw, dict) else None
    return str(value)[:size] if value is not None else None
