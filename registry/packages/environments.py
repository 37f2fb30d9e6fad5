"""Environments for uploaded packages' dependencies, cached by what they hold.

An uploaded package needs its declared requirements (``Requires-Dist``) but must not
change the node's own environment. Each package version therefore gets an environment
made from the node's base Python, ``python -m venv --without-pip <dir>``, with one
``.pth`` file that adds the node's ``site-packages`` behind the environment's own. The
node's packages (yunnao, pydantic, numpy, mlflow...) are so visible at exactly the
node's versions, and only what the package needs beyond them is installed into the
environment. The package's own code is not installed: it is unpacked separately
(:func:`~yunnao.registry.packages.archive.unpack`) and put on ``sys.path``.

Resolution is pip's, run by the node's Python against the configured package index
only (``index_url``; pip's configuration files and ``PIP_*`` variables are ignored) with
a constraints file of the node's installed distributions (``name==version``): pip sees
the node's packages as installed and keeps them, and a requirement that conflicts with
the node's pins (``numpy<2`` on a node with numpy 2) fails resolution and is refused,
naming the requirement and pip's message. The resolved set (what would be installed
beyond the node's packages) names the environment: ``<root>/<sha256 of the sorted
name==version list and the Python version>``, so packages with the same dependencies
share one. It is built in a temporary folder and renamed into place; of two concurrent
builders of one key, one wins and the other reuses its result.

Installing needs the network (it reaches the index) but runs no department code:
wheels only (``--only-binary :all:``), so no ``setup.py`` of any dependency runs on the
node, and each file is checked against the hash the index gave during resolution
(``--require-hashes``) when the index gives hashes. Nothing here runs the uploaded
package itself: that happens only inside the sandbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from yunnao.plugins.errors import FieldError, Unavailable, ValidationFailed

FIELD = "requirements"
MARKER = "yunnao-env.json"  # written last: a folder without it is not an environment
PTH = "_yunnao_node.pth"
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
TIMEOUT = 600.0  # seconds for one pip run
# pip's own words for an index it could not reach (as opposed to one that answered).
_UNREACHABLE = (
    "Could not fetch URL",
    "NewConnectionError",
    "Max retries exceeded",
    "Connection refused",
    "Temporary failure in name resolution",
    "Read timed out",
    "ProxyError",
    "SSLError",
)
# Variables a pip run keeps from the node's environment (a proxy, certificates).
_PASS = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_CERT",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Environment:
    """A built environment: its key, folder and Python, and what was installed into it."""

    key: str
    path: Path
    installed: tuple[str, ...]  # name==version, sorted: the resolved set

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def applicable(requires_dist: Iterable[str]) -> list[str]:
    """The requirements of ``Requires-Dist`` lines that apply on this node (markers
    evaluated for this Python, extras not requested), markers dropped. A direct
    reference (``name @ URL``) is refused: requirements come from the index only."""
    out: list[str] = []
    for line in requires_dist:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise _refused([line], f"{line!r} is not a valid requirement: {exc}") from None
        if req.url:
            raise _refused(
                [line], f"{line!r} names a URL; requirements come from the package index"
            )
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        out.append(str(req))
    return out


def node_pins() -> list[str]:
    """``name==version`` of every distribution the node's Python sees, first on
    ``sys.path`` winning (as imports do); versions that are not PEP 440 are left out."""
    seen: dict[str, str] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        key = canonicalize_name(name)
        if key in seen:
            continue
        try:
            seen[key] = str(Version(dist.version))
        except (InvalidVersion, TypeError):
            continue
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def node_site_packages() -> list[str]:
    """The node's ``site-packages`` folders (purelib and platlib, when they differ)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib")))


def env_key(installed: Sequence[str]) -> str:
    """The key of an environment holding ``installed`` (``name==version``) on this Python."""
    lines = sorted({*installed, f"python=={platform.python_version()}"})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class Environments:
    """The environment cache under ``root`` (``<data_dir>/packages/envs``)."""

    def __init__(
        self,
        root: Path,
        *,
        index_url: str,
        timeout: float = TIMEOUT,
        cache_dir: Path | None = None,
        retry_backoff: float = 2.0,
    ) -> None:
        self.root = Path(root)
        self.index_url = index_url
        self.timeout = timeout
        self.cache_dir = cache_dir  # pip's download cache; None: no cache
        self.retry_backoff = retry_backoff  # before the one retry of an unreachable index

    # ------------------------------------------------------------ the cache

    def path(self, key: str) -> Path:
        if not KEY_RE.match(key):
            raise ValueError(f"not an environment key: {key!r}")
        return self.root / key

    def get(self, key: str) -> Environment | None:
        """The built environment ``key``, or None."""
        path = self.path(key)
        try:
            info = json.loads((path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Environment(key, path, tuple(info.get("installed", ())))

    def keys(self) -> set[str]:
        """The keys of every built environment."""
        if not self.root.is_dir():
            return set()
        return {
            p.name for p in self.root.iterdir() if KEY_RE.match(p.name) and (p / MARKER).is_file()
        }

    def usage(self) -> tuple[int, int]:
        """How many environments are built, and the bytes their files take on disk."""
        keys = self.keys()
        size = 0
        for key in keys:
            for folder, _dirs, files in os.walk(self.root / key):
                for name in files:
                    with contextlib.suppress(OSError):
                        size += os.lstat(os.path.join(folder, name)).st_blocks * 512
        return len(keys), size

    def remove(self, key: str) -> bool:
        """Remove environment ``key`` (moved aside first, so it disappears at once).
        True when there was one."""
        path = self.path(key)
        if not path.exists():
            return False
        trash = self._scratch() / f"removing-{key}-{uuid.uuid4().hex[:8]}"
        try:
            path.rename(trash)
        except FileNotFoundError:
            return False  # removed concurrently
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def remove_unused(self, keep: set[str]) -> list[str]:
        """Remove every environment whose key is not in ``keep`` (the keys that package
        versions still use); the removed keys. Leftovers of interrupted builds go too."""
        removed = [k for k in sorted(self.keys() - set(keep)) if self.remove(k)]
        scratch = self.root / ".building"
        if scratch.is_dir():
            for leftover in scratch.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        return removed

    # ------------------------------------------------------------ building

    def resolve(self, requirements: Sequence[str], *, log: Log | None = None) -> list[dict]:
        """What installing ``requirements`` would add to the node's packages: pip's
        report entries (``metadata.name``, ``metadata.version``, ``download_info``).
        Raises :class:`ValidationFailed` (field ``requirements``) when they do not
        resolve against the node's pins, :class:`Unavailable` when the index cannot be
        reached."""
        if not requirements:
            return []
        say = log or (lambda _: None)
        say(f"resolving {', '.join(requirements)} against the node's pins")
        with tempfile.TemporaryDirectory(prefix="resolve-", dir=self._scratch()) as tmp:
            report = Path(tmp) / "report.json"
            argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--report", str(report)]
            self._pip([*argv, *self._options(), *requirements], requirements, Path(tmp))
            try:
                data = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise Unavailable(f"pip wrote no readable resolution report: {exc}") from None
        return list(data.get("install", []))

    def ensure(self, requires_dist: Iterable[str], *, log: Log | None = None) -> Environment:
        """The environment for a package declaring ``requires_dist``, built unless one
        with the same resolved set exists. Raises like :meth:`resolve`; a failed build
        leaves nothing behind."""
        say = log or (lambda _: None)
        requirements = applicable(requires_dist)
        report = self.resolve(requirements, log=say)
        installed = sorted(
            f"{canonicalize_name(e['metadata']['name'])}=={e['metadata']['version']}"
            for e in report
        )
        key = env_key(installed)
        found = self.get(key)
        if found is not None:
            say(f"reusing environment {key[:12]} ({len(installed)} distributions)")
            return found
        say(f"building environment {key[:12]}: {', '.join(installed) or 'nothing to add'}")
        tmp = self._scratch() / f"{key}-{uuid.uuid4().hex[:8]}"
        try:
            self._build(tmp, report, requirements)
            marker = {"installed": installed, "requirements": requirements}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            try:
                tmp.rename(self.path(key))
            except OSError:
                if self.get(key) is None:  # not a concurrent builder's success
                    raise
                say(f"environment {key[:12]} was built concurrently; reusing it")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        built = self.get(key)
        if built is None:
            raise Unavailable(f"environment {key[:12]} vanished right after it was built")
        return built

    def _build(self, tmp: Path, report: list[dict], requirements: Sequence[str]) -> None:
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(tmp)],
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if made.returncode != 0:
            raise Unavailable(f"cannot create an environment: {made.stderr.strip()[-2000:]}")
        site = Path(sysconfig.get_path("purelib", vars={"base": str(tmp), "platbase": str(tmp)}))
        site.mkdir(parents=True, exist_ok=True)
        dirs = "; ".join(f"site.addsitedir({p!r})" for p in node_site_packages())
        (site / PTH).write_text(f"import site; {dirs}\n", encoding="utf-8")
        if not report:
            _readable(tmp)
            return
        lines, hashed = [], True
        for entry in report:
            line = f"{canonicalize_name(entry['metadata']['name'])}=={entry['metadata']['version']}"
            digest = ((entry.get("download_info") or {}).get("archive_info") or {}).get("hashes")
            if digest and digest.get("sha256"):
                line += f" --hash=sha256:{digest['sha256']}"
            else:
                hashed = False
            lines.append(line)
        reqs = tmp / "resolved.txt"
        reqs.write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-r", str(reqs)]
        if hashed:
            argv.append("--require-hashes")
        self._pip([*argv, *self._options()], requirements, tmp)
        reqs.unlink()
        _readable(tmp)

    # ------------------------------------------------------------ pip

    def _scratch(self) -> Path:
        scratch = self.root / ".building"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    def _pins_file(self) -> Path:
        text = "\n".join(node_pins()) + "\n"
        path = self.root / ".node-pins.txt"
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return path
        tmp = self._scratch() / f"pins-{uuid.uuid4().hex[:8]}"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    def _options(self) -> list[str]:
        opts = ["--disable-pip-version-check", "--no-input", "--only-binary", ":all:"]
        opts += ["--index-url", self.index_url, "--constraint", str(self._pins_file())]
        opts += ["--retries", "1", "--timeout", "30", "--no-warn-script-location"]
        opts += ["--cache-dir", str(self.cache_dir)] if self.cache_dir else ["--no-cache-dir"]
        return opts

    def _pip(self, argv: list[str], requirements: Sequence[str], home: Path) -> None:
        """Run pip; an index that cannot be reached is tried once more after
        ``retry_backoff`` seconds, then :class:`Unavailable` names it."""
        try:
            self._pip_once(argv, requirements, home)
        except _Unreachable:
            time.sleep(self.retry_backoff)
            try:
                self._pip_once(argv, requirements, home)
            except _Unreachable as exc:
                raise Unavailable(
                    f"the package index {self.index_url} cannot be reached; try again later "
                    f"({exc.args[0]})",
                    extra={"index": self.index_url},
                ) from None

    def _pip_once(self, argv: list[str], requirements: Sequence[str], home: Path) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        env |= {"PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1", "LC_ALL": "C.UTF-8"}
        env |= {k: os.environ[k] for k in _PASS if k in os.environ}
        try:
            done = subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # in order: pip's ERROR lines, then their reasons
                text=True,
                timeout=self.timeout,
                env=env,
                cwd=home,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(
                f"pip did not finish within {self.timeout:.0f} s (is the package index "
                f"{self.index_url} slow?)"
            ) from None
        if done.returncode == 0:
            return
        output = done.stdout
        if any(sign in output for sign in _UNREACHABLE):
            raise _Unreachable(_error_text(output))
        text = _error_text(output)
        lowered = text.lower()
        named = [r for r in requirements if _mentioned(r, lowered)] or list(requirements)
        raise _refused(named, text)


class _Unreachable(Exception):
    """pip could not reach the index (its explanation in ``args[0]``)."""


def _readable(root: Path) -> None:
    """Make everything under ``root`` readable by every user: sandboxed processes run as
    uids of their own, whatever the node's umask was."""
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode | 0o555)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
    os.chmod(root, os.stat(root).st_mode | 0o555)


def _mentioned(requirement: str, lowered_text: str) -> bool:
    name = Requirement(requirement).name
    words = {name.lower(), canonicalize_name(name), name.lower().replace("-", "_")}
    return any(re.search(rf"(?<![\w.-]){re.escape(w)}(?![\w.-])", lowered_text) for w in words)


def _error_text(output: str) -> str:
    """pip's explanation: from its first ``ERROR:`` on, without the generic advice."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), 0)
    advice = ("To fix this you could try", "1. loosen", "2. remove", "ERROR: ResolutionImpossible")
    kept = [ln.rstrip() for ln in lines[start:] if ln.strip() and not ln.strip().startswith(advice)]
    text = "\n".join(kept).strip() or output.strip()
    return text[-2000:]


def _refused(requirements: Sequence[str], text: str) -> ValidationFailed:
    listed = ", ".join(requirements)
    return ValidationFailed(
        f"requirement {listed} cannot be installed against the node's pins: {text}",
        errors=[FieldError(FIELD, f"{r}: {text}") for r in requirements],
    )
