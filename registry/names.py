"""Names and versions: node ids, namespaces, capability names, tags and semver.

A node id is a dotted path (``sd``, ``sd.qd``, ``sd.qd.shinan``); a namespace is a
department under a node (``sd.qd.shinan.traffic``); a capability is addressed as
``namespace/name@version``. Segments are lowercase so that ids compare and sort the
same on every store and filesystem.
"""

from __future__ import annotations

import re
from functools import cmp_to_key

import semver

SEGMENT = r"[a-z][a-z0-9-]{0,39}"
NODE_ID_RE = re.compile(rf"^{SEGMENT}(?:\.{SEGMENT}){{0,7}}$")
NAMESPACE_RE = re.compile(rf"^{SEGMENT}(?:\.{SEGMENT}){{0,8}}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
TAG_RE = re.compile(r"^[\w][\w.+-]{0,47}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# MLflow keeps these alias names for itself ("latest", and v<N> for version N).
RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$")

NODE_ID_RULE = "a dotted path of 1-8 segments, each [a-z][a-z0-9-]{0,39}"
NAMESPACE_RULE = "the owning node id followed by one department segment [a-z][a-z0-9-]{0,39}"
NAME_RULE = "lowercase letters, digits, '_' or '-', starting with a letter, at most 64"
TAG_RULE = "letters (any script), digits, '_', '.', '+' or '-', at most 48"
ALIAS_RULE = (
    "lowercase letters, digits, '_' or '-', starting with a letter, at most 64; "
    "not 'latest' or v<number> (MLflow reserves them)"
)


def is_node_id(value: str) -> bool:
    return bool(NODE_ID_RE.match(value))


def is_namespace(value: str) -> bool:
    return bool(NAMESPACE_RE.match(value)) and "." in value


def is_name(value: str) -> bool:
    return bool(NAME_RE.match(value))


def is_tag(value: str) -> bool:
    return bool(TAG_RE.match(value))


def is_alias(value: str) -> bool:
    return bool(ALIAS_RE.match(value)) and not RESERVED_ALIAS_RE.match(value)


def namespace_node(namespace: str) -> str:
    """The node that owns ``namespace``: everything before its last segment."""
    return namespace.rsplit(".", 1)[0]


def in_scope(namespace: str, scope: str) -> bool:
    """True when ``namespace`` is ``scope`` itself or lies under it."""
    return namespace == scope or namespace.startswith(scope + ".")


def is_semver(value: str) -> bool:
    return semver.Version.is_valid(value)


def _compare(a: str, b: str) -> int:
    return semver.Version.parse(a).compare(b)


def sort_versions(versions: list[str], *, newest_first: bool = True) -> list[str]:
    """Semver order (so 1.10.0 > 1.9.0 and 1.0.0 > 1.0.0-rc.1)."""
    return sorted(versions, key=cmp_to_key(_compare), reverse=newest_first)
