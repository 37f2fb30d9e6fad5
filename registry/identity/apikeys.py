"""Application credentials: API keys for machine callers.

A key reads ``yk_<id>_<secret>``: the id names its record, the secret is 32 random
bytes. The store keeps only the SHA-256 of the whole key (a fast hash is enough for
a secret with 256 bits of entropy; nothing to brute-force), so a key is shown once,
when it is created, and a stolen database reveals none. A key carries a role, scopes
and optionally the capabilities it may invoke, and may expire; revoking it takes
effect within the verification cache's few seconds everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import select

from yunnao.plugins.errors import NotFound, Unauthorized

from ..access import Identity
from ..db import read_session, row_write
from ..tables import ApiKey, utcnow

PREFIX = "yk_"
CACHE_SECONDS = 5.0

_key = ApiKey.__table__  # type: ignore[attr-defined]


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str  # the whole key: shown to its creator once, never stored


class ApiKeys:
    def __init__(self, engine: sa.Engine, node_id: str) -> None:
        self.engine = engine
        self.node_id = node_id
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._touched: dict[str, float] = {}

    def create(
        self,
        *,
        name: str,
        subject: str,
        role: str,
        scopes: list[str],
        capabilities: list[str],
        created_by: str,
        expires_at: datetime | None,
        rate_limit: str | None = None,
    ) -> NewKey:
        key_id = secrets.token_hex(6)
        text = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id,
            secret_hash=_digest(text),
            name=name,
            subject=subject,
            role=role,
            scopes=scopes,
            capabilities=capabilities,
            rate_limit=rate_limit,
            created_by=created_by,
            expires_at=expires_at,
        )
        with row_write(self.engine) as conn:
            conn.execute(_key.insert().values(**record.model_dump()))
        return NewKey(record, text)

    def list(self) -> list[ApiKey]:
        with read_session(self.engine) as s:
            return list(s.exec(select(ApiKey).order_by(sa.desc(ApiKey.created_at))).all())  # type: ignore[arg-type]

    def revoke(self, key_id: str) -> ApiKey:
        with row_write(self.engine) as conn:
            done = conn.execute(
                _key.update()
                .where(_key.c.id == key_id, _key.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if (
                done.rowcount == 0
                and conn.execute(sa.select(_key.c.id).where(_key.c.id == key_id)).first() is None
            ):
                raise NotFound(f"no API key {key_id}")
        with self._lock:
            self._cache.pop(key_id, None)
        with read_session(self.engine) as s:
            found = s.get(ApiKey, key_id)
        assert found is not None
        return found

    def verify(self, text: str) -> Identity:
        """The identity an API key carries, or :class:`Unauthorized` saying why not."""
        key_id, _, secret = text.removeprefix(PREFIX).partition("_")
        if not key_id or not secret:
            raise Unauthorized("API key is malformed: expected yk_<id>_<secret>")
        record = self._record(key_id)
        # Compare digests in constant time; an unknown id costs the same as a wrong secret.
        expected = record.secret_hash if record is not None else _digest("")
        if not hmac.compare_digest(expected, _digest(text)) or record is None:
            raise Unauthorized("API key is not valid")
        if record.revoked_at is not None:
            raise Unauthorized(f"API key {key_id} was revoked")
        if record.expires_at is not None and record.expires_at <= utcnow():
            raise Unauthorized(f"API key {key_id} has expired")
        self._touch(key_id)
        return Identity(
            subject=record.subject,
            role=record.role,
            scopes=tuple(record.scopes),
            issuer=self.node_id,
            capabilities=tuple(record.capabilities) or None,
            node=self.node_id,
            rate_limit=record.rate_limit,
        )

    def _record(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and hit[0] > now:
                return hit[1]
        with read_session(self.engine) as s:
            record = s.get(ApiKey, key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now + CACHE_SECONDS, record)
        return record

    def _touch(self, key_id: str) -> None:
        """Record when a key was last used: at most once a minute per key, and off the
        request's path (a write may wait for the store's writer)."""
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_id, -1e9) < 60:
                return
            self._touched[key_id] = now

        def write() -> None:
            with row_write(self.engine) as conn:
                stmt = _key.update().where(_key.c.id == key_id).values(last_used_at=utcnow())
                conn.execute(stmt)

        threading.Thread(target=write, name="yunnao-key-used", daemon=True).start()
