"""Which capabilities a caller may see in statistics and logs: usage reports, the
audit listing, ``/metrics`` and the catalog pages' charts ask here, one policy decision
per capability, so these views cannot drift apart from search and the catalog.

Each capability is decided by :func:`~yunnao.registry.access.decide` (``discover``) on
the entry this node holds for it: a live entry as the catalog shows it; a deleted one
(a tombstone) as it last was, with its figures seen only by those who may write its
namespace, as for retired entries. A name this node never held hides nothing and is
decided as a public entry (the audit log records requests for names that do not exist).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from .access import Action, Entry, Identity, access_rules, decide
from .tables import CapabilityRow

_cap = CapabilityRow.__table__  # type: ignore[attr-defined]

Key = tuple[str, str]  # (namespace, name)


def entries(engine: sa.Engine, keys: Iterable[Key]) -> dict[Key, Entry]:
    """The policy's :class:`Entry` for each of ``keys`` this node holds (a live row
    over a tombstone of the same name)."""
    wanted = set(keys)
    if not wanted:
        return {}
    namespaces = sorted({ns for ns, _ in wanted})
    found: dict[Key, tuple[bool, Entry]] = {}
    stmt = sa.select(
        _cap.c.namespace, _cap.c.name, _cap.c.classification, _cap.c.status, _cap.c.access,
        _cap.c.via_node, _cap.c.deleted_at,
    )  # fmt: skip
    with engine.connect() as conn:
        for start in range(0, len(namespaces), 500):
            chunk = namespaces[start : start + 500]
            for ns, name, classification, status, access, via, deleted in conn.execute(
                stmt.where(_cap.c.namespace.in_(chunk))
            ):
                key = (ns, name)
                if key not in wanted:
                    continue
                live = deleted is None
                if key in found and found[key][0] and not live:
                    continue
                entry = Entry(
                    ns,
                    classification,
                    # A deleted entry's figures are history: its writers' only.
                    status if live else "retired",
                    access_rules(access),
                    local=via is None,
                )
                found[key] = (live, entry)
    return {k: e for k, (_, e) in found.items()}


def visible(identity: Identity, engine: sa.Engine, keys: Iterable[Key]) -> set[Key]:
    """The ``keys`` whose figures ``identity`` may see: those it may discover."""
    wanted = set(keys)
    known = entries(engine, wanted)
    out = set()
    for key in wanted:
        entry = known.get(key) or Entry(key[0])
        if decide(identity, Action.DISCOVER, entry).allowed:
            out.add(key)
    return out


def split_capability(ref: str) -> Key | None:
    """``namespace/name`` (as metrics label capabilities) as a key."""
    namespace, slash, name = ref.partition("/")
    if not slash or not namespace or not name or "/" in name:
        return None
    return namespace, name.split("@", 1)[0]


def capability_of_path(path: str) -> Key | None:
    """The capability a request path names, if any: the catalog and invocation routes
    (``/v1/capabilities/{ns}/{name}...``, ``/v1/invoke/{ns}/{name}[@ref]``), the V2
    models (``/v2/models/{ns}.{name}...``) and the catalog pages (``/c/{ns}/{name}...``)."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[1] == "v1" and parts[2] in ("capabilities", "invoke"):
        ns, name = parts[3], parts[4]
    elif len(parts) >= 4 and parts[1] == "c":
        ns, name = parts[2], parts[3]
    elif len(parts) >= 4 and parts[1] == "v2" and parts[2] == "models":
        ns, dot, name = parts[3].rpartition(".")
        if not dot:
            return None
    else:
        return None
    name = name.split("@", 1)[0]
    if not ns or not name:
        return None
    return ns, name
