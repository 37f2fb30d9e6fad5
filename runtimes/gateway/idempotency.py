"""Retries without duplicates: ``Idempotency-Key`` on calls and job submissions.

A caller that sends ``Idempotency-Key: <key>`` with ``POST /v1/invoke/…`` (a call, or
a job with ``Prefer: respond-async``) may send the same request again, after a timeout
or a dropped connection, without running it twice:

- the same key with the same request (method, path, query, ``Prefer`` and body) within
  the window (``YUNNAO_IDEMPOTENCY_WINDOW``, 24 h) gets the first answer again, marked
  ``Idempotent-Replayed: true`` (for a job: the same job);
- the same key with another request is refused (422 ``idempotency-key-reused``);
- requests with one key at the same time run once: the others wait for the first
  answer (across every process on the store: the key is a row whose primary key only
  one insert wins), and are refused (409, ``Retry-After``) if it takes longer than they
  may wait.

Only a completed request (a 2xx answer) is remembered. An error, a refusal or a
dropped connection forgets the key, so the retry runs again: a 429 or a 503 is worth
retrying, and a call that never finished has no answer to give.

Keys belong to their caller (subject and issuer of a signed-in caller, the address of
an anonymous one): another caller's key is another key, and no caller can read an
answer given to someone else.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import anyio
import anyio.to_thread
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import (
    BadRequest,
    FieldError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
)
from yunnao.registry.access import Identity
from yunnao.registry.db import row_write
from yunnao.registry.tables import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
MAX_KEY = 255
REPLAYED_HEADERS = ("content-type", "location", "deprecation", "preference-applied")
_PURGE_EVERY = 500  # claims between purges of expired keys

_keys = IdempotencyKey.__table__  # type: ignore[attr-defined]


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        why = f"1 to {MAX_KEY} printable ASCII characters"
        raise BadRequest(f"{HEADER}: {why}", errors=[FieldError(HEADER, why)])


def _owner(identity: Identity, client: str | None) -> str:
    if identity.authenticated:
        return f"{identity.issuer or ''}\n{identity.subject or ''}\n{identity.peer or ''}"
    return f"anonymous\n{client or ''}"


def fingerprint(request: Request, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query,
                 request.headers.get("prefer", "")):  # fmt: skip
        h.update(part.encode())
        h.update(b"\n")
    h.update(body)
    return h.hexdigest()


class Idempotency:
    def __init__(self, engine: sa.Engine, *, window: float = 86400.0, poll: float = 0.05) -> None:
        self.engine = engine
        self.window = window
        self.poll = poll
        self._claims = 0

    # ------------------------------------------------------------ the store

    def claim(self, key_id: str, fp: str) -> sa.Row | None:
        """Insert ``key_id`` as running; None when this request won it, else the row
        that is there (an expired one is replaced). Safe across processes: of two
        inserts of one key, the database lets one through."""
        while True:
            now = utcnow()
            self._claims += 1
            try:
                with row_write(self.engine) as conn:
                    if self._claims % _PURGE_EVERY == 0:
                        conn.execute(_keys.delete().where(_keys.c.expires_at < now))
                    row = conn.execute(sa.select(_keys).where(_keys.c.id == key_id)).first()
                    if row is not None and row.expires_at > now:
                        return row
                    if row is not None:
                        conn.execute(_keys.delete().where(_keys.c.id == key_id))
                    conn.execute(
                        sa.insert(_keys).values(
                            id=key_id,
                            fingerprint=fp,
                            state="running",
                            created_at=now,
                            expires_at=now + timedelta(seconds=self.window),
                        )
                    )
                return None
            except sa.exc.IntegrityError:
                continue  # another process inserted it first: read what it wrote

    def read(self, key_id: str) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(_keys).where(_keys.c.id == key_id)).first()

    def finish(self, key_id: str, response: Response) -> None:
        headers = {k: v for k, v in response.headers.items() if k in REPLAYED_HEADERS}
        with row_write(self.engine) as conn:
            conn.execute(
                _keys.update()
                .where(_keys.c.id == key_id)
                .values(
                    state="done",
                    status=response.status_code,
                    headers=json.dumps(headers),
                    body=bytes(response.body),
                )
            )

    def forget(self, key_id: str) -> None:
        with row_write(self.engine) as conn:
            conn.execute(_keys.delete().where(_keys.c.id == key_id, _keys.c.state == "running"))

    # ------------------------------------------------------------ a request

    async def handle(
        self,
        request: Request,
        key: str,
        identity: Identity,
        body: bytes,
        produce: Callable[[], Awaitable[Response]],
        *,
        wait: float,
    ) -> Response:
        """Answer ``request`` (whose body is ``body``) once per key: ``produce`` makes the
        answer the first time; later the stored one is replayed. ``wait``: how long a
        duplicate waits for the first one to finish."""
        _check_key(key)
        client = request.client.host if request.client else None
        key_id = hashlib.sha256(f"{_owner(identity, client)}\n{key}".encode()).hexdigest()
        fp = fingerprint(request, body)
        deadline = time.monotonic() + wait
        while True:
            row = await anyio.to_thread.run_sync(self.claim, key_id, fp)
            if row is None:
                break  # this request runs
            if row.fingerprint != fp:
                raise IdempotencyKeyReused(
                    f"{HEADER} {key!r} was used with another request; use a new key for a "
                    "new request",
                    errors=[FieldError(HEADER, "already used with another request")],
                )
            while row is not None and row.state == "running":
                if time.monotonic() >= deadline:
                    raise IdempotencyInProgress(f"a request with {HEADER} {key!r} is still running")
                await anyio.sleep(self.poll)
                row = await anyio.to_thread.run_sync(self.read, key_id)
            if row is not None:
                headers = json.loads(row.headers or "{}") | {"Idempotent-Replayed": "true"}
                return Response(row.body or b"", status_code=row.status, headers=headers)
            # The first one failed and forgot the key: claim it again and run.
        try:
            response = await produce()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.forget, key_id)
            raise
        with anyio.CancelScope(shield=True):
            if 200 <= response.status_code < 300:
                await anyio.to_thread.run_sync(self.finish, key_id, response)
            else:
                await anyio.to_thread.run_sync(self.forget, key_id)
        return response
