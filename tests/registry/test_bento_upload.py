"""Checking and inspecting an uploaded Bento (registry/packages/bento.py): the archive
rules, ``bento.yaml`` read as untrusted, requirements against the node's pins, and the
service's APIs read in the sandbox (real bwrap)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.registry.test_packages import envs, index  # noqa: F401
from yunnao.plugins.errors import ValidationFailed
from yunnao.registry.packages import bento as bentos
from yunnao.registry.packages import sandbox
from yunnao.registry.packages.environments import Environments

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bento" / "service.py"

BENTO_YAML = """\
service: service:NoiseService
name: noise_service
version: 1.0.0
bentoml_version: 1.4.39
creation_time: '2026-11-29T19:10:32.134889+00:00'
labels:
  classification: public
  tags: noise, environment
models: []
entry_service: NoiseService
services:
- name: NoiseService
  service: ''
  models: []
  dependencies: []
  config:
    workers: 1
envs: []
schema: {}
args: {}
spec: 2
"""


def make_bento(
    dest: Path,
    *,
    filename: str = "noise_service-1.0.0.bento",
    bento_yaml: str = BENTO_YAML,
    requirements: str = "numpy\nbentoml==1.4.39\n",
    service: str | None = None,
    extra: list[tarfile.TarInfo] | None = None,
    mode: str = "w:xz",
) -> Path:
    """A Bento laid out as ``bentoml export`` writes it (members under ``./``)."""
    path = dest / filename
    files = {
        "bento.yaml": bento_yaml,
        "README.md": "noise",
        "env/python/requirements.in": requirements,
        "src/service.py": service if service is not None else EXAMPLE.read_text(),
    }
    with tarfile.open(path, mode) as tf:
        root = tarfile.TarInfo("./")
        root.type, root.mode = tarfile.DIRTYPE, 0o700
        tf.addfile(root)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return path


def refusal(exc: pytest.ExceptionInfo[ValidationFailed]) -> tuple[str, str]:
    err = exc.value.errors[0]
    return err.field, err.message


def test_an_exported_bento_is_checked_and_read(tmp_path: Path) -> None:
    path = make_bento(tmp_path)
    checked = bentos.check_bento(path, filename=path.name)
    assert (checked.name, checked.version, checked.service) == (
        "noise_service",
        "1.0.0",
        "service:NoiseService",
    )
    assert checked.requirements == ("numpy", "bentoml==1.4.39")
    assert "src/service.py" in checked.members and "bento.yaml" in checked.members
    assert dict(checked.labels) == {"classification": "public", "tags": "noise, environment"}
    out = bentos.unpack_bento(checked, tmp_path / "out" / "bento")
    assert (out / "src" / "service.py").read_text() == EXAMPLE.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize(
    "name", ["../evil.py", "./../evil.py", "/etc/passwd", "src/../../x", "a\\b"]
)
def test_member_names_that_could_escape_are_refused(tmp_path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 1
    path = make_bento(tmp_path, extra=[info])
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name)
    assert refusal(exc)[0] == "file"


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("./models/weights")
    info.type, info.linkname = kind, "/work/var/node_key.pem"
    path = make_bento(tmp_path, extra=[info])
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name)
    assert "models/weights" in refusal(exc)[1]


def test_a_bento_over_the_size_limits_is_refused(tmp_path: Path) -> None:
    path = make_bento(tmp_path)
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name, max_bytes=100)
    assert "over the limit" in refusal(exc)[1]
    big = tarfile.TarInfo("./models/big")
    big.size = 2_000_000
    path = make_bento(tmp_path, filename="noise_service-1.0.0.bento", extra=[big])
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name, max_unpacked_bytes=1_000_000)
    assert "unpack to more than" in refusal(exc)[1]


@pytest.mark.parametrize(
    ("bento_yaml", "field", "words"),
    [
        ("- a list", "bento.yaml", "not a mapping"),
        ("service: [1", "bento.yaml", "not valid YAML"),
        (BENTO_YAML.replace("service:NoiseService", "os; rm -rf /"), "bento.yaml.service", ""),
        (BENTO_YAML.replace("version: 1.0.0", "version: qy3g5qxmfcetkax4"),
         "bento.yaml.version", "--version"),
        (BENTO_YAML.replace("name: noise_service\n", ""), "bento.yaml.name", ""),
        (BENTO_YAML.replace("version: 1.0.0", "version: 1"), "bento.yaml.version", ""),
        ("service: !!python/object/apply:os.system ['true']\nname: x\nversion: 1.0.0",
         "bento.yaml", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_bento_yaml_is_refused_naming_its_field(
    tmp_path: Path, bento_yaml: str, field: str, words: str
) -> None:
    path = make_bento(tmp_path, bento_yaml=bento_yaml)
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name)
    assert refusal(exc)[0] == field, refusal(exc)
    assert words in refusal(exc)[1]


def test_a_bento_without_bento_yaml_or_under_another_name_is_refused(tmp_path: Path) -> None:
    path = make_bento(tmp_path, filename="other-1.0.0.bento")
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(path, filename=path.name)
    assert "noise_service-1.0.0.bento" in refusal(exc)[1]
    plain = tmp_path / "noise_service-1.0.0.bento"
    plain.write_bytes(b"not a tar at all")
    with pytest.raises(ValidationFailed) as exc:
        bentos.check_bento(plain, filename=plain.name)
    assert "not a readable Bento" in refusal(exc)[1]


def test_requirement_files_may_not_point_elsewhere(tmp_path: Path) -> None:
    ok = make_bento(tmp_path, requirements="--index-url https://evil.example/simple\nnumpy\n")
    assert bentos.check_bento(ok, filename=ok.name).requirements == ("numpy",)
    for line in ("-r /etc/passwd", "-e /srv/src", "not a requirement!"):
        path = make_bento(tmp_path, requirements=f"{line}\n")
        with pytest.raises(ValidationFailed) as exc:
            bentos.check_bento(path, filename=path.name)
        assert refusal(exc)[0] == "requirements", line


def test_a_requirement_that_conflicts_with_the_node_pins_is_refused(
    tmp_path: Path,
    envs: Environments,  # noqa: F811
) -> None:
    path = make_bento(tmp_path, requirements="numpy<2\n")
    checked = bentos.check_bento(path, filename=path.name)
    with pytest.raises(ValidationFailed) as exc:
        envs.ensure(checked.requirements)
    field, message = refusal(exc)
    assert field == "requirements" and "numpy<2" in message
    assert not envs.keys()


needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap is not installed")


@needs_bwrap
def test_the_service_is_read_in_the_sandbox_as_capability_specs(tmp_path: Path) -> None:
    path = make_bento(tmp_path)
    checked = bentos.check_bento(path, filename=path.name)
    folder = bentos.unpack_bento(checked, tmp_path / "bento")
    apis = bentos.inspect_bento(folder, None, key="test:inspect-bento")
    assert sorted(a.name for a in apis) == ["classify-zone", "noise-level"]
    specs = dict(bentos.capability_specs(checked, apis))
    level = specs["noise-level"]
    assert level.version == "1.0.0" and level.classification == "public"
    assert level.tags == ["noise", "environment"]
    assert level.runtime.model_dump()["config"] == {"bento": checked.sha256, "api": "noise_level"}
    assert level.input_schema["properties"]["readings"]["maxItems"] == 100_000


@needs_bwrap
def test_a_service_that_does_not_import_is_refused_with_its_traceback(tmp_path: Path) -> None:
    path = make_bento(tmp_path, service="import bentoml\nraise RuntimeError('no model here')\n")
    checked = bentos.check_bento(path, filename=path.name)
    folder = bentos.unpack_bento(checked, tmp_path / "bento")
    with pytest.raises(ValidationFailed) as exc:
        bentos.inspect_bento(folder, None, key="test:inspect-bento")
    field, message = refusal(exc)
    assert field == "bento.yaml.service" and "no model here" in message


@needs_bwrap
def test_the_service_cannot_read_the_node_key(tmp_path: Path) -> None:
    """The service's import runs in the sandbox: the node's files are not there."""
    secret = tmp_path / "node_key.pem"
    secret.write_text("SECRET")
    service = EXAMPLE.read_text() + f"\nprint(open({str(secret)!r}).read())\n"
    path = make_bento(tmp_path, service=service)
    checked = bentos.check_bento(path, filename=path.name)
    folder = bentos.unpack_bento(checked, tmp_path / "bento")
    with pytest.raises(ValidationFailed) as exc:
        bentos.inspect_bento(folder, None, key="test:inspect-bento")
    assert "No such file or directory" in refusal(exc)[1]
