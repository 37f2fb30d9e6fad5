"""The layout's rules, checked on the source: imports point one way between the folders
(plugins ← registry ← runtimes/cascade ← catalog_ui ← yunnao; runtimes and cascade never
import each other), and no module-level imports form a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# folder -> (import name, layer): a folder may import only from layers below its own.
FOLDERS = {
    "plugins": ("yunnao.plugins", 0),
    "registry": ("yunnao.registry", 1),
    "runtimes": ("yunnao.runtimes", 2),
    "cascade": ("yunnao.cascade", 2),
    "catalog_ui": ("yunnao.catalog_ui", 3),
    "yunnao": ("yunnao", 4),
}


def _module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    package = FOLDERS[folder][0]
    rest = path.relative_to(ROOT / folder).with_suffix("").parts
    if rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join((package, *rest))


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for folder in FOLDERS
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def _folder_of(module: str) -> str:
    for folder, (package, _) in FOLDERS.items():
        if folder != "yunnao" and (module == package or module.startswith(package + ".")):
            return folder
    return "yunnao"


def _imports(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The ``yunnao`` modules ``module`` imports (resolving relative imports)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "yunnao"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "yunnao":
                continue
            found.add(target)
            # ``from package import module`` imports a module too.
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def test_imports_point_one_way_between_the_folders() -> None:
    wrong = []
    for module, path in _modules().items():
        folder = _folder_of(module)
        layer = FOLDERS[folder][1]
        for target in _imports(module, path, top_level_only=False):
            other = _folder_of(target)
            if other != folder and FOLDERS[other][1] >= layer:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against plugins ← registry ← runtimes/cascade ← ...:\n" + (
        "\n".join(sorted(wrong))
    )


def test_module_level_imports_form_no_cycle() -> None:
    modules = _modules()
    graph = {
        m: {t for t in _imports(m, p, top_level_only=True) if t in modules and t != m}
        for m, p in modules.items()
    }
    # A package's __init__ importing its own modules is how a package is assembled.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_the_whole_tree() -> None:
    """A check that finds no module checks nothing."""
    modules = _modules()
    assert {"yunnao.registry.access", "yunnao.cli.common", "yunnao.plugins"} <= set(modules)
    assert len(modules) > 100


def test_adapters_never_import_the_gateway() -> None:
    """Inside runtimes/, the gateway runs adapters; an adapter knows only the runtime
    protocol (adapters/base.py) and what is below runtimes/."""
    wrong = [
        f"{module} imports {target}"
        for module, path in _modules().items()
        if module.startswith("yunnao.runtimes.adapters")
        for target in _imports(module, path, top_level_only=False)
        if target.startswith("yunnao.runtimes.gateway")
    ]
    assert not wrong, "\n".join(sorted(wrong))


LONG = 500  # lines


def test_a_long_module_says_why_in_its_first_lines() -> None:
    """A module over about 500 lines opens with a docstring paragraph starting "Why one
    module:" that says why one concept needs the length; otherwise it should be split."""
    unexplained = []
    for path in _modules().values():
        text = path.read_text()
        if text.count("\n") <= LONG:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Why one module:" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, "long modules that do not say why:\n" + "\n".join(unexplained)


def test_every_package_is_installed() -> None:
    """pyproject.toml lists packages explicitly (the folders map to ``yunnao.*`` names),
    so a new sub-package missing from the list would be left out of a built wheel."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {_module_name(p) for p in _modules().values() if p.name == "__init__.py"}
    assert packages - listed == set(), "packages missing from pyproject.toml's list"
