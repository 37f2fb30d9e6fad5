"""Checking, unpacking and inspecting an uploaded Bento (the archive ``bentoml export``
writes: a tar, plain or compressed, named ``<name>-<version>.bento``).

Everything in a Bento is untrusted: its ``bento.yaml``, its ``src/`` code, its models and
its requirements. Before anything reads or runs it the node checks, from the archive's
headers alone and with the rules of :mod:`.archive` (size, member names, no ``..``, no
links or special files, unpacked size and count), then reads ``bento.yaml`` strictly
(size-capped, safe YAML, only the fields it needs: ``service``, ``name``, ``version``,
``labels``) and the Python requirements the Bento declares
(``env/python/requirements.in``, else its lock ``requirements.txt``, else
``bento.yaml``'s ``python.packages``; index options are ignored, the node resolves
from its own index). The file name must be ``<name>-<version>.bento`` as ``bento.yaml``
says, and the version a semantic version (``bentoml build --version 1.2.0``): each API
becomes that version of a capability.

:func:`unpack_bento` extracts a checked Bento (files 0644, folders 0755, nothing outside
its destination) under ``<data_dir>/packages/code/<sha256>/bento``; :func:`write_record`
puts the node's own note beside it (``record.json``: the namespace it was uploaded to and
its environment), which the ``bentoml`` runtime reads before serving it.

:func:`inspect_bento` lists the service's APIs as capability specs by importing the
service, which runs the department's code: only ever in the sandbox, with the Bento and
its environment read-only, by ``python -m yunnao.runtimes.adapters.bentoml.inspector``.
Its report is read strictly, with limits, like a package inspector's.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from yunnao.plugins.errors import FieldError, ValidationFailed, field_errors

from .. import schemas
from . import sandbox
from .archive import (
    MAX_BYTES,
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    _Limits,
    _normalized,
    _sha256,
    _Tree,
    checked_members,
    extract_tar,
    read_small,
    refuse,
)
from .environments import Environment
from .runner import failed, read_report, run_capped

SUFFIX = ".bento"
META_LABELS = ("classification", "domain", "kind", "owner", "contact", "license")
INSPECTOR = "yunnao.runtimes.adapters.bentoml.inspector"
RECORD = "record.json"  # the node's note beside an unpacked Bento
TIMEOUT = 120.0
MAX_REPORT = 4 * 1024 * 1024
MAX_REQUIREMENTS = 500
# Index options of a requirements file: ignored, the node's own index is used.
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links",
                  "--trusted-host", "--pre", "--prefer-binary")  # fmt: skip
_SERVICE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?$")
_BENTO_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
_SHA = re.compile(r"^[0-9a-f]{64}$")

# What a sandboxed BentoML process gets: a writable BENTOML_HOME in its private /tmp, no
# usage tracking (it has no network anyway), unbuffered logs.
BENTO_ENV = (
    ("BENTOML_HOME", "/tmp/bentoml"),
    ("BENTOML_DO_NOT_TRACK", "True"),
    ("PYTHONUNBUFFERED", "1"),
)
# BentoML imports a lot (starlette, uvicorn, opentelemetry...) and runs threads.
BENTO_LIMITS = sandbox.Limits(memory_mb=4096, cpu_seconds=3600, processes=128, open_files=1024)


@dataclass(frozen=True)
class CheckedBento:
    """A checked Bento: where it lies, its hash, and what its ``bento.yaml`` says."""

    path: Path
    sha256: str
    size: int
    unpacked_size: int
    members: tuple[str, ...]  # files only, normalized (no leading ./)
    name: str
    version: str
    service: str  # the service reference, e.g. service:NoiseService
    requirements: tuple[str, ...]  # as declared, index options dropped
    labels: tuple[tuple[str, str], ...] = ()  # the string labels of bento.yaml
    kind: str = "bento"


def is_bento(filename: str) -> bool:
    return filename.endswith(SUFFIX)


class _BentoYaml(BaseModel):
    """The fields of ``bento.yaml`` the node reads (the rest it ignores)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    service: Annotated[str, StringConstraints(max_length=200, pattern=_SERVICE.pattern)]
    name: Annotated[str, StringConstraints(max_length=100)]
    version: Annotated[str, StringConstraints(max_length=100)]
    labels: dict[Annotated[str, StringConstraints(max_length=100)], Any] | None = None
    python: dict[str, Any] | None = None  # spec 1 Bentos: python.packages


def check_bento(
    path: Path,
    *,
    filename: str,
    max_bytes: int = MAX_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> CheckedBento:
    """Check the Bento at ``path`` (uploaded as ``filename``) without extracting it.
    Raises :class:`ValidationFailed` naming the cause (field ``file``, or
    ``bento.yaml.<field>``)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise refuse(f"the archive is {size} bytes, over the limit of {max_bytes} bytes")
    if not is_bento(filename):
        raise refuse(f"{filename!r} is not an exported Bento (.bento)")
    limits = _Limits(max_unpacked_bytes, max_members)
    tree = _Tree()
    small: dict[str, bytes] = {}  # bento.yaml and the requirements files
    wanted = ("bento.yaml", "env/python/requirements.in", "env/python/requirements.txt")
    try:
        with tarfile.open(path, mode="r:*") as tf:
            for name, member in checked_members(tf, _member_name, tree, limits):
                if name in wanted and member.isreg():
                    small[name] = read_small(tf, member, name)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise refuse(f"not a readable Bento (a tar archive): {exc}") from None
    if "bento.yaml" not in small:
        raise refuse("bento.yaml is missing: not an exported Bento")
    meta = _read_bento_yaml(small["bento.yaml"])
    if filename != f"{meta.name}-{meta.version}{SUFFIX}":
        raise refuse(
            f"the file name is {filename!r} but bento.yaml says {meta.name} {meta.version} "
            f"(expected {meta.name}-{meta.version}{SUFFIX})"
        )
    requirements = _requirements(small, meta)
    return CheckedBento(
        path=path,
        sha256=_sha256(path),
        size=size,
        unpacked_size=limits.total,
        members=tuple(sorted(tree.files)),
        name=meta.name,
        version=meta.version,
        service=meta.service,
        requirements=requirements,
        labels=tuple(
            (str(k), v) for k, v in sorted((meta.labels or {}).items()) if isinstance(v, str)
        ),
    )


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's checked name, without the ``./`` ``bentoml export`` puts in front;
    None for the archive's root folder itself."""
    raw = member.name
    if raw in (".", "./") and member.isdir():
        return None
    return _normalized(raw[2:] if raw.startswith("./") else raw)


def _yaml_field(field: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"the uploaded Bento is refused: bento.yaml: {field}: {why}",
        errors=[FieldError(f"bento.yaml.{field}" if field else "bento.yaml", why)],
    )


def _read_bento_yaml(data: bytes) -> _BentoYaml:
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise _yaml_field("", f"not valid YAML: {str(exc)[:300]}") from None
    if not isinstance(raw, dict):
        raise _yaml_field("", "not a mapping")
    try:
        meta = _BentoYaml.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "service"
        raise _yaml_field(field, err["msg"]) from None
    if not _BENTO_NAME.match(meta.name):
        raise _yaml_field("name", f"{meta.name!r} is not a Bento name")
    if not _SEMVER.match(meta.version):
        raise _yaml_field(
            "version",
            f"{meta.version!r} is not a semantic version; each API is published as that "
            "version: build with `bentoml build --version 1.0.0`",
        )
    return meta


def _requirements(small: dict[str, bytes], meta: _BentoYaml) -> tuple[str, ...]:
    for where in ("env/python/requirements.in", "env/python/requirements.txt"):
        if where in small:
            text = small[where].decode("utf-8", "replace")
            return _parse_requirements(text.splitlines(), where)
    packages = (meta.python or {}).get("packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise _yaml_field("python.packages", "not a list of requirements")
    return _parse_requirements(packages, "bento.yaml python.packages")


def _parse_requirements(lines: list[str], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = line.split("=", 1)[0].split()[0]
            if option in _INDEX_OPTIONS:
                continue  # the node resolves from its own index
            why = f"{line[:100]!r}: only requirements and index options are accepted"
            raise ValidationFailed(
                f"the uploaded Bento is refused: {where}: {why}",
                errors=[FieldError("requirements", why)],
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            why = f"{line[:100]!r} is not a valid requirement: {exc}"
            raise ValidationFailed(
                f"the uploaded Bento is refused: {where}: {why}",
                errors=[FieldError("requirements", why)],
            ) from None
        out.append(line)
        if len(out) > MAX_REQUIREMENTS:
            raise refuse(f"{where} lists more than {MAX_REQUIREMENTS} requirements")
    return tuple(out)


def unpack_bento(bento: CheckedBento, dest: Path) -> Path:
    """Extract a checked Bento into the empty or missing folder ``dest``: regular files
    (0644) and folders (0755) only, nothing outside ``dest``. Returns ``dest``."""
    extract_tar(bento.path, "r:*", dest, bento.unpacked_size, _member_name)
    return Path(dest)


# ---------------------------------------------------------------- where the node keeps them


def bento_home(root: Path, sha256: str) -> Path:
    """``<root>/code/<sha256>`` (``root``: ``<data_dir>/packages``; where a wheel's code
    goes too, so removing an unused package removes its Bento): the unpacked Bento in
    ``bento/``, the node's record beside it."""
    if not _SHA.match(sha256):
        raise ValueError(f"not a Bento's sha256: {sha256!r}")
    return Path(root) / "code" / sha256


def write_record(home: Path, bento: CheckedBento, *, namespace: str, environment: str) -> None:
    record = {
        "namespace": namespace,
        "environment": environment,
        "name": bento.name,
        "version": bento.version,
        "service": bento.service,
    }
    (home / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")


def read_record(home: Path) -> dict[str, str] | None:
    """The node's record of the Bento kept at ``home``, or None when there is none."""
    try:
        data = json.loads((Path(home) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_bento(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- inspection

Short = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=20_000)]


class BentoApi(BaseModel):
    """One API of the service as the sandboxed inspector reports it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, StringConstraints(max_length=64)]
    api: Short
    title: Short
    summary: Text
    description: Text
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class BentoReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    capabilities: Annotated[list[BentoApi], Field(max_length=200)] = []
    error: Annotated[str, StringConstraints(max_length=20_000)] | None = None


def inspect_bento(
    bento_dir: Path,
    env: Environment | None,
    *,
    key: str,
    timeout: float = TIMEOUT,
    enforce: bool = True,
) -> list[BentoApi]:
    """The APIs of the Bento unpacked at ``bento_dir``, read by importing its service in
    the sandbox (keyed ``key``) on environment ``env`` (None: the node's Python).
    Raises :class:`ValidationFailed` when the service does not load or has no API a
    JSON call can drive."""
    import sys

    bento_dir = Path(bento_dir).resolve()
    read_only = (bento_dir,) if env is None else (bento_dir, env.path.resolve())
    box = sandbox.Sandbox(key=key, read_only=read_only, limits=BENTO_LIMITS, env=BENTO_ENV)
    python = sys.executable if env is None else str(env.python)
    argv = [python, "-I", "-m", INSPECTOR, str(bento_dir)]
    command = sandbox.command(box, argv, enforce=enforce)
    code, out, err, timed_out = run_capped(command, timeout, MAX_REPORT)
    if timed_out:
        raise failed(f"loading the Bento's service did not finish within {timeout:.0f} s")
    if code != 0:
        tail = err.decode("utf-8", "replace").strip()[-4000:]
        raise failed(f"loading the Bento's service exited with status {code}:\n{tail}")
    report = read_report(
        out, BentoReport, max_bytes=MAX_REPORT, name="the Bento inspector's report"
    )
    if report.error:
        raise ValidationFailed(
            f"the Bento's service does not load: {report.error.strip().splitlines()[-1][:500]}",
            errors=[FieldError("bento.yaml.service", report.error)],
        )
    if not report.capabilities:
        raise failed("the Bento's service has no API a JSON call can drive")
    return report.capabilities


def capability_specs(
    bento: CheckedBento, apis: list[BentoApi]
) -> list[tuple[str, schemas.PublishRequest]]:
    """Each API as a version to publish: named after the API, at the Bento's version,
    bound to the uploaded Bento (``{"bento": sha256, "api": ...}``), with the metadata
    the Bento's labels give (``classification``, default internal; ``domain``,
    ``kind``, ``owner``, ``contact``, ``license``; ``tags``, comma-separated).
    ValidationFailed naming the label or API at fault."""
    labels = dict(bento.labels)
    meta: dict[str, Any] = {k: labels[k] for k in META_LABELS if k in labels}
    meta.setdefault("classification", "internal")
    if "tags" in labels:
        meta["tags"] = [t.strip() for t in labels["tags"].split(",") if t.strip()]
    out = []
    for api in apis:
        try:
            spec = schemas.PublishRequest(
                version=bento.version,
                title=api.title,
                summary=api.summary,
                description=api.description,
                input_schema=api.input_schema,
                output_schema=api.output_schema,
                runtime={"type": "bentoml", "config": {"bento": bento.sha256, "api": api.api}},
                **meta,
            )
        except ValidationError as exc:
            errors = []
            for err in field_errors(exc):
                top = err.field.split(".")[0]
                where = f"bento.yaml.labels.{top}" if top in meta else f"apis.{api.api}.{top}"
                errors.append(FieldError(where, err.message))
            raise ValidationFailed(
                f"API {api.api} cannot be published: {errors[0].field}: {errors[0].message}",
                errors=errors,
            ) from None
        out.append((api.name, spec))
    return out
