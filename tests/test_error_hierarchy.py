"""The error hierarchy is one module with one problem type per class, drawn as a tree in
that module's docstring, and every problem type is documented in docs/api.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from yunnao.plugins import errors

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("plugins", "registry", "runtimes", "cascade", "catalog_ui", "yunnao")


def _classes() -> list[type[errors.YunnaoError]]:
    found, todo = [], [errors.YunnaoError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(
        {c for c in found if c.__module__.startswith("yunnao.")}, key=lambda c: c.__name__
    )


# The one class that passes on another node's problem type instead of having its own.
PASSED_ON = {errors.RemoteFailed}


def test_every_error_class_lives_in_the_errors_module() -> None:
    """No module but plugins/errors.py defines a YunnaoError subclass (checked on the
    source, so a module nobody imported in this test run is covered too)."""
    names = {cls.__name__ for cls in _classes()}
    elsewhere = []
    for folder in SOURCE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "plugins" / "errors.py" or "__pycache__" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                    bases |= {b.attr for b in node.bases if isinstance(b, ast.Attribute)}
                    if bases & names:
                        elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not elsewhere, f"error classes outside plugins/errors.py: {elsewhere}"
    assert {cls.__module__ for cls in _classes()} == {"yunnao.plugins.errors"}


def test_one_problem_type_per_class() -> None:
    slugs: dict[str, list[str]] = {}
    for cls in _classes():
        if cls not in PASSED_ON:
            slugs.setdefault(cls.slug, []).append(cls.__name__)
    shared = {slug: names for slug, names in slugs.items() if len(names) > 1}
    assert not shared, f"problem types shared by several classes: {shared}"


def test_the_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    tree = [line for line in doc.splitlines() if re.match(r"^    (YunnaoError|[│├└ ]+── )", line)]
    drawn = {}
    for line in tree:
        name, _, rest = line.strip("│├└─ ").partition(" ")
        match = re.match(r"\s*(\d{3} [a-z-]+)", rest)
        drawn[name] = match.group(1) if match else None
    for cls in _classes():
        assert cls.__name__ in drawn, f"{cls.__name__} is missing from the tree in the docstring"
        if cls not in PASSED_ON:
            assert drawn[cls.__name__] == f"{cls.status} {cls.slug}", cls.__name__
    assert set(drawn) == {cls.__name__ for cls in _classes()}, "the tree names a class not defined"


@pytest.mark.parametrize("cls", [c for c in _classes() if c not in PASSED_ON], ids=lambda c: c.slug)
def test_problem_type_is_documented(cls: type[errors.YunnaoError]) -> None:
    table = (ROOT / "docs" / "api.md").read_text()
    assert re.search(rf"^\| {cls.status} \| `{re.escape(cls.slug)}` \|", table, re.M), (
        f"docs/api.md's error table has no row for {cls.status} `{cls.slug}` ({cls.__name__})"
    )
