"""Text for pages: descriptions from Markdown and search highlights (copyable code is in
:mod:`.snippets`)."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from yunnao.registry import search

# CommonMark with raw HTML off: authors' Markdown cannot inject markup or script, and
# markdown-it refuses javascript:, vbscript:, file: and data: (but images) link targets.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable("table")


def markdown(text: str) -> Markup:
    return Markup(_md.render(text or ""))  # html is off: the output is safe


def highlight(text: str, query: str) -> Markup:
    """``text`` escaped, with the query's words marked (``<mark>``), case-insensitively."""
    words = sorted({t for t in search.tokens(query) if t.strip()}, key=len, reverse=True)
    if not words or not text:
        return escape(text)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    out, last = [], 0
    for m in pattern.finditer(text):
        out.append(escape(text[last : m.start()]))
        out.append(Markup("<mark>{}</mark>").format(m.group(0)))
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)
