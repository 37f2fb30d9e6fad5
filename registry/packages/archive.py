"""Checking an uploaded plugin distribution before anything reads or runs it.

An author uploads a wheel (``.whl``, a zip) or an sdist (``.tar.gz``). Nothing in it is
trusted, so before the node unpacks a byte it checks, from the archive's directory alone:

- the archive's size (``max_bytes``) and that it is a readable zip or gzipped tar;
- every member name: relative, no ``..`` or ``.`` segments, no empty segments, no
  backslashes, no drive letters, no control characters, no duplicates, no file that is
  also a folder;
- member types: regular files and folders only. Symbolic links, hard links, devices and
  FIFOs are refused outright, wherever they point (a link inside the archive would need
  resolving to prove it harmless; distributions never need one);
- the total size the members unpack to (``max_unpacked_bytes``) and their number, so a
  zip bomb is refused before it is inflated;
- the distribution's name and version, from the file name and from its metadata
  (``*.dist-info/METADATA`` or ``PKG-INFO``), which must agree, and its ``Requires-Dist``.

Every refusal is a :class:`~yunnao.plugins.errors.ValidationFailed` with one
``FieldError`` on field ``file`` naming the exact cause (the member at fault).
:func:`unpack` then extracts a checked wheel, again refusing anything that would land
outside its destination. Sdists are checked but not built here: building runs the
package's own build code, which only ever happens in the sandbox.
"""

from __future__ import annotations

import email.parser
import hashlib
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from yunnao.plugins.errors import FieldError, ValidationFailed

FIELD = "file"
MAX_BYTES = 64 * 1024 * 1024  # the archive as uploaded
MAX_UNPACKED_BYTES = 512 * 1024 * 1024  # what its members unpack to, together
MAX_MEMBERS = 20_000
MAX_METADATA_BYTES = 1024 * 1024
MAX_NAME_CHARS = 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Archive:
    """A checked distribution: what it is, where it lies, and what it declares."""

    path: Path
    kind: Literal["wheel", "sdist"]
    name: str  # as the metadata spells it
    version: str  # as the metadata spells it
    sha256: str  # of the archive's bytes
    size: int
    unpacked_size: int
    members: tuple[str, ...]  # files only, normalized
    requires_dist: tuple[str, ...]  # the Requires-Dist lines, as written
    dist_info: str | None = None  # a wheel's ``name-version.dist-info`` folder

    @property
    def project(self) -> str:
        """The canonical (PEP 503) name: ``Yunnao_Greeting`` -> ``yunnao-greeting``."""
        return canonicalize_name(self.name)


def refuse(cause: str) -> ValidationFailed:
    """The error for an archive refused because of ``cause``."""
    return ValidationFailed(
        f"the uploaded archive is refused: {cause}", errors=[FieldError(FIELD, cause)]
    )


def check_archive(
    path: Path,
    *,
    filename: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Archive:
    """Check the distribution at ``path`` without extracting it. ``filename`` is its name
    as uploaded (``*.whl`` or ``*.tar.gz``; default: the name of ``path``). Raises
    :class:`ValidationFailed` (field ``file``)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise refuse(f"the archive is {size} bytes, over the limit of {max_bytes} bytes")
    filename = filename or path.name
    if filename.endswith(".whl"):
        kind: Literal["wheel", "sdist"] = "wheel"
        try:
            file_name, file_version, _, _ = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise refuse(f"{filename!r} is not a valid wheel file name: {exc}") from None
    elif filename.endswith(".tar.gz"):
        kind = "sdist"
        try:
            file_name, file_version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion) as exc:
            raise refuse(f"{filename!r} is not a valid sdist file name: {exc}") from None
    else:
        raise refuse(f"{filename!r} is neither a wheel (.whl) nor an sdist (.tar.gz)")
    limits = _Limits(max_unpacked_bytes, max_members)
    if kind == "wheel":
        members, metadata, dist_info = _check_zip(path, limits, file_name, file_version)
    else:
        members, metadata = _check_tar(path, limits, file_name, file_version)
        dist_info = None
    headers = email.parser.BytesHeaderParser().parsebytes(metadata)
    name, version = headers.get("Name"), headers.get("Version")
    where = f"{dist_info}/METADATA" if dist_info else "PKG-INFO"
    if not name or not version:
        raise refuse(f"{where} has no Name or no Version")
    name, version = str(name).strip(), str(version).strip()
    try:
        meta_version = Version(version)
    except InvalidVersion:
        raise refuse(f"{where}: version {version!r} is not a valid version") from None
    if canonicalize_name(name) != file_name or meta_version != file_version:
        raise refuse(
            f"the file name says {file_name} {file_version} but {where} says {name} {version}"
        )
    requires = tuple(str(r).strip() for r in headers.get_all("Requires-Dist") or ())
    for line in requires:
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise refuse(f"{where}: invalid Requires-Dist {line!r}: {exc}") from None
    return Archive(
        path=path,
        kind=kind,
        name=name,
        version=version,
        sha256=_sha256(path),
        size=size,
        unpacked_size=limits.total,
        members=tuple(members),
        requires_dist=requires,
        dist_info=dist_info,
    )


def unpack(archive: Archive, dest: Path) -> Path:
    """Extract a checked wheel into the empty or missing folder ``dest``, as an installer
    would lay out its ``purelib``/``platlib`` (the ``*.data/purelib`` contents at the top).
    Files are written 0644 (0755 when the archive marks them executable); nothing is
    overwritten and nothing lands outside ``dest``. Returns ``dest``."""
    if archive.kind != "wheel":
        raise ValueError("an sdist is built into a wheel first (builder.build_wheel)")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    with zipfile.ZipFile(archive.path) as zf:
        for info in zf.infolist():
            name = _normalized(info.filename)
            if info.is_dir():
                continue
            target = _inside(root, _installed_path(name, archive.dist_info))
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            if target.exists():
                raise refuse(f"member {name!r} would overwrite another member once installed")
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > archive.unpacked_size:  # the sizes in the directory lied
                        raise refuse(f"{name} unpacks to more than its declared size")
                    out.write(chunk)
            target.chmod(mode)
    for folder in dest.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    dest.chmod(0o755)
    return dest


def unpack_sdist(archive: Archive, dest: Path) -> Path:
    """Extract a checked sdist into the empty or missing folder ``dest``: regular files
    (0644) and folders (0755) only, nothing outside ``dest``. Returns its top-level
    ``name-version`` folder, the source tree to build."""
    if archive.kind != "sdist":
        raise ValueError("not an sdist")
    root = extract_tar(archive.path, "r:gz", dest, archive.unpacked_size, _tar_name)
    (top,) = {n.split("/")[0] for n in archive.members}
    return root / top


def extract_tar(
    path: Path,
    mode: str,
    dest: Path,
    limit: int,
    name_of: Callable[[tarfile.TarInfo], str | None],
) -> Path:
    """Extract a checked tar archive into the empty or missing folder ``dest``: regular
    files (0644) and folders (0755) only, under the names ``name_of`` gives its members
    (None: skipped), nothing outside ``dest`` and no more than ``limit`` bytes in all.
    Returns ``dest`` resolved."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    with tarfile.open(path, mode=mode) as tf:
        for member in _members(tf):
            name = name_of(member)
            if name is None:
                continue
            target = _inside(root, name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isreg():
                raise refuse(f"member {name!r} is not a regular file")  # checked before
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            if src is None:
                raise refuse(f"member {name!r} cannot be read")
            with src, open(target, "xb") as out:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > limit:
                        raise refuse(f"{name} unpacks to more than its declared size")
                    out.write(chunk)
            target.chmod(0o644)
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)
    return root


def checked_members(
    tf: tarfile.TarFile,
    name_of: Callable[[tarfile.TarInfo], str | None],
    tree: _Tree,
    limits: _Limits,
) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """The members of ``tf`` with the checked names ``name_of`` gives them (None:
    skipped), read from their headers alone: links and special files refused, each name
    entered in ``tree`` (no duplicates, no file that is also a folder) and its size in
    ``limits``."""
    for member in _members(tf):
        name = name_of(member)
        if name is None:
            continue
        if member.issym() or member.islnk():
            raise refuse(
                f"member {name!r} is a link (to {member.linkname!r}); links are not "
                "accepted, wherever they point"
            )
        if not (member.isreg() or member.isdir()):
            raise refuse(f"member {name!r} is a special file (device, FIFO...)")
        tree.add(name, is_dir=member.isdir())
        limits.add(name, member.size)
        yield name, member


def read_small(tf: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> bytes:
    """The bytes of the regular file ``member`` (named ``name``), a metadata file:
    refused when over ``MAX_METADATA_BYTES``."""
    if member.size > MAX_METADATA_BYTES:
        raise refuse(f"{name} is over {MAX_METADATA_BYTES} bytes")
    fh = tf.extractfile(member)
    return fh.read() if fh else b""


# ---------------------------------------------------------------- internals


@dataclass
class _Limits:
    max_unpacked: int
    max_members: int
    total: int = 0
    count: int = 0

    def add(self, name: str, size: int) -> None:
        self.count += 1
        if self.count > self.max_members:
            raise refuse(f"the archive has more than {self.max_members} members")
        self.total += size
        if self.total > self.max_unpacked:
            raise refuse(
                f"the members unpack to more than {self.max_unpacked} bytes (at {name}): "
                "a compression bomb or simply too large"
            )


def _normalized(raw: str) -> str:
    """``raw`` as a safe relative path (folders without their trailing ``/``), or a
    refusal naming it."""
    if not raw or len(raw) > MAX_NAME_CHARS:
        raise refuse(f"a member has an empty or over-long name ({raw[:80]!r})")
    if _CONTROL.search(raw):
        raise refuse(f"member {raw!r} has control characters in its name")
    if "\\" in raw:
        raise refuse(f"member {raw!r} has a backslash in its name")
    if raw.startswith("/"):
        raise refuse(f"member {raw!r} is an absolute path")
    if _DRIVE.match(raw):
        raise refuse(f"member {raw!r} names a drive")
    name = raw[:-1] if raw.endswith("/") else raw
    parts = name.split("/")
    if ".." in parts:
        raise refuse(f"member {raw!r} leads out of the archive (..)")
    if any(p in ("", ".") for p in parts):
        raise refuse(f"member {raw!r} has an empty or '.' path segment")
    return name


class _Tree:
    """The names seen so far: no duplicates, no file that is also a folder."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def add(self, name: str, *, is_dir: bool) -> None:
        if name in self.files or (not is_dir and name in self.dirs):
            raise refuse(f"member {name!r} appears twice")
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise refuse(f"member {name!r} lies under {parent!r}, which is a file")
            self.dirs.add(parent)
        (self.dirs if is_dir else self.files).add(name)


def _check_zip(
    path: Path, limits: _Limits, file_name: str, file_version: Version
) -> tuple[list[str], bytes, str]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise refuse(f"not a readable zip archive: {exc}") from None
    with zf:
        tree = _Tree()
        for info in zf.infolist():
            name = _normalized(info.filename)
            mode = info.external_attr >> 16  # a Unix mode, when made on Unix
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                raise refuse(f"member {name!r} is {what}; only files and folders are accepted")
            if info.flag_bits & 0x1:
                raise refuse(f"member {name!r} is encrypted")
            tree.add(name, is_dir=info.is_dir())
            limits.add(name, info.file_size)
        infos = [i for i in tree.dirs if "/" not in i and i.endswith(".dist-info")]
        if len(infos) != 1:
            raise refuse(f"a wheel has exactly one top-level *.dist-info folder, not {len(infos)}")
        dist_info = infos[0]
        if not _names(dist_info.removesuffix(".dist-info"), file_name, file_version):
            raise refuse(f"the wheel's {dist_info} does not match its file name")
        metadata = f"{dist_info}/METADATA"
        if metadata not in tree.files:
            raise refuse(f"{metadata} is missing")
        info = zf.getinfo(metadata)
        if info.file_size > MAX_METADATA_BYTES:
            raise refuse(f"{metadata} is over {MAX_METADATA_BYTES} bytes")
        try:
            data = zf.read(info)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise refuse(f"{metadata} cannot be read: {exc}") from None
    return sorted(tree.files), data, dist_info


def _check_tar(
    path: Path, limits: _Limits, file_name: str, file_version: Version
) -> tuple[list[str], bytes]:
    tree = _Tree()
    metadata: bytes | None = None
    try:
        with tarfile.open(path, mode="r:gz") as tf:
            for name, member in checked_members(tf, _tar_name, tree, limits):
                parts = name.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isreg():
                    metadata = read_small(tf, member, name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise refuse(f"not a readable .tar.gz archive: {exc}") from None
    tops = {n.split("/")[0] for n in tree.files | tree.dirs}
    if len(tops) != 1:
        raise refuse("an sdist holds exactly one top-level folder, name-version/")
    (top,) = tops
    if not _names(top, file_name, file_version):
        raise refuse(f"the sdist's top-level folder {top!r} does not match its file name")
    if metadata is None:
        raise refuse(f"{top}/PKG-INFO is missing")
    return sorted(tree.files), metadata


def _names(stem: str, file_name: str, file_version: Version) -> bool:
    """Whether ``stem`` (``name-version``, inside the archive) names the distribution
    the archive's file name does (``file_name`` canonical)."""
    name, _, version = stem.rpartition("-")
    try:
        return canonicalize_name(name) == file_name and Version(version) == file_version
    except InvalidVersion:
        return False


def _tar_name(member: tarfile.TarInfo) -> str:
    return _normalized(member.name)


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tf.next()) is not None:
        yield member


def _installed_path(name: str, dist_info: str | None) -> str:
    """Where a wheel member goes: ``x.data/purelib/a/b`` and ``platlib`` to ``a/b``."""
    parts = name.split("/")
    if len(parts) > 2 and parts[0].endswith(".data") and parts[1] in ("purelib", "platlib"):
        return "/".join(parts[2:])
    return name


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root) or target == root:
        raise refuse(f"member {name!r} would land outside the package folder")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def remove(path: Path) -> None:
    """Remove an unpacked package folder (or a file) and everything in it."""
    if Path(path).is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)
