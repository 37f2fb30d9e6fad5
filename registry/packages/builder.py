"""Building an uploaded sdist into a wheel, in the sandbox.

Building runs the package's own build code (``setup.py``, a build backend's hooks), so
it happens only in the sandbox: :func:`build_wheel` extracts the checked sdist, and
starts ``python -m yunnao.registry.packages.builder <source dir>`` there with the node's
Python, the source read-only, no network and the given limits. Inside, the source is
copied to the private ``/tmp`` and built with ``pip wheel --no-deps
--no-build-isolation --no-index``: the build uses what the node's environment has (its
setuptools and ``wheel``) and downloads nothing, so an sdist whose build needs another
backend is refused, naming pip's error. The wheel comes back on standard output (JSON,
base64) and is then checked like any uploaded wheel (:func:`.archive.check_archive`),
its name and version compared with the sdist's.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from . import archive, sandbox
from .archive import Archive
from .runner import run_capped

MODULE = "yunnao.registry.packages.builder"
TIMEOUT = 300.0


def build_wheel(
    sdist: Archive,
    workdir: Path,
    *,
    key: str,
    max_bytes: int,
    limits: sandbox.Limits | None = None,
    timeout: float = TIMEOUT,
    enforce: bool = True,
) -> Archive:
    """Build the checked ``sdist`` (an :class:`~.archive.Archive`) into a wheel under
    ``workdir``, in a sandbox keyed ``key``; the wheel's checked
    :class:`~.archive.Archive`. Raises :class:`ValidationFailed` (field ``file``) when
    the build fails, runs past ``timeout`` or makes something that is not this
    distribution's wheel."""
    workdir = Path(workdir)
    source = archive.unpack_sdist(sdist, workdir / "sdist")
    box = sandbox.Sandbox(
        key=key,
        read_only=(source,),
        network=False,
        limits=limits or sandbox.Limits(),
        env=(("PIP_CONFIG_FILE", "/dev/null"), ("PIP_NO_INPUT", "1")),
    )
    argv = [sys.executable, "-I", "-m", MODULE, str(source)]
    code, out, err, timed_out = run_capped(
        sandbox.command(box, argv, enforce=enforce), timeout, max_out=max_bytes * 4 // 3 + 4096
    )
    if timed_out:
        raise archive.refuse(f"building the sdist into a wheel took over {timeout:.0f} s")
    log = err.decode("utf-8", "replace").strip()
    if code != 0:
        raise archive.refuse(f"building the sdist into a wheel failed:\n{_explain(log)}")
    try:
        document = json.loads(out)
        name = document["wheel"]
        data = base64.b64decode(document["data"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise archive.refuse("the sdist's build returned no readable wheel") from None
    if not isinstance(name, str) or "/" in name or not name.endswith(".whl") or name[0] == ".":
        raise archive.refuse(f"the sdist's build made {str(name)[:100]!r}, not a wheel")
    path = workdir / name
    path.write_bytes(data)
    wheel = archive.check_archive(path, max_bytes=max_bytes)
    same = canonicalize_name(wheel.name) == sdist.project
    if not same or Version(wheel.version) != Version(sdist.version):
        raise archive.refuse(
            f"the sdist {sdist.name} {sdist.version} built a wheel of {wheel.name} {wheel.version}"
        )
    return wheel


def _explain(log: str) -> str:
    """The end of pip's build log, where the reason is."""
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return "\n".join(lines[-40:])[-4000:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m yunnao.registry.packages.builder <source dir>", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="build-"))
    tree, out = work / "src", work / "out"
    shutil.copytree(args[0], tree)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "--disable-pip-version-check", "--no-input", "--wheel-dir", str(out)]
    built = subprocess.run(
        [*pip, str(tree)],
        stdout=sys.stderr,
        stderr=sys.stderr,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if built.returncode != 0:
        return built.returncode
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        print(f"the build made {len(wheels)} wheels, not one", file=sys.stderr)
        return 3
    data = base64.b64encode(wheels[0].read_bytes()).decode()
    sys.stdout.write(json.dumps({"wheel": wheels[0].name, "data": data}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
