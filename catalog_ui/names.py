"""Names on pages: titles where people read, ids in small type beside them.

Pages get a :class:`Namer` for the visitor's language as ``named``: ``named.label(id)``
is a node's or department's title with its id in small type, ``named.title(id)`` the
title alone (English on the English pages, else Chinese, else the id), and
``named.summary`` / ``named.description`` a capability's texts in that language when
its authors wrote them, else the ones they did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import Markup
from starlette.requests import Request

from yunnao.registry.titles import Named, NamespaceOut, Titles


@dataclass(frozen=True)
class Namer:
    lang: str
    known: dict[str, Named] = field(default_factory=dict)
    source: Titles | None = None

    @classmethod
    def of(cls, request: Request, lang: str) -> Namer:
        titles: Titles | None = getattr(request.app.state, "titles", None)
        return cls(lang, titles.known() if titles is not None else {}, titles)

    def own_departments(self) -> list[NamespaceOut]:
        """This node's departments with their titles (for the operator page's form)."""
        if self.source is None:
            return []
        node = self.source.node_id
        return [ns for ns in self.source.namespaces() if ns.node_id == node]

    @property
    def english(self) -> bool:
        return self.lang == "en"

    def title(self, id_: str, fallback: str = "") -> str:
        """The title of node or department ``id_`` in this language, falling back to
        the Chinese one, then ``fallback``, then the id itself."""
        found = self.known.get(id_)
        if found is not None:
            chosen = (found.en or found.zh) if self.english else (found.zh or found.en)
            if chosen:
                return chosen
        return fallback or id_

    def label(self, id_: str) -> Markup:
        """The title with the id in small type; the id alone where there is no title."""
        title = self.title(id_)
        if title == id_:
            return Markup('<code class="id">{}</code>').format(id_)
        return Markup('<span class="named">{}</span> <small class="id">{}</small>').format(
            title, id_
        )

    def summary(self, item: object) -> str:
        """A capability's summary in this language (its ``summary_en`` on English pages
        when it has one)."""
        english = getattr(item, "summary_en", "") if self.english else ""
        return english or getattr(item, "summary", "")

    def description(self, item: object) -> str:
        english = getattr(item, "description_en", "") if self.english else ""
        return english or getattr(item, "description", "")
