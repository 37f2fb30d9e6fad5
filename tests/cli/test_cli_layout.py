"""The command line's layout: one module per command group on ``yunnao.cli.main``, and
``yunnao.cli.common`` and ``yunnao.cli.uploads`` shared by them without importing any of
them back (no cycle): ``common`` imports no sibling, ``uploads`` only ``common``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click

import yunnao.cli
from yunnao.cli import main

CLI = Path(yunnao.cli.__file__).parent
GROUPS = {
    "node", "catalog", "invoking", "cascade", "keys", "audit", "demo", "authoring", "profiles",
    "names", "access", "assessment", "webhooks", "review", "pipeline", "split",
}  # fmt: skip
SHARED = {"common", "uploads"}


def _siblings_imported(path: Path) -> set[str]:
    """The ``yunnao.cli`` modules ``path`` imports (relative or absolute)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found |= {module} if module else {a.name for a in node.names}
            elif node.level == 0 and module.startswith("yunnao.cli"):
                found.add(module.removeprefix("yunnao.cli").lstrip(".") or "__init__")
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("yunnao.cli").lstrip(".") or "__init__"
                for a in node.names
                if a.name.startswith("yunnao.cli")
            }
    return found


def test_common_imports_no_command_group_and_groups_never_import_the_package() -> None:
    assert _siblings_imported(CLI / "common.py") == set()
    assert _siblings_imported(CLI / "uploads.py") == {"common"}
    for group in GROUPS:
        imported = _siblings_imported(CLI / f"{group}.py")
        allowed = SHARED | {"cascade"} if group == "demo" else SHARED
        assert imported <= allowed, (group, imported)
    assert {p.stem for p in CLI.glob("*.py")} == GROUPS | SHARED | {"__init__"}


def test_every_group_module_mounts_its_commands_on_main() -> None:
    names = set(main.commands)
    assert names == {
        "serve", "db", "search", "show", "invoke", "runtime", "token", "plugins",
        "publish", "cascade", "key", "audit", "usage", "demo",
        "versions", "compare", "deprecate", "retire", "edit", "publish-jobs", "login", "logout",
        "profiles",
        "node", "namespace", "access", "assessment", "webhook", "review", "pipeline", "split",
    }  # fmt: skip
    for command in main.commands.values():
        assert isinstance(command, click.Command)
        assert command.callback is None or command.callback.__module__.startswith("yunnao.cli.")


def test_loading_the_command_line_imports_no_store_server_or_model_library() -> None:
    """Every ``yunnao`` command, ``--help`` included, loads all the groups first: a heavy
    import at a group's top (the store's SQLAlchemy tables once cost a second a command)
    is paid by each of them. Commands import those where they run."""
    code = "import sys, yunnao.cli; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    heavy = {"sqlalchemy", "sqlmodel", "mlflow", "starlette", "uvicorn", "numpy", "ray"}
    assert heavy.isdisjoint(loaded), sorted(heavy & loaded)
