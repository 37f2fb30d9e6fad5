"""Publish jobs: an upload's way from a received archive to published versions.

A job is a row (:class:`~yunnao.registry.tables.PublishJob`): created ``queued`` when
the archive has been received (under ``<data_dir>/packages/uploads/<job id>``), claimed
by the node's publisher loop (``running``), its steps appended to ``log`` as they
happen, and finished ``succeeded`` with the versions it published or ``failed`` with a
problem document. Only the uploader and the namespace's writers (and the node's staff)
see a job.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from yunnao.plugins.errors import FieldError, NotFound, PayloadTooLarge, ValidationFailed

from ..access import Action, Entry, Identity, decide
from ..db import row_write
from ..tables import PublishJob, utcnow

JOB = PublishJob.__table__  # type: ignore[attr-defined]
ARCHIVE_SUFFIXES = (".whl", ".tar.gz")
FILENAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


@dataclass(frozen=True)
class Received:
    """An uploaded archive on the node's disk."""

    path: Path
    filename: str
    size: int
    sha256: str


def check_filename(filename: str) -> str:
    """The archive's file name, as the node will keep it: a bare name of safe characters
    ending in a known archive suffix."""
    if (
        not filename
        or len(filename) > 200
        or not set(filename) <= FILENAME_CHARS
        or filename.startswith(".")
        or not filename.endswith(ARCHIVE_SUFFIXES)
    ):
        why = (
            "a file name of letters, digits and ._-+ ending in "
            + ", ".join(ARCHIVE_SUFFIXES)
            + " (a wheel or an sdist)"
        )
        raise ValidationFailed(f"filename: {why}", errors=[FieldError("filename", why)])
    return filename


async def receive(request: Request, dest: Path, filename: str, max_bytes: int) -> Received:
    """Stream the request body to ``dest`` (413 past ``max_bytes``, nothing kept), hashing
    it on the way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the archive of {declared} bytes exceeds the {max_bytes}-byte limit")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with dest.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"the archive exceeds the {max_bytes}-byte limit")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if size == 0:
        dest.unlink(missing_ok=True)
        why = "the request body is the archive, and it is empty"
        raise ValidationFailed(why, errors=[FieldError("file", why)])
    return Received(dest, filename, size, digest.hexdigest())


def caller_of(identity: Identity) -> dict[str, Any]:
    return {"subject": identity.subject, "issuer": identity.issuer, "peer": identity.peer}


def _view(row: Any) -> dict[str, Any]:
    def ts(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "namespace": row.namespace,
        "filename": row.filename,
        "package": row.package_id,
        "status": row.status,
        "log": list(row.log or []),
        "error": row.error,
        "result": row.result,
        "created_at": ts(row.created_at),
        "started_at": ts(row.started_at),
        "finished_at": ts(row.finished_at),
    }


class PublishJobs:
    """The publish jobs of one store."""

    def __init__(self, engine: sa.Engine, uploads: Path) -> None:
        self.engine = engine
        self.uploads = uploads

    def upload_path(self, job_id: str) -> Path:
        return self.uploads / job_id

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(
        self, job_id: str, namespace: str, received: Received, identity: Identity
    ) -> dict[str, Any]:
        now = utcnow()
        with row_write(self.engine) as conn:
            conn.execute(
                sa.insert(JOB).values(
                    id=job_id,
                    namespace=namespace,
                    filename=received.filename,
                    package_id=received.sha256,
                    caller=caller_of(identity),
                    status="queued",
                    log=[
                        {
                            "at": now.isoformat(),
                            "step": "received",
                            "message": (
                                f"{received.filename}: {received.size} bytes, "
                                f"sha256 {received.sha256}"
                            ),
                        }
                    ],
                    created_at=now,
                )
            )
            return _view(conn.execute(sa.select(JOB).where(JOB.c.id == job_id)).one())

    def get(self, identity: Identity, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(JOB).where(JOB.c.id == job_id)).first()
        if row is None or not self._visible(identity, row):
            raise NotFound(f"no publish job {job_id}")
        return _view(row)

    def of_namespace(self, identity: Identity, namespace: str, limit: int = 50) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(JOB)
                .where(JOB.c.namespace == namespace)
                .order_by(JOB.c.created_at.desc())
                .limit(limit)
            ).all()
        return [_view(r) for r in rows if self._visible(identity, r)]

    @staticmethod
    def _visible(identity: Identity, row: Any) -> bool:
        if identity.authenticated and row.caller == caller_of(identity):
            return True
        return decide(identity, Action.PUBLISH, Entry(row.namespace)).allowed

    # ------------------------------------------------------------ the publisher's side

    def claim(self) -> Any | None:
        """The oldest queued job, now running (None when there is none)."""
        with row_write(self.engine) as conn:
            stmt = sa.select(JOB).where(JOB.c.status == "queued").order_by(JOB.c.created_at)
            if self.engine.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = conn.execute(stmt.limit(1)).first()
            if row is None:
                return None
            conn.execute(
                sa.update(JOB)
                .where(JOB.c.id == row.id)
                .values(status="running", started_at=utcnow())
            )
            return conn.execute(sa.select(JOB).where(JOB.c.id == row.id)).one()

    def step(self, job_id: str, step: str, message: str = "") -> None:
        """Append one line to the job's log."""
        with row_write(self.engine) as conn:
            row = conn.execute(sa.select(JOB.c.log).where(JOB.c.id == job_id)).one()
            entry = {"at": utcnow().isoformat(), "step": step, "message": message}
            conn.execute(sa.update(JOB).where(JOB.c.id == job_id).values(log=[*row.log, entry]))

    def finish(
        self,
        job_id: str,
        *,
        result: list[dict[str, Any]] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        with row_write(self.engine) as conn:
            conn.execute(
                sa.update(JOB)
                .where(JOB.c.id == job_id)
                .values(
                    status="failed" if error is not None else "succeeded",
                    result=result,
                    error=error,
                    finished_at=utcnow(),
                )
            )
        self.upload_path(job_id).unlink(missing_ok=True)
