"""Uploaded packages, node side: archive checks, environments from a real package index,
and inspection of the package's plugins in the real sandbox (bubblewrap).

Every wheel here is built in the test (a zip laid out by hand, with a valid RECORD), and
the package index is a real PEP 503 "simple" tree served by ``python -m http.server``,
holding a small pure-Python dependency the node's own environment does not have.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import socket
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from yunnao.plugins.errors import ValidationFailed
from yunnao.registry.packages import archive as archives
from yunnao.registry.packages.builder import build_wheel as build_from_sdist
from yunnao.registry.packages.environments import Environments, env_key
from yunnao.registry.packages.inspection import inspect_package

DEP = "yunnao-testdep-greeting"
DEP_MODULE = "yunnao_testdep_greeting"


# ---------------------------------------------------------------- building distributions


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def build_wheel(
    dest: Path,
    name: str,
    version: str,
    files: dict[str, str | bytes],
    *,
    requires: tuple[str, ...] = (),
    plugins: dict[str, str] | None = None,
    metadata_name: str | None = None,
    raw: tuple[tuple[zipfile.ZipInfo, bytes], ...] = (),
) -> Path:
    """A py3-none-any wheel of ``files`` (path -> content), laid out as a build backend
    would: METADATA, WHEEL, entry points of group ``yunnao``, RECORD. ``raw`` members are
    written as given, to make malformed archives."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {metadata_name or name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    members: dict[str, bytes] = {
        k: v.encode() if isinstance(v, str) else v for k, v in files.items()
    }
    members[f"{info}/METADATA"] = meta.encode()
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if plugins:
        lines = "".join(f"{k} = {v}\n" for k, v in plugins.items())
        members[f"{info}/entry_points.txt"] = f"[yunnao]\n{lines}".encode()
    record = "".join(f"{k},{_record_hash(v)},{len(v)}\n" for k, v in members.items())
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        for zinfo, data in raw:
            zf.writestr(zinfo, data)
    return path


def build_sdist(
    dest: Path,
    name: str,
    version: str,
    members: list[tarfile.TarInfo] = (),  # type: ignore[assignment]
    files: dict[str, str] | None = None,
) -> Path:
    """An sdist ``name-version.tar.gz`` with a PKG-INFO, ``files`` (path under the
    top-level folder -> text) and the given raw members (filled with ``x``)."""
    top = f"{name.replace('-', '_')}-{version}"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{top}.tar.gz"
    texts = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
    with tarfile.open(path, "w:gz") as tf:
        for rel, text in {**texts, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
        for member in members:
            tf.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


PYPROJECT = f"""
[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "dept-hello"
version = "1.0.0"
dependencies = ["{DEP}>=1.0"]

[project.entry-points.yunnao]
dept_hello = "dept_hello"

[tool.setuptools]
packages = ["dept_hello"]

[tool.setuptools.package-data]
dept_hello = ["*.json"]
"""


PLUGIN = """
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from yunnao.plugins import capability, hookimpl
from yunnao_testdep_greeting import greet

print("dept_hello imported")  # the inspector's report on stdout must survive this

class Greeting(BaseModel):
    text: str
    polite: bool


@capability(
    name="greet",
    title="问候",
    version="1.0.0",
    summary="Greets someone, through a dependency the node does not have",
    tags=["greeting"],
    examples=[{"input": {"name": "Qingdao"}, "output": {"text": "hello, Qingdao", "polite": True}}],
)
def greet_someone(name: str) -> Greeting:
    return Greeting(text=greet(name), polite=True)


@capability(
    name="weights",
    title="权重",
    version="2.0.0",
    artifacts={"weights": "weights.json"},
    examples=[{"input": {"key": "a"}, "output": 1.5}],
)
class Weights:
    def __init__(self, artifacts: dict[str, Path]) -> None:
        self.table = json.loads(artifacts["weights"].read_text())

    def __call__(self, key: str) -> float:
        return self.table[key]


@hookimpl
def yunnao_capabilities():
    return [greet_someone, Weights]
"""


def plugin_source(*, broken: str = "") -> str:
    """The plugin's code; ``broken`` is appended to the greeting's result (``.upper()``)."""
    return PLUGIN.replace("text=greet(name)", f"text=greet(name){broken}")


# The node has yunnao and pydantic: they are kept, not fetched; an extra's requirement
# (not requested) is left out.
TEST_EXTRA = "yunnao-testdep-not-in-the-index; extra == 'test'"


def dept_wheel(dest: Path, *, name: str = "dept-hello", module: str = "dept_hello", **kw) -> Path:
    source = kw.pop("source", None) or plugin_source()
    return build_wheel(
        dest,
        name,
        kw.pop("version", "1.0.0"),
        {f"{module}/__init__.py": source, f"{module}/weights.json": '{"a": 1.5}'},
        requires=kw.pop("requires", (f"{DEP}>=1.0", "yunnao>=0.1", "pydantic>=2", TEST_EXTRA)),
        plugins={"dept_hello": module},
        **kw,
    )


# ---------------------------------------------------------------- a real package index


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PEP 503 index at http://127.0.0.1:<port>/simple/ holding the greeting
    dependency and a stand-in ``numpy`` 1.26.0 (to conflict with the node's numpy 2)."""
    root = tmp_path_factory.mktemp("index")
    files = root / "files"
    wheels = [
        build_wheel(
            files,
            DEP,
            "1.0.0",
            {f"{DEP_MODULE}/__init__.py": "def greet(name):\n    return f'hello, {name}'\n"},
        ),
        build_wheel(files, "numpy", "1.26.0", {"numpy_standin/__init__.py": ""}),
    ]
    for wheel in wheels:
        project = wheel.name.split("-")[0].replace("_", "-")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        page = root / "simple" / project
        page.mkdir(parents=True)
        link = f'<a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a>'
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}{DEP}/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("the package index did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def envs(tmp_path: Path, index: str) -> Environments:
    return Environments(tmp_path / "envs", index_url=index)


def leftovers(envs: Environments) -> list[str]:
    """What a refused package left in the environment cache (pins file aside)."""
    building = envs.root / ".building"
    found = [p.name for p in envs.root.iterdir() if not p.name.startswith(".")]
    return found + ([p.name for p in building.iterdir()] if building.is_dir() else [])


def checked(path: Path, tmp_path: Path) -> tuple[archives.Archive, Path]:
    checked = archives.check_archive(path, max_bytes=1024 * 1024)
    return checked, archives.unpack(checked, tmp_path / "pkg")


def refusal(exc: pytest.ExceptionInfo[ValidationFailed]) -> str:
    return "\n".join(f"{e.field}: {e.message}" for e in exc.value.errors)


# ---------------------------------------------------------------- archives


def test_a_good_wheel_is_checked_and_unpacked(tmp_path: Path) -> None:
    wheel = dept_wheel(tmp_path / "dist")
    found, unpacked = checked(wheel, tmp_path)
    assert (found.kind, found.name, found.version) == ("wheel", "dept-hello", "1.0.0")
    assert found.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert found.requires_dist[0] == f"{DEP}>=1.0"
    assert found.dist_info == "dept_hello-1.0.0.dist-info"
    assert "dept_hello/weights.json" in found.members
    assert (unpacked / "dept_hello" / "__init__.py").is_file()
    assert stat.S_IMODE((unpacked / "dept_hello" / "weights.json").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("member", "cause"),
    [
        ("../evil.py", "leads out of the archive"),
        ("dept_hello/../../evil.py", "leads out of the archive"),
        ("/etc/cron.d/evil", "is an absolute path"),
        ("C:/evil.py", "names a drive"),
        ("dept_hello\\..\\evil.py", "backslash"),
        ("dept_hello/__init__.py", "appears twice"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, when making the duplicate
def test_member_names_that_could_escape_are_refused(
    tmp_path: Path, member: str, cause: str
) -> None:
    wheel = dept_wheel(tmp_path, raw=((zipfile.ZipInfo(member), b"boom"),))
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(wheel)
    assert exc.value.errors[0].field == "file"
    assert cause in refusal(exc) and repr(member) in refusal(exc)
    assert not (tmp_path.parent / "evil.py").exists()


def test_a_symlink_in_a_wheel_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("dept_hello/key.pem")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    wheel = dept_wheel(tmp_path, raw=((link, b"/srv/yunnao/node_key.pem"),))
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(wheel)
    assert "'dept_hello/key.pem' is a symbolic link" in refusal(exc)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_in_an_sdist_are_refused(tmp_path: Path, kind: bytes) -> None:
    member = tarfile.TarInfo("dept_hello-1.0.0/dept_hello/key.pem")
    member.type = kind
    member.linkname = "../../../srv/yunnao/node_key.pem"
    sdist = build_sdist(tmp_path, "dept-hello", "1.0.0", [member])
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(sdist)
    assert "dept_hello-1.0.0/dept_hello/key.pem" in refusal(exc)
    assert ("is a link" if kind != tarfile.CHRTYPE else "special file") in refusal(exc)


def test_a_plain_sdist_is_checked(tmp_path: Path) -> None:
    code = tarfile.TarInfo("dept_hello-1.0.0/dept_hello/__init__.py")
    code.size = 10
    found = archives.check_archive(build_sdist(tmp_path, "dept-hello", "1.0.0", [code]))
    assert (found.kind, found.name, found.version) == ("sdist", "dept-hello", "1.0.0")
    assert found.members == ("dept_hello-1.0.0/PKG-INFO", "dept_hello-1.0.0/dept_hello/__init__.py")
    with pytest.raises(ValueError, match="built into a wheel first"):
        archives.unpack(found, tmp_path / "pkg")


def test_an_archive_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    wheel = dept_wheel(tmp_path)
    size = wheel.stat().st_size
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(wheel, max_bytes=size - 1)
    assert f"the archive is {size} bytes, over the limit of {size - 1} bytes" in refusal(exc)


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    bomb = zipfile.ZipInfo("dept_hello/zeros.bin")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    wheel = dept_wheel(tmp_path, raw=((bomb, b"\0" * (64 * 1024 * 1024)),))
    assert wheel.stat().st_size < 1024 * 1024  # 64 MiB of zeros squeezed into ~64 KiB
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(wheel, max_unpacked_bytes=16 * 1024 * 1024)
    assert "unpack to more than 16777216 bytes (at dept_hello/zeros.bin)" in refusal(exc)


def test_a_name_or_version_that_disagrees_with_the_metadata_is_refused(tmp_path: Path) -> None:
    wheel = dept_wheel(tmp_path, metadata_name="city-payroll")
    with pytest.raises(ValidationFailed) as exc:
        archives.check_archive(wheel)
    assert "the file name says dept-hello 1.0.0 but" in refusal(exc)
    assert "METADATA says city-payroll 1.0.0" in refusal(exc)
    renamed = wheel.rename(tmp_path / "dept_hello-1.0.1-py3-none-any.whl")
    with pytest.raises(ValidationFailed, match="does not match its file name"):
        archives.check_archive(renamed)


def test_an_upload_is_checked_under_the_name_it_was_sent_with(tmp_path: Path) -> None:
    stored = dept_wheel(tmp_path).rename(tmp_path / "3f2a9c")  # uploads/<job id>
    found = archives.check_archive(stored, filename="dept_hello-1.0.0-py3-none-any.whl")
    assert (found.path, found.kind, found.name) == (stored, "wheel", "dept-hello")


def test_what_is_not_a_distribution_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "dept_hello-1.0.0-py3-none-any.whl"
    text.write_text("not a zip")
    with pytest.raises(ValidationFailed, match="not a readable zip archive"):
        archives.check_archive(text)
    other = tmp_path / "dept_hello.zip"
    other.write_text("x")
    with pytest.raises(ValidationFailed, match="neither a wheel"):
        archives.check_archive(other)


# ---------------------------------------------------------------- environments + inspection


@pytest.mark.slow
def test_a_good_package_gets_an_environment_and_passes_inspection(
    tmp_path: Path, envs: Environments
) -> None:
    assert importlib.util.find_spec(DEP_MODULE) is None  # the node does not have it
    found, unpacked = checked(dept_wheel(tmp_path / "dist"), tmp_path)
    steps: list[str] = []
    env = envs.ensure(found.requires_dist, log=steps.append)
    assert env.installed == (f"{DEP}==1.0.0",)
    assert env.key == env_key([f"{DEP}==1.0.0"])
    assert env.path == envs.root / env.key and envs.keys() == {env.key}
    assert any("building environment" in s for s in steps)
    inspection = inspect_package(unpacked, found.dist_info or "", env, key="dept-hello@1.0.0")
    assert inspection.distribution.name == "dept-hello"
    greet, weights = sorted(inspection.capabilities, key=lambda c: c.name)
    assert (greet.name, greet.version, greet.title, greet.plugin) == (
        "greet",
        "1.0.0",
        "问候",
        "dept_hello",
    )
    assert greet.entry == "dept_hello:greet_someone" and greet.code == "dept_hello"
    assert greet.input_schema["properties"]["name"]["type"] == "string"
    assert [r.ok for r in greet.example_results] == [True]
    assert weights.artifacts == {"weights": "dept_hello/weights.json"}
    assert weights.entry == "dept_hello:Weights"
    assert [r.ok for r in weights.example_results] == [True]

    # Another package with the same dependencies reuses the environment.
    other, _ = checked(dept_wheel(tmp_path / "dist2", name="dept-other"), tmp_path / "o")
    steps.clear()
    assert envs.ensure(other.requires_dist, log=steps.append).path == env.path
    assert any("reusing environment" in s for s in steps)
    # Removed with its last user.
    assert envs.remove_unused({env.key}) == []
    assert envs.remove_unused(set()) == [env.key]
    assert envs.keys() == set() and leftovers(envs) == []


# The traceback an author gets: from their own code on, paths relative to the package.
TRACEBACK = """Traceback (most recent call last):
  File "dept_hello/__init__.py", line 9, in <module>
    import dept_hello.missing_helper
ModuleNotFoundError: No module named 'dept_hello.missing_helper'
"""


@pytest.mark.slow
def test_an_import_error_is_refused_with_its_traceback(tmp_path: Path, envs: Environments) -> None:
    source = plugin_source().replace(
        "from yunnao_testdep_greeting import greet", "import dept_hello.missing_helper"
    )
    found, unpacked = checked(dept_wheel(tmp_path, source=source), tmp_path)
    env = envs.ensure(found.requires_dist)
    with pytest.raises(ValidationFailed) as exc:
        inspect_package(unpacked, found.dist_info or "", env, key="dept-hello@1.0.0")
    (error,) = exc.value.errors
    assert error.field == "plugins.dept_hello"
    assert "ModuleNotFoundError: No module named 'dept_hello.missing_helper'" in error.message
    assert error.message.endswith(TRACEBACK)
    assert exc.value.extra["problems"][0]["kind"] == "import"
    # The publish that failed releases the environment it made.
    envs.remove_unused(set())
    assert leftovers(envs) == []


@pytest.mark.slow
def test_a_failing_example_is_refused_naming_its_field(tmp_path: Path, envs: Environments) -> None:
    found, unpacked = checked(
        dept_wheel(tmp_path, source=plugin_source(broken=".upper()")), tmp_path
    )
    env = envs.ensure(found.requires_dist)
    with pytest.raises(ValidationFailed) as exc:
        inspect_package(unpacked, found.dist_info or "", env, key="dept-hello@1.0.0")
    (error,) = exc.value.errors
    assert error.field == "capabilities.greet.examples[0].output.text"
    assert error.message == 'expected "hello, Qingdao", got "HELLO, QINGDAO"'
    envs.remove_unused(set())
    assert leftovers(envs) == []


@pytest.mark.slow
def test_a_requirement_that_conflicts_with_the_node_pins_is_refused(
    tmp_path: Path, envs: Environments
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        envs.ensure([f"{DEP}>=1.0", "numpy<2"])
    assert exc.value.errors[0].field == "requirements"
    assert exc.value.errors[0].message.startswith("numpy<2: ")
    assert "The user requested (constraint) numpy==2" in str(exc.value)  # the node's pin
    assert leftovers(envs) == []


@pytest.mark.slow
def test_an_unresolvable_requirement_is_refused(tmp_path: Path, envs: Environments) -> None:
    with pytest.raises(ValidationFailed) as exc:
        envs.ensure([f"{DEP}>=1.0", "yunnao-testdep-missing>=3"])
    assert [e.field for e in exc.value.errors] == ["requirements"]
    assert exc.value.errors[0].message.startswith("yunnao-testdep-missing>=3: ")
    assert "No matching distribution found for yunnao-testdep-missing" in str(exc.value)
    with pytest.raises(ValidationFailed, match="names a URL"):
        envs.ensure(["evil @ https://example.invalid/evil.whl"])
    assert leftovers(envs) == []


@pytest.mark.slow
def test_an_sdist_is_built_into_a_wheel_in_the_sandbox(tmp_path: Path, envs: Environments) -> None:
    files = {
        "pyproject.toml": PYPROJECT,
        "dept_hello/__init__.py": plugin_source(),
        "dept_hello/weights.json": '{"a": 1.5}',
    }
    sdist = archives.check_archive(build_sdist(tmp_path / "up", "dept-hello", "1.0.0", files=files))
    wheel = build_from_sdist(sdist, tmp_path / "work", key="dept-hello@1.0.0", max_bytes=1 << 20)
    assert (wheel.kind, wheel.name, wheel.version) == ("wheel", "dept-hello", "1.0.0")
    assert wheel.requires_dist == (f"{DEP}>=1.0",)
    assert "dept_hello/weights.json" in wheel.members
    unpacked = archives.unpack(wheel, tmp_path / "pkg")
    env = envs.ensure(wheel.requires_dist)
    inspection = inspect_package(unpacked, wheel.dist_info or "", env, key="dept-hello@1.0.0")
    assert sorted(c.name for c in inspection.capabilities) == ["greet", "weights"]


@pytest.mark.slow
def test_an_sdist_whose_build_fails_is_refused_with_the_reason(tmp_path: Path) -> None:
    files = {
        "pyproject.toml": PYPROJECT,
        "setup.py": "raise RuntimeError('this build refuses to run')\n",
        "dept_hello/__init__.py": "",
    }
    sdist = archives.check_archive(build_sdist(tmp_path / "up", "dept-hello", "1.0.0", files=files))
    with pytest.raises(ValidationFailed) as exc:
        build_from_sdist(sdist, tmp_path / "work", key="dept-hello@1.0.0", max_bytes=1 << 20)
    assert exc.value.errors[0].field == "file"
    assert "RuntimeError: this build refuses to run" in exc.value.errors[0].message


@pytest.mark.slow
def test_a_package_that_hangs_is_stopped_and_the_step_named(
    tmp_path: Path, envs: Environments
) -> None:
    source = "while True:\n    pass\n"
    found, unpacked = checked(dept_wheel(tmp_path, source=source, requires=()), tmp_path)
    env = envs.ensure(found.requires_dist)
    with pytest.raises(ValidationFailed) as exc:
        inspect_package(unpacked, found.dist_info or "", env, key="dept-hello@1.0.0", timeout=3)
    assert str(exc.value) == (
        "inspecting the package did not finish within 3 s; it was importing plugin "
        "dept_hello (dept_hello)"
    )


def test_a_helpers_output_is_capped_and_its_report_read_strictly() -> None:
    from pydantic import BaseModel, ConfigDict

    from yunnao.registry.packages.runner import read_report, run_capped

    class Report(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        n: int

    flood = "import sys; sys.stdout.write('x' * 1_000_000); sys.stderr.write('e' * 200_000)"
    code, out, err, timed_out = run_capped([sys.executable, "-c", flood], 60, 1000)
    assert (code, timed_out) == (0, False)
    assert len(out) == 1001  # just over the cap: the reader can tell it was cut
    assert len(err) < 200_000 and err.endswith(b"e")
    with pytest.raises(ValidationFailed) as exc:
        read_report(out, Report, max_bytes=1000, name="the helper's report")
    assert str(exc.value) == "the helper's report is over 1000 bytes"
    assert exc.value.errors[0].field == "file"
    with pytest.raises(ValidationFailed, match="the helper's report is not valid"):
        read_report(b'{"n": 1, "more": 2}', Report, max_bytes=1000, name="the helper's report")
    assert read_report(b'{"n": 1}', Report, max_bytes=1000, name="the helper's report").n == 1
