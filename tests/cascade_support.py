"""Real Yunnao nodes for tests that span several of them: one ``Site`` per
``yunnao serve`` process (its URL, its key, tokens it signs, its store read directly),
and ``until`` for what the cascade makes true eventually."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from yunnao.cascade.feed import make_item
from yunnao.registry.identity import tokens


@dataclass
class Site:
    """One node process and what a test needs to act at it."""

    node_id: str
    proc: YunnaoProcess

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def data_dir(self) -> Path:
        return self.proc.cwd / "var"

    @property
    def key(self) -> Any:
        return tokens.load_or_create_key(self.data_dir / "node_key.pem")

    def token(
        self,
        role: str = "admin",
        subject: str = "tester",
        *,
        scopes: list[str] | None = None,
        department: str | None = None,
    ) -> str:
        """A node token of this node (scoped to the whole node unless ``scopes``)."""
        return tokens.issue(
            self.key,
            node_id=self.node_id,
            subject=subject,
            role=role,
            scopes=scopes if scopes is not None else [self.node_id],
            ttl=timedelta(hours=2),
            department=department,
        )

    def auth(self, role: str = "admin", subject: str = "tester", **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, subject, **kw)}"}

    def cascade(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [YUNNAO, "cascade", *args, "--url", self.url],
            env={"YUNNAO_DATA_DIR": str(self.data_dir), "YUNNAO_NODE_ID": self.node_id, "PATH": ""},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def publish(self, dept: str, name: str, version: str = "1.0.0", **fields: Any) -> None:
        body = {"version": version, "title": fields.pop("title", f"{name} 标题"), **fields}
        ns = f"{self.node_id}.{dept}"
        resp = httpx.post(
            f"{self.url}/v1/capabilities/{ns}/{name}/versions",
            json=body,
            headers=self.auth(),
            timeout=60,  # httpx's 5 s is short for a busy 2-core CI machine
        )
        assert resp.status_code == 201, resp.text

    def get(self, ref: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/capabilities/{ref}", **kw)

    def peers(self) -> dict[str, dict[str, Any]]:
        resp = httpx.get(f"{self.url}/v1/cascade/peers", headers=self.auth("operator"))
        assert resp.status_code == 200, resp.text
        return {p["id"]: p for p in resp.json()["items"]}

    def contents(self, under: str) -> dict[str, Any]:
        """Every live capability and version under node ``under`` in this node's store,
        straight from its database: what the cascade must make equal."""
        db = sqlite3.connect(f"file:{self.data_dir / 'registry.db'}?mode=ro", uri=True)
        try:
            caps = db.execute(
                "SELECT id, namespace, name, content_hash, status, latest_version, "
                "classification, origin_node FROM capability WHERE deleted_at IS NULL"
            ).fetchall()
            out: dict[str, Any] = {}
            for cid, ns, name, digest, status, latest, classification, origin in caps:
                if not (ns.startswith(under + ".") and origin.startswith(under)):
                    continue
                versions = db.execute(
                    "SELECT version, status, content_hash FROM capability_version "
                    "WHERE capability_id = ? ORDER BY version",
                    (cid,),
                ).fetchall()
                out[f"{ns}/{name}"] = (digest, status, latest, classification, origin, versions)
            return out
        finally:
            db.close()

    def duplicate_applies(self) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.data_dir / 'registry.db'}?mode=ro", uri=True)
        try:
            return db.execute(
                "SELECT origin_node, origin_seq, entity, key, count(*) FROM change "
                "WHERE item IS NOT NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
            ).fetchall()
        finally:
            db.close()

    def usage_records(self, request_id: str) -> list[tuple[Any, ...]]:
        """The calls this node recorded for ``request_id`` (it travels with forwarded
        calls), as (namespace, name, status), straight from its store."""
        db = sqlite3.connect(f"file:{self.data_dir / 'registry.db'}?mode=ro", uri=True)
        try:
            return db.execute(
                "SELECT namespace, name, status FROM usage_record WHERE request_id = ?",
                (request_id,),
            ).fetchall()
        finally:
            db.close()


def shared(contents: dict[str, Any]) -> dict[str, Any]:
    """What leaves a node: everything but restricted entries."""
    return {k: v for k, v in contents.items() if v[3] != "restricted"}


def until(check: Callable[[], Any], timeout: float = 30, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {message} (last: {last!r})")


def signed_capability(
    key: Any,
    origin: str,
    ref: str,
    op: str = "upsert",
    seq: int = 1,
    *,
    origin_node: str | None = None,
    title: str = "t",
) -> dict[str, Any]:
    """A cascade item for capability ``ref`` (``namespace/name``) signed with ``key`` as
    node ``origin``: an upsert naming ``origin_node`` (default: ``origin``) in its entry,
    or a tombstone (``op="delete"``)."""
    namespace, _, name = ref.partition("/")
    entry: dict[str, Any] = {"namespace": namespace, "name": name}
    if op == "upsert":
        entry |= {
            "origin_node": origin_node or origin,
            "share": "all",
            "title": title,
            "summary": "",
            "description": "",
            "kind": "algorithm",
            "domain": "other",
            "tags": [],
            "classification": "public",
            "owner": "",
            "contact": "",
            "license": "",
        }
    return make_item(
        key,
        origin=origin,
        origin_seq=seq,
        entity="capability",
        item_key=ref,
        op=op,
        entry=entry,
        at="2026-11-27T00:00:00+00:00",
    )
