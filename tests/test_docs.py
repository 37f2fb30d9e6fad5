"""What must be documented, checked on the docs themselves (as datasette's tests/test_docs.py
does): every node setting has its ``YUNNAO_*`` variable in a settings table of
``docs/operating.md`` (and every ``yunnao serve`` option its flag there, on the row of the
setting it sets), and every hook of ``plugins/hookspecs.py`` says in its docstring when it
is called and what it returns, and is named where ``docs/authoring.md`` lists the hooks."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import click
import pluggy
import pytest

from yunnao.cli import main
from yunnao.plugins import hookspecs
from yunnao.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
OPERATING = DOCS / "operating.md"
AUTHORING = DOCS / "authoring.md"
ENV_PREFIX = Settings.model_config["env_prefix"]


@dataclass(frozen=True)
class Row:
    """One row of a settings table: the variables it names (first column) and the
    ``yunnao`` flags its flag column names."""

    line: int
    variables: frozenset[str]
    flags: frozenset[str]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _settings_rows() -> list[Row]:
    """The rows of every table in operating.md whose first column is ``variable``.

    A variable counts only spelled out in backticks (`YUNNAO_NODE_ID`), never as a
    pattern (`YUNNAO_CASCADE_*`); flags count from a ``flag`` column."""
    rows: list[Row] = []
    header: list[str] | None = None
    for number, line in enumerate(OPERATING.read_text().splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the separator under the header
        if header[0] != "variable":
            continue
        flag_cell = cells[header.index("flag")] if "flag" in header else ""
        rows.append(
            Row(
                line=number,
                variables=frozenset(re.findall(r"`(YUNNAO_[A-Z0-9_]+)`", cells[0])),
                flags=frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", flag_cell)),
            )
        )
    return rows


def _env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field}".upper()


def _cli_envvars(command: click.Command) -> set[str]:
    found = {
        envvar
        for param in command.params
        for envvar in (
            [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        )
    }
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found |= _cli_envvars(sub)
    return found


SERVE_OPTIONS = [
    p for p in main.commands["serve"].params if isinstance(p, click.Option) and p.name != "help"
]


def test_the_settings_tables_are_found() -> None:
    """The parser still reads operating.md's tables (a renamed column would make the
    tests below vacuous)."""
    rows = _settings_rows()
    assert len(rows) >= 20, rows
    assert any(row.flags for row in rows)


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    variable = _env_name(field)
    rows = [row for row in _settings_rows() if variable in row.variables]
    assert rows, (
        f"setting {field!r} is not documented: add `{variable}` to a settings table "
        f"(first column `variable`) of docs/{OPERATING.name}"
    )
    assert len(rows) == 1, f"`{variable}` has several rows: lines {[r.line for r in rows]}"


@pytest.mark.parametrize("option", SERVE_OPTIONS, ids=lambda o: o.opts[0])
def test_every_serve_option_is_documented_with_its_setting(option: click.Option) -> None:
    """Each ``yunnao serve`` flag appears in the flag column; a flag that sets a node
    setting appears on that setting's row."""
    flags = {*option.opts, *option.secondary_opts}
    rows = [row for row in _settings_rows() if row.flags & flags]
    assert rows, (
        f"`yunnao serve {option.opts[0]}` is not documented: add it to the flag column of "
        f"the settings table in docs/{OPERATING.name}"
    )
    if option.name in Settings.model_fields:
        variable = _env_name(option.name)
        assert any(variable in row.variables for row in rows), (
            f"`{option.opts[0]}` sets {option.name!r}: document it on the row of `{variable}`"
        )


@pytest.mark.parametrize(
    "variable",
    sorted({v for row in _settings_rows() for v in row.variables}),
)
def test_every_documented_variable_exists(variable: str) -> None:
    """No row documents a variable that nothing reads (a setting since renamed)."""
    settings = {_env_name(field) for field in Settings.model_fields}
    assert variable in settings | _cli_envvars(main), (
        f"docs/{OPERATING.name} documents `{variable}`, which is neither a "
        "node setting nor a CLI option's variable"
    )


def _hooks() -> list[str]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return sorted(name for name in vars(pm.hook) if not name.startswith("_"))


def _hooks_section() -> str:
    """The "Hooks" section of the authors' guide."""
    text = AUTHORING.read_text()
    match = re.search(r"^## Hooks\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/{AUTHORING.name} has no '## Hooks' section"
    return match.group(1)


def test_the_hooks_are_found() -> None:
    assert "yunnao_capabilities" in _hooks()


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_has_a_docstring(hook: str) -> None:
    """Its docstring in plugins/hookspecs.py says when the hook is called and what an
    implementation returns."""
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 30, f"{hook}: document it in plugins/hookspecs.py"
    assert re.search(r"\bcalled\b", doc, flags=re.I), f"{hook}: say when it is called"
    assert re.search(r"\breturns?\b", doc, flags=re.I), f"{hook}: say what it returns"


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_in_the_authoring_guide(hook: str) -> None:
    assert f"`{hook}`" in _hooks_section(), (
        f"name `{hook}` in the '## Hooks' section of docs/{AUTHORING.name}"
    )


def _runtime_settings_documented() -> dict[str, set[str]]:
    """Runtime -> the keys named in the runtime settings table of operating.md (a row with
    an empty first cell continues the runtime above it)."""
    text = OPERATING.read_text()
    section = text[text.index("### Runtime settings") :]
    documented: dict[str, set[str]] = {}
    runtime = None
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if cells[0] == "runtime" or set("".join(cells)) <= set("-: "):
            continue
        runtime = cells[0].strip("`") or runtime
        documented.setdefault(runtime, set()).update(re.findall(r"`([a-z_]+)`", cells[1]))
    return documented


def _runtime_settings() -> list[tuple[str, str]]:
    from yunnao.runtimes.adapters.bentoml import BentoMLSettings
    from yunnao.runtimes.adapters.inprocess import InProcessSettings
    from yunnao.runtimes.adapters.rayserve import RayServeSettings
    from yunnao.runtimes.adapters.remote import RemoteSettings
    from yunnao.runtimes.adapters.sandbox import SandboxSettings
    from yunnao.runtimes.adapters.triton import TritonSettings

    models = {
        "inprocess": InProcessSettings,
        "rayserve": RayServeSettings,
        "bentoml": BentoMLSettings,
        "triton": TritonSettings,
        "remote": RemoteSettings,
        "sandbox": SandboxSettings,
    }
    return [(rtype, key) for rtype, model in models.items() for key in model.model_fields]


def test_the_runtime_settings_table_is_found() -> None:
    assert {"inprocess", "rayserve", "bentoml", "triton", "remote"} <= set(
        _runtime_settings_documented()
    )


@pytest.mark.parametrize(
    ("rtype", "key"), _runtime_settings(), ids=[f"{r}.{k}" for r, k in _runtime_settings()]
)
def test_every_runtime_setting_is_documented(rtype: str, key: str) -> None:
    assert key in _runtime_settings_documented().get(rtype, set()), (
        f"the {rtype} runtime's setting {key!r} is missing from the runtime settings table "
        "of docs/operating.md"
    )
