"""Publish jobs: an upload's way from a received archive to published versions.

A job is a row (:class:`~yunnao.registry.tables.PublishJob`): created ``queued`` when
the archive has been received (under ``<data_dir>/packages/uploads/<job id>``), claimed
by the node's publisher loop (``running``), its steps appended to ``log`` as they
happen, and finished ``succeeded`` with the versions it published or ``failed`` with a
problem document. Only the uploader and the namespace's writers (and the node's staff)
see a job. The process running a job (``runner``) refreshes ``heartbeat_at`` while it
runs, so a job whose node stopped can be told from one still running elsewhere
(:func:`abandoned`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from yunnao.plugins.errors import FieldError, NotFound, PayloadTooLarge, ValidationFailed

from ..access import Action, Entry, Identity, decide
from ..db import row_write
from ..tables import PublishJob, utcnow

JOB = PublishJob.__table__  # type: ignore[attr-defined]
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".bento")
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
            + " (a wheel, an sdist or an exported Bento)"
        )
        raise ValidationFailed(f"filename: {why}", errors=[FieldError("filename", why)])
    return filename


async def receive(request: Request, dest: Path, filename: str, max_bytes: int) -> Received:
    """Stream the request body to ``dest`` (413 past ``max_bytes``, nothing kept), hashing
    it on the way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the archive of {declared} bytes exceeds the {max_bytes}-byte limit")
    return await save(request.stream(), dest, filename, max_bytes)


async def save(chunks: AsyncIterable[bytes], dest: Path, filename: str, max_bytes: int) -> Received:
    """Write an archive arriving in ``chunks`` to ``dest`` (413 past ``max_bytes``,
    nothing kept), hashing it on the way (the upload route's body, the upload page's
    file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with dest.open("wb") as out:
            async for chunk in chunks:
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

    def claim(self, runner: str | None = None) -> Any | None:
        """The oldest queued job, now running as ``runner``'s (None when there is none).
        Looks first with a read, so an idle node opens no write transaction."""
        with self.engine.connect() as conn:
            waiting = conn.execute(
                sa.select(JOB.c.id).where(JOB.c.status == "queued").limit(1)
            ).first()
        if waiting is None:
            return None
        with row_write(self.engine) as conn:
            stmt = sa.select(JOB).where(JOB.c.status == "queued").order_by(JOB.c.created_at)
            if self.engine.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = conn.execute(stmt.limit(1)).first()
            if row is None:
                return None
            now = utcnow()
            conn.execute(
                sa.update(JOB)
                .where(JOB.c.id == row.id)
                .values(status="running", started_at=now, runner=runner, heartbeat_at=now)
            )
            return conn.execute(sa.select(JOB).where(JOB.c.id == row.id)).one()

    def heartbeat(self, job_id: str, runner: str) -> None:
        """Say that ``runner`` is still running the job."""
        with row_write(self.engine) as conn:
            conn.execute(
                sa.update(JOB)
                .where(JOB.c.id == job_id, JOB.c.status == "running", JOB.c.runner == runner)
                .values(heartbeat_at=utcnow())
            )

    def running_elsewhere(self, runner: str) -> list[Any]:
        """The running jobs of other runners (a read)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(JOB).where(
                        JOB.c.status == "running",
                        sa.or_(JOB.c.runner.is_(None), JOB.c.runner != runner),
                    )
                ).all()
            )

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
        runner: str | None = None,
        message: str = "",
    ) -> bool:
        """End a running job (only while ``runner``, when given, still holds it), with
        ``message`` as the log's last line if given; False when it was not running."""
        with row_write(self.engine) as conn:
            where = [JOB.c.id == job_id, JOB.c.status == "running"]
            if runner is not None:
                where.append(JOB.c.runner == runner)
            row = conn.execute(sa.select(JOB.c.log).where(*where)).first()
            if row is None:
                return False
            values: dict[str, Any] = {
                "status": "failed" if error is not None else "succeeded",
                "result": result,
                "error": error,
                "finished_at": utcnow(),
            }
            if message:
                step = "failed" if error is not None else "published"
                values["log"] = [
                    *row.log,
                    {"at": utcnow().isoformat(), "step": step, "message": message},
                ]
            conn.execute(sa.update(JOB).where(*where).values(**values))
        self.upload_path(job_id).unlink(missing_ok=True)
        return True


def runner_id() -> str:
    """Who runs jobs in this process: ``host:pid:token`` (a fresh token per publisher,
    so a restarted node with the same pid, as in a container, is another runner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def abandoned(row: Any, *, now: datetime, grace: float) -> bool:
    """Whether the running job ``row`` has lost its runner: a process of this host that
    is gone (or this very pid under another token: the node restarted), or no heartbeat
    for ``grace`` seconds (a runner elsewhere)."""
    host, _, rest = (row.runner or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return True  # not this publisher's (it asked for others'): an earlier life
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, someone else's
    beat = row.heartbeat_at or row.started_at or row.created_at
    if beat is not None and beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return beat is None or (now - beat).total_seconds() > grace
