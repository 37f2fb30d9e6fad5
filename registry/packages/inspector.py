"""The inspector: loads an uploaded package's plugins and describes them, in the sandbox.

Run as ``python -m yunnao.registry.packages.inspector <package dir> <dist-info name>``
by an environment's Python inside the sandbox (:mod:`.inspection` starts it), with the
unpacked package and its environment read-only. It

1. finds the package's plugins from its own entry points (group ``yunnao`` of
   ``<package dir>/<dist-info>/entry_points.txt``; never the node's installed ones),
2. imports them (the department's code runs here, and only here) and collects their
   capabilities with the SDK's plugin loading,
3. checks every capability: its registry metadata, its artifacts (files inside the
   package) and its code (a module of the package),
4. runs every example (``input`` through the capability; the ``output``, when given,
   compared with the result),

and writes one JSON document to its standard output: each capability's full spec (what
the node needs to publish it without importing its code) and every problem found, an
import error with its traceback, a failing example with the field. The package's code
writes to standard error only: standard output is reserved for the document. Progress
goes to standard error as ``yunnao-inspector: ...`` lines, so a node that had to stop a
hanging inspection can say where it hung.

The document is the package's own claim, made by code the node does not trust: the
node parses it strictly (:mod:`.inspection`) and trusts nothing in it but its shape.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS = "yunnao-inspector: "
MAX_TRACEBACK = 8000
_LOAD_FAILURES = (Exception, SystemExit)


def progress(text: str) -> None:
    print(f"{PROGRESS}{text}", file=sys.stderr, flush=True)


_ROOT: Path | None = None  # the package folder, once known


def _trace() -> str:
    """The current exception's traceback from the package's first frame on (the
    inspector's and importlib's own frames left out), paths relative to the package."""
    exc = sys.exc_info()[1]
    if exc is None:
        return ""
    report = traceback.TracebackException.from_exception(exc)
    prefix = f"{_ROOT}/" if _ROOT else None
    if prefix:
        frames = list(report.stack)
        first = next((i for i, f in enumerate(frames) if f.filename.startswith(prefix)), None)
        if first is not None:
            report.stack = traceback.StackSummary.from_list(frames[first:])
    text = "".join(report.format())
    if prefix:
        text = text.replace(prefix, "")
    return clipped(text)


def clipped(text: str) -> str:
    """A traceback's last ``MAX_TRACEBACK`` characters (where it was raised)."""
    return text if len(text) <= MAX_TRACEBACK else "...\n" + text[-MAX_TRACEBACK:]


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def describe_package(root: Path, dist_info: str) -> dict[str, Any]:
    """The document for the package unpacked at ``root``."""
    from yunnao.plugins.loader import GROUP, Plugins

    global _ROOT
    root = _ROOT = root.resolve()
    sys.path.insert(0, str(root))
    dist = md.Distribution.at(root / dist_info)
    name, version = dist.metadata["Name"], dist.version
    problems: list[dict[str, Any]] = []
    plugins = Plugins()
    eps = sorted((ep for ep in dist.entry_points if ep.group == GROUP), key=lambda e: e.name)
    if not eps:
        problems.append(
            _problem(
                "no-plugins",
                f"{dist_info}/entry_points.txt declares no [{GROUP}] entry points",
                field="file",
            )
        )
    for ep in eps:
        progress(f"importing plugin {ep.name} ({ep.value})")
        try:
            module = ep.load()
        except _LOAD_FAILURES as exc:
            problems.append(
                _problem(
                    "import",
                    f"importing plugin {ep.name!r} ({ep.value}) failed: {_describe(exc)}",
                    field=f"plugins.{ep.name}",
                    plugin=ep.name,
                    traceback=_trace(),
                )
            )
            continue
        plugins.add(module, name=ep.name, source=f"{name} {version}")
    for p in plugins.problems:
        problems.append(_problem("plugin", p.cause, field=f"plugins.{p.plugin}", plugin=p.plugin))
    capabilities = []
    for cap in plugins.capabilities.values():
        capabilities.append(_describe_capability(cap, root, problems))
    return {
        "distribution": {"name": name, "version": version},
        "plugins": [
            {"name": i.name, "module": i.module, "capabilities": list(i.capabilities)}
            for i in plugins.infos.values()
        ],
        "capabilities": capabilities,
        "problems": problems,
    }


def _problem(kind: str, message: str, **more: Any) -> dict[str, Any]:
    return {"kind": kind, "message": message, **{k: v for k, v in more.items() if v is not None}}


def _relative(path: Path, root: Path) -> str | None:
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None


def _code(cap: Any, root: Path) -> str | None:
    top = cap.module.split(".")[0]
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return None
    path = Path(file)
    return _relative(path.parent if path.name == "__init__.py" else path, root)


def _describe_capability(cap: Any, root: Path, problems: list[dict[str, Any]]) -> dict[str, Any]:
    from pydantic import ValidationError

    from yunnao.plugins.errors import field_errors
    from yunnao.registry import schemas

    where = f"capabilities.{cap.name}"

    def problem(kind: str, message: str, field: str, **more: Any) -> None:
        problems.append(_problem(kind, message, field=field, capability=cap.name, **more))

    progress(f"checking capability {cap.name}")
    try:
        schemas.PublishRequest(**cap.metadata(), version=cap.version)
    except ValidationError as exc:
        for err in field_errors(exc):
            problem("spec", err.message, f"{where}.{err.field}")
    artifacts: dict[str, str] = {}
    for key, path in cap.artifacts.items():
        rel = _relative(path, root)
        if rel is None:
            problem("artifact", f"{path} is not a file of the package", f"{where}.artifacts.{key}")
        elif not (root / rel).is_file():
            problem("artifact", f"{rel} is not in the package", f"{where}.artifacts.{key}")
        else:
            artifacts[key] = rel
    code = _code(cap, root)
    if code is None:
        problem("code", f"module {cap.module} is not part of the package", f"{where}.entry")
    results = _run_examples(cap, problem, where)
    return {
        "name": cap.name,
        "version": cap.version,
        "title": cap.title,
        "summary": cap.summary,
        "description": cap.description,
        "summary_en": cap.summary_en,
        "description_en": cap.description_en,
        "kind": cap.kind,
        "domain": cap.domain,
        "tags": list(cap.tags),
        "classification": cap.classification,
        "owner": cap.owner,
        "contact": cap.contact,
        "license": cap.license,
        "input_schema": cap.input_schema,
        "output_schema": cap.output_schema,
        "examples": _jsonable(cap.examples),
        "artifacts": artifacts,
        "requirements": list(cap.requirements),
        "runtime": _jsonable(cap.runtime),
        "entry": cap.entry,
        "module": cap.module,
        "code": code or "",
        "plugin": cap.plugin or "",
        "example_results": results,
    }


def _run_examples(cap: Any, problem: Any, where: str) -> list[dict[str, Any]]:
    from yunnao.plugins.errors import OutputInvalid, ValidationFailed

    if not cap.examples:
        return []
    try:
        fn = cap.instantiate()
    except _LOAD_FAILURES as exc:
        problem(
            "example",
            f"cannot make {cap.qualname} to run the examples: {_describe(exc)}",
            f"{where}.examples",
            traceback=_trace(),
        )
        return [{"index": i, "ok": False} for i in range(len(cap.examples))]
    results = []
    for i, example in enumerate(cap.examples):
        progress(f"running example {i} of {cap.name}")
        field = f"{where}.examples[{i}]"
        ok = False
        try:
            output = cap.call(fn, cap.validate_input(example.get("input")))
        except (ValidationFailed, OutputInvalid) as exc:
            part = "input" if isinstance(exc, ValidationFailed) else "output"
            for err in exc.errors or []:
                sub = err.field.removeprefix(part).lstrip(".")
                problem("example", err.message, f"{field}.{part}" + (f".{sub}" if sub else ""))
            if not exc.errors:
                problem("example", exc.detail, f"{field}.{part}")
        except _LOAD_FAILURES as exc:
            problem("example", f"raised {_describe(exc)}", field, traceback=_trace())
        else:
            expected = example.get("output")
            diff = None if expected is None else _diff(expected, output, "")
            if diff is None:
                ok = True
            else:
                path, message = diff
                problem("example", message, f"{field}.output{path}")
        results.append({"index": i, "ok": ok})
    return results


def _diff(expected: Any, actual: Any, path: str) -> tuple[str, str] | None:
    """Where ``actual`` first differs from ``expected`` (numbers within 1e-6), or None."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                return f"{path}.{key}", "missing from the output"
            found = _diff(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        extra = [k for k in actual if k not in expected]
        return (f"{path}.{extra[0]}", "not in the expected output") if extra else None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return path, f"expected {len(expected)} items, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = _diff(e, a, f"{path}[{i}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        if math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9):
            return None
    elif expected == actual and type(expected) is type(actual):
        return None
    return path, f"expected {_short(expected)}, got {_short(actual)}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write_document(argv: list[str] | None, usage: str, make: Callable[..., dict[str, Any]]) -> int:
    """The ``main`` of a sandboxed inspector: ``make(*args)``, called with the command
    line's arguments (one for each ``<...>`` in ``usage``), written to standard output
    as one JSON document. Standard output is the document's alone: whatever runs
    meanwhile (the department's code) prints to standard error. Exit status 0, or 2 and
    the usage on the wrong number of arguments."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != usage.count("<"):
        print(f"usage: {usage}")
        return 2
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    document = make(*args)
    out.write(json.dumps(document, ensure_ascii=False, default=str))
    out.flush()
    return 0


def _inspect(package_dir: str, dist_info: str) -> dict[str, Any]:
    document = describe_package(Path(package_dir), dist_info)
    progress("done")
    return document


def main(argv: list[str] | None = None) -> int:
    usage = "python -m yunnao.registry.packages.inspector <package dir> <dist-info>"
    return write_document(argv, usage, _inspect)


if __name__ == "__main__":
    sys.exit(main())
