"""Message catalogs: the English text is the message id, ``locales/<lang>.json`` maps it
to each other language. Pages call ``_("...")`` (a Jinja global bound per request);
a message missing from a catalog shows in English, and a test checks that every message
the templates and pages use is translated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from starlette.requests import Request

LANGUAGES = {"zh-CN": "中文", "en": "English"}
DEFAULT = "zh-CN"
COOKIE = "yunnao_lang"
_DIR = Path(__file__).parent / "locales"


@cache
def catalog(lang: str) -> dict[str, str]:
    path = _DIR / f"{lang}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def language(request: Request) -> str:
    """The page language: the visitor's choice (a cookie), else zh-CN."""
    chosen = request.cookies.get(COOKIE)
    return chosen if chosen in LANGUAGES else DEFAULT


def translator(lang: str) -> Callable[..., str]:
    messages = catalog(lang)

    def _(message: str, **values: object) -> str:
        text = messages.get(message, message)
        return text.format(**values) if values else text

    return _
