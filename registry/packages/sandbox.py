"""The sandbox a department's code runs in: a bubblewrap (``bwrap``) container.

Uploaded code runs only here, both when the node inspects a package it was sent and
when a worker serves its capabilities. Inside the sandbox a process sees:

- the Python it runs on, the system's ``/usr``, and the paths it is given, all read-only
  (an environment, the package's code, a version's model files);
- a private, empty ``/tmp`` (its only writable place, in memory, no larger than the
  memory limit) and its own ``/proc`` and ``/dev``;
- no network (its own network namespace holds only a loopback device) unless asked;
- no other process (its own PID namespace), none of the node's files: not its data
  directory, key, store, nor another version's model files.

It runs as an unprivileged user of its own (a uid no other sandbox of this node uses),
without capabilities and with ``no_new_privs``, under the resource limits of
:class:`Limits` (address space, CPU seconds, processes, open files). Because the
process limit counts the processes of one uid, a fork bomb exhausts only its own.

Where ``bwrap`` is missing, uploaded code runs only if the operator has said it trusts
it (``YUNNAO_SANDBOX=off``): :func:`command` then applies the resource limits alone.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Sandboxed processes run as uids from this range, one per sandbox key; nothing on the
# machine is expected to use them.
UID_BASE = 200_000
UID_SPAN = 100_000

# What every sandbox sees of the system, read-only (those that exist here).
SYSTEM_PATHS = ("/usr", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ssl", "/etc/localtime")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process (and what it starts)."""

    memory_mb: int = 2048  # address space; numpy and friends map a lot of it
    cpu_seconds: int = 3600  # CPU time of the process over its life
    processes: int = 64  # processes and threads of its uid
    open_files: int = 256

    def prlimit(self) -> list[str]:
        """The ``prlimit`` arguments that apply these limits."""
        return [
            f"--as={self.memory_mb * 1024 * 1024}",
            f"--cpu={self.cpu_seconds}",
            f"--nproc={self.processes}",
            f"--nofile={self.open_files}",
        ]


@dataclass(frozen=True)
class Sandbox:
    """One sandboxed process: what it may read, whether it may use the network, its
    limits and whose uid it runs as (``key``: e.g. the package version it serves)."""

    key: str
    read_only: tuple[Path, ...] = ()
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def uid(self) -> int:
        digest = hashlib.sha256(self.key.encode()).digest()
        return UID_BASE + int.from_bytes(digest[:4], "big") % UID_SPAN


@functools.cache
def bwrap() -> str | None:
    """The ``bwrap`` executable, or None where bubblewrap is not installed."""
    return shutil.which("bwrap")


def python_prefix() -> Path:
    """The installation the node's Python (and every environment made from it) runs on."""
    return Path(sys.base_prefix).resolve()


@functools.cache
def node_code() -> tuple[Path, ...]:
    """Where the node's own Python code is, which sandboxed processes import (the SDK, the
    worker, the inspector): the environment the node runs in, and the ``yunnao``
    packages' folders when they live outside it (an editable install). Code only: the
    node's data directory is never among them."""
    import importlib

    env = Path(sys.prefix).resolve()
    paths = [env]
    for name in ("yunnao", "yunnao.plugins", "yunnao.registry", "yunnao.runtimes"):
        folder = Path(importlib.import_module(name).__file__ or "").resolve().parent
        if not folder.is_relative_to(env):
            paths.append(folder)
    return tuple(paths)


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if str(p) != "/"]


def command(sandbox: Sandbox, argv: list[str], *, enforce: bool = True) -> list[str]:
    """The command line that runs ``argv`` in ``sandbox``. Without ``enforce`` (the
    operator trusts uploaded code on a machine without bubblewrap) only the resource
    limits apply. Raises ``RuntimeError`` when sandboxing is enforced and bwrap is
    missing."""
    limits = ["prlimit", *sandbox.limits.prlimit(), "--"]
    if not enforce:
        return [*limits, *argv]
    exe = bwrap()
    if exe is None:
        raise RuntimeError("bubblewrap (bwrap) is not installed: uploaded code cannot run")
    args = [exe, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
    args += ["--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.network:
        args.append("--unshare-net")
    args += ["--perms", "0755", "--dir", "/etc"]  # else made 0700: /etc/ssl... unreachable
    for path in SYSTEM_PATHS:
        if Path(path).exists():
            args += ["--ro-bind", path, path]
    for link, target in (("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        if Path(link).is_symlink():
            args += ["--symlink", target, link]
        elif Path(link).exists():
            args += ["--ro-bind", link, link]
    # The private /tmp first: mounted after them, it would hide given paths under /tmp.
    # It lives in the host's memory, so it is no larger than the memory limit.
    tmp_size = str(sandbox.limits.memory_mb * 1024 * 1024)
    args += ["--perms", "1777", "--size", tmp_size, "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/tmp")}
    for path in (python_prefix(), *node_code(), *sandbox.read_only):
        path = Path(path).resolve()
        # bwrap makes missing parents mode 0700, which the sandbox's user cannot cross.
        for parent in _parents(path):
            if parent not in made and not any(str(parent).startswith(s) for s in SYSTEM_PATHS):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    args += ["--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--chdir", "/tmp"]
    for name, value in sandbox.env:
        args += ["--setenv", name, value]
    uid = str(sandbox.uid)
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [*args, *drop, *limits, *argv]
