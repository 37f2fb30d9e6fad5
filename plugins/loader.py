"""Finding and loading plugins, with every failure isolated and explained.

Plugins come from the ``yunnao`` entry-point group of installed distributions, or are
named directly (a module, a ``.py`` file, a distribution). A plugin that fails — its
import raises, a hook raises, it returns something that is not a capability, two
plugins claim one name — is reported once, with the plugin and the cause, and left
out; the others load. A node therefore always starts with what does work.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .capability import Capability, Invocation

GROUP = "yunnao"


@dataclass(frozen=True)
class PluginProblem:
    """Why one plugin (or one of its contributions) was left out."""

    plugin: str
    source: str
    cause: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.source}): {self.cause}"


@dataclass
class PluginInfo:
    """A loaded plugin and what it contributed."""

    name: str
    module: str
    source: str  # "distribution 1.2.0" or a file path
    capabilities: list[str] = field(default_factory=list)
    runtimes: list[str] = field(default_factory=list)


# An import may raise anything, SystemExit included; Ctrl-C still stops the process.
_LOAD_FAILURES = (Exception, SystemExit)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Plugins:
    """The plugin manager of one process, and what its plugins contributed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.problems: list[PluginProblem] = []
        self.capabilities: dict[str, Capability] = {}
        self.runtimes: dict[str, Any] = {}

    # ------------------------------------------------------------ invocation

    def invoke(
        self,
        cap: Capability,
        data: Any,
        *,
        caller: str | None = None,
        request_id: str | None = None,
        artifacts: Mapping[str, Path] | None = None,
    ) -> Any:
        """Run ``cap`` on JSON ``data`` with the invocation hooks around it.

        The input is validated; ``yunnao_before_invoke`` implementations may replace it
        (each replacement is validated again); the capability runs and its output is
        validated against its type and turned into JSON data; ``yunnao_after_invoke``
        implementations may replace that (masking, say). Before-hooks run in pluggy's
        call order (the last registered first), after-hooks in the opposite order, so
        a plugin's pair nests around the ones registered before it.
        """
        inputs = cap.validate_input(data)
        invocation = Invocation(cap.name, inputs, caller=caller, request_id=request_id)
        invocation = self.before_invoke(invocation, cap.validate_input)
        output = cap.call(cap.instantiate(artifacts), invocation.inputs)
        return self.after_invoke(invocation, output)

    def before_invoke(
        self, invocation: Invocation, validate: Callable[[Any], dict[str, Any]]
    ) -> Invocation:
        """Run the ``yunnao_before_invoke`` hooks; each replacement input is passed
        through ``validate`` before the next hook sees it."""
        for impl in reversed(self.pm.hook.yunnao_before_invoke.get_hookimpls()):
            replaced = impl.function(invocation=invocation)
            if replaced is not None:
                invocation = replace(invocation, inputs=validate(replaced))
        return invocation

    def after_invoke(self, invocation: Invocation, output: Any) -> Any:
        """Run the ``yunnao_after_invoke`` hooks (in the opposite order) on ``output``."""
        for impl in self.pm.hook.yunnao_after_invoke.get_hookimpls():
            replaced = impl.function(invocation=invocation, output=output)
            if replaced is not None:
                output = replaced
        return output

    @property
    def has_invoke_hooks(self) -> bool:
        hook = self.pm.hook
        return bool(
            hook.yunnao_before_invoke.get_hookimpls() or hook.yunnao_after_invoke.get_hookimpls()
        )

    # ------------------------------------------------------------ discovery

    def load_entry_points(self, group: str = GROUP) -> None:
        """Load every installed plugin of the entry-point ``group``."""
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: md.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist else ep.value
        try:
            module = ep.load()
        except _LOAD_FAILURES as exc:
            self.problems.append(PluginProblem(ep.name, source, f"import failed: {_describe(exc)}"))
            return
        self.add(module, name=ep.name, source=source)

    def load_target(self, target: str) -> list[str]:
        """Load the plugin(s) named by ``target``: a ``.py`` file or a directory holding
        a package, an importable module, or an installed distribution (its entry
        points). Returns the names of the plugins it added."""
        before = set(self.infos)
        path = Path(target)
        if path.suffix == ".py" or path.is_dir():
            self._load_path(path)
        elif _is_module(target):
            try:
                module = importlib.import_module(target)
            except _LOAD_FAILURES as exc:
                self.problems.append(
                    PluginProblem(target, "module", f"import failed: {_describe(exc)}")
                )
            else:
                self.add(module, name=target, source=getattr(module, "__file__", None) or target)
        else:
            try:
                dist = md.distribution(target)
            except md.PackageNotFoundError:
                raise LookupError(
                    f"{target!r} is not a .py file, a package directory, an importable "
                    "module or an installed distribution"
                ) from None
            eps = [ep for ep in dist.entry_points if ep.group == GROUP]
            if not eps:
                raise LookupError(f"distribution {target!r} declares no [{GROUP}] entry points")
            for ep in eps:
                self._load_entry_point(ep)
        return [n for n in self.infos if n not in before]

    def _load_path(self, path: Path) -> None:
        path = path.resolve()
        if path.is_dir():
            init = path / "__init__.py"
            if not init.is_file():
                raise LookupError(f"{path} is not a package (no __init__.py)")
            name, location, search = path.name, init, [str(path)]
        elif path.is_file():
            name, location, search = path.stem, path, None
        else:
            raise LookupError(f"no such file: {path}")
        parent = str(path.parent)
        if parent not in sys.path:  # so the plugin's own imports of siblings work
            sys.path.insert(0, parent)
        try:
            spec = importlib.util.spec_from_file_location(
                name, location, submodule_search_locations=search
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except _LOAD_FAILURES as exc:
            sys.modules.pop(name, None)
            self.problems.append(PluginProblem(name, str(path), f"import failed: {_describe(exc)}"))
            return
        self.add(module, name=name, source=str(path))

    # ------------------------------------------------------------ registration

    def add(self, module: ModuleType | object, *, name: str, source: str) -> None:
        """Register one plugin object and collect its contributions."""
        if name in self.infos or self.pm.has_plugin(name):
            return  # the same plugin reached twice (entry point and path): keep the first
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # pluggy validates hook implementations here
            self.problems.append(PluginProblem(name, source, f"invalid hooks: {_describe(exc)}"))
            return
        info = PluginInfo(name=name, module=getattr(module, "__name__", name), source=source)
        self.infos[name] = info
        for impl in self.pm.hook.yunnao_capabilities.get_hookimpls():
            if impl.plugin_name == name:
                self._collect_capabilities(info, self._call(info, "yunnao_capabilities", impl))
        for impl in self.pm.hook.yunnao_runtimes.get_hookimpls():
            if impl.plugin_name == name:
                self._collect_runtimes(info, self._call(info, "yunnao_runtimes", impl))

    def _call(self, info: PluginInfo, hook: str, impl: Any) -> Any:
        try:
            return impl.function()
        except _LOAD_FAILURES as exc:
            self.problems.append(
                PluginProblem(info.name, info.source, f"{hook} raised {_describe(exc)}")
            )
            return None

    def _collect_capabilities(self, info: PluginInfo, result: Any) -> None:
        if result is None:
            return
        if not isinstance(result, Iterable) or isinstance(result, str | bytes | dict):
            self.problems.append(
                PluginProblem(info.name, info.source, "yunnao_capabilities must return a list")
            )
            return
        for item in result:
            if not isinstance(item, Capability):
                self.problems.append(
                    PluginProblem(
                        info.name,
                        info.source,
                        f"yunnao_capabilities returned {_name_of(item)}, not a capability "
                        "(decorate it with @capability)",
                    )
                )
                continue
            other = self.capabilities.get(item.name)
            if other is not None:
                self.problems.append(
                    PluginProblem(
                        info.name,
                        info.source,
                        f"capability {item.name!r} is already provided by plugin {other.plugin!r}",
                    )
                )
                continue
            item.plugin = info.name
            self.capabilities[item.name] = item
            info.capabilities.append(item.name)

    def _collect_runtimes(self, info: PluginInfo, result: Any) -> None:
        if result is None:
            return
        if not isinstance(result, dict):
            self.problems.append(
                PluginProblem(info.name, info.source, "yunnao_runtimes must return a dict")
            )
            return
        for rtype, factory in result.items():
            if rtype in self.runtimes:
                self.problems.append(
                    PluginProblem(
                        info.name, info.source, f"runtime {rtype!r} is already registered"
                    )
                )
                continue
            self.runtimes[rtype] = factory
            info.runtimes.append(rtype)


def _name_of(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return f"{name} ({type(obj).__name__})" if name else repr(obj)[:80]


def _is_module(target: str) -> bool:
    if not all(part.isidentifier() for part in target.split(".")):
        return False
    try:
        return importlib.util.find_spec(target) is not None
    except (ImportError, ValueError):
        return False
