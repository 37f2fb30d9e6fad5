"""The names people use: the Chinese and English titles of nodes and departments.

Ids (``sd.qd.shinan``, ``sd.qd.shinan.traffic``) are for the API; people read titles
(市南区, 市南区交通运输局 / Shinan Transport Bureau). ``title`` in the ``node`` and
``namespace`` tables is the Chinese title, ``title_en`` the English one. A node sets
its own titles and its own departments' (:class:`Titles`); titles of other nodes and
their departments arrive through the cascade, signed by the node they name. Each change
is logged in its write's transaction, so the feed carries it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import Session, select

from yunnao.plugins.errors import FieldError, Forbidden, NotFound, ValidationFailed

from . import names
from .db import read_session, write_session
from .hashing import content_hash
from .tables import Change, Namespace, Node

TITLE_CHARS = 200


def _printable(value: str) -> str:
    # Control and format characters (bidi overrides, zero-width joiners), line and
    # paragraph separators and unassigned code points would let a title hide or reorder
    # the text around it on a page or in a terminal.
    for c in value:
        if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp"):
            raise ValueError(f"control or format character U+{ord(c):04X} is not allowed")
    return value


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=TITLE_CHARS),
    AfterValidator(_printable),
]


class TitlesPatch(BaseModel):
    """Titles to set; a title left out stays, an empty one is cleared."""

    model_config = ConfigDict(extra="forbid")

    title_zh: Title | None = Field(None, description="Chinese title, e.g. 市南区交通运输局")
    title_en: Title | None = Field(None, description="English title, e.g. Shinan Transport Bureau")


class NodeOut(BaseModel):
    id: str
    parent_id: str | None
    title_zh: str
    title_en: str


class NamespaceOut(BaseModel):
    id: str
    node_id: str
    title_zh: str
    title_en: str


class NamespaceList(BaseModel):
    items: list[NamespaceOut]


@dataclass(frozen=True)
class Named:
    """The titles of one node or department."""

    zh: str = ""
    en: str = ""


def _node_out(row: Node) -> NodeOut:
    return NodeOut(id=row.id, parent_id=row.parent_id, title_zh=row.title, title_en=row.title_en)


def _namespace_out(row: Namespace) -> NamespaceOut:
    return NamespaceOut(id=row.id, node_id=row.node_id, title_zh=row.title, title_en=row.title_en)


def namespace_hash(row: Namespace) -> str:
    return content_hash(
        {"id": row.id, "node_id": row.node_id, "title": row.title, "title_en": row.title_en}
    )


class Titles:
    """Read every title this node knows; set this node's own and its departments'."""

    def __init__(self, engine: sa.Engine, node_id: str) -> None:
        self.engine = engine
        self.node_id = node_id

    # ------------------------------------------------------------ reads

    def known(self) -> dict[str, Named]:
        """Every node and department with a title, by id (for pages)."""
        with read_session(self.engine) as s:
            rows = [
                *s.execute(sa.select(Node.id, Node.title, Node.title_en)).all(),  # type: ignore[call-overload]
                *s.execute(sa.select(Namespace.id, Namespace.title, Namespace.title_en)).all(),  # type: ignore[call-overload]
            ]
        return {id_: Named(zh, en) for id_, zh, en in rows if zh or en}

    def node(self) -> NodeOut:
        with read_session(self.engine) as s:
            row = s.get(Node, self.node_id)
            if row is None:
                return NodeOut(id=self.node_id, parent_id=None, title_zh="", title_en="")
            return _node_out(row)

    def namespaces(self) -> list[NamespaceOut]:
        """Every department known here (this node's and those the cascade brought)."""
        with read_session(self.engine) as s:
            rows = s.exec(select(Namespace).order_by(Namespace.id)).all()
            return [_namespace_out(r) for r in rows]

    def namespace(self, namespace: str) -> NamespaceOut:
        with read_session(self.engine) as s:
            row = s.get(Namespace, namespace)
            if row is None:
                raise NotFound(f"no namespace {namespace} is known here")
            return _namespace_out(row)

    # ------------------------------------------------------------ writes

    def set_node(self, patch: TitlesPatch) -> NodeOut:
        """Set this node's titles; the cascade carries them to the nodes above."""
        with write_session(self.engine) as s:
            row = s.get(Node, self.node_id) or Node(id=self.node_id)
            _apply(row, patch)
            s.add(row)
            s.flush()
            digest = content_hash({"id": row.id, "title": row.title, "title_en": row.title_en})
            _log(s, "node", self.node_id, digest, self.node_id)
            return _node_out(row)

    def put_namespace(
        self, namespace: str, patch: TitlesPatch, *, create: bool
    ) -> tuple[NamespaceOut, bool]:
        """Set the titles of ``namespace``, one of this node's departments; ``create``
        also records it when it is new. Returns it and whether it was created. Raises
        ValidationFailed for what is not a namespace, NotFound for an unknown one when
        not creating, Forbidden for a department of another node."""
        self.check_own(namespace)
        with write_session(self.engine) as s:
            row = s.get(Namespace, namespace)
            created = row is None
            if row is None:
                if not create:
                    raise NotFound(
                        f"no namespace {namespace}: create it with PUT (or "
                        "`yunnao namespace create`)"
                    )
                if s.get(Node, self.node_id) is None:
                    s.add(Node(id=self.node_id))
                    s.flush()
                row = Namespace(id=namespace, node_id=self.node_id)
            _apply(row, patch)
            s.add(row)
            s.flush()
            _log(s, "namespace", namespace, namespace_hash(row), self.node_id)
            return _namespace_out(row), created

    def check_own(self, namespace: str) -> None:
        """Raise ValidationFailed for what is not a namespace, Forbidden for a
        department of another node (only its own node names it, whatever a token says)."""
        if not names.is_namespace(namespace):
            raise ValidationFailed(
                f"not a namespace: {namespace!r}",
                errors=[FieldError("namespace", names.NAMESPACE_RULE)],
            )
        if names.namespace_node(namespace) != self.node_id:
            raise Forbidden(
                f"{namespace} is not a department of this node ({self.node_id}): only its "
                "own node names it"
            )


def _apply(row: Node | Namespace, patch: TitlesPatch) -> None:
    if patch.title_zh is not None:
        row.title = patch.title_zh
    if patch.title_en is not None:
        row.title_en = patch.title_en


def _log(s: Session, entity: str, key: str, digest: str, node_id: str) -> None:
    s.add(Change(entity=entity, key=key, op="upsert", content_hash=digest, origin_node=node_id))
