"""SQLModel tables of the registry store (the same on SQLite and PostgreSQL).

Why one module: the tables are the store's schema, which the migrations
(``registry/migrations``) build one revision at a time; reading them in one place, next
to each other, is how a migration is checked against what the code expects.

The search index is not here: it is dialect-specific (an FTS5 virtual table on
SQLite, a tsvector table with a GIN index on PostgreSQL), created by the migrations
and kept by :mod:`yunnao.registry.search` in the same transaction as the rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both stores (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


class Node(SQLModel, table=True):
    """A registry node known here: this node, and later its parents and children."""

    id: str = Field(primary_key=True, max_length=330)
    parent_id: str | None = Field(default=None, max_length=330)
    title: str = Field(default="", max_length=200)  # the Chinese title (shown by default)
    title_en: str = Field(default="", max_length=200)
    public_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()


class Namespace(SQLModel, table=True):
    """A department that owns capabilities; only its node may change them."""

    id: str = Field(primary_key=True, max_length=370)
    node_id: str = Field(foreign_key="node.id", index=True, max_length=330)
    title: str = Field(default="", max_length=200)  # the Chinese title (shown by default)
    title_en: str = Field(default="", max_length=200)
    created_at: datetime = _ts()


class CapabilityRow(SQLModel, table=True):
    """One capability (namespace/name). Metadata is shared by its versions; ``status``,
    ``latest_version`` and ``runtime`` mirror its current version for search and facets."""

    __tablename__ = "capability"
    __table_args__ = (
        sa.UniqueConstraint("namespace", "name", name="uq_capability_namespace_name"),
    )

    id: int | None = Field(default=None, primary_key=True)
    namespace: str = Field(foreign_key="namespace.id", index=True, max_length=370)
    name: str = Field(max_length=64)
    title: str = Field(max_length=200)
    summary: str = Field(default="", max_length=500)
    description: str = Field(default="", sa_type=sa.Text)
    summary_en: str = Field(default="", max_length=500)
    description_en: str = Field(default="", sa_type=sa.Text)
    kind: str = Field(max_length=16)
    domain: str = Field(index=True, max_length=16)
    tags: list[str] = Field(default_factory=list, sa_type=JSONType)
    classification: str = Field(index=True, max_length=16)
    # The capability's own access rules (schemas.Access, defaults left out); {}: none.
    access: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    owner: str = Field(default="", max_length=500)
    contact: str = Field(default="", max_length=500)
    license: str = Field(default="", max_length=500)
    origin_node: str = Field(index=True, max_length=330)
    status: str = Field(index=True, max_length=16)
    latest_version: str | None = Field(default=None, max_length=128)
    runtime: str | None = Field(default=None, index=True, max_length=32)
    content_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # For an entry cascaded from another node: the linked peer it arrived through, which
    # is where a call of it is forwarded (None for this node's own entries).
    via_node: str | None = Field(default=None, max_length=330)
    # Whether it was ever below ``restricted``: a capability made restricted later then
    # leaves a tombstone in the feed, one that always was restricted leaves nothing.
    ever_shared: bool = False


class CapabilityTag(SQLModel, table=True):
    """Tags as rows, so tag filters and tag facet counts use an index."""

    __tablename__ = "capability_tag"

    capability_id: int = Field(foreign_key="capability.id", primary_key=True)
    tag: str = Field(primary_key=True, index=True, max_length=48)


class VersionRow(SQLModel, table=True):
    """One immutable version; only its lifecycle ``status`` changes after publish."""

    __tablename__ = "capability_version"
    __table_args__ = (sa.UniqueConstraint("capability_id", "version", name="uq_version"),)

    id: int | None = Field(default=None, primary_key=True)
    capability_id: int = Field(foreign_key="capability.id", index=True)
    version: str = Field(max_length=128)
    status: str = Field(max_length=16)
    input_schema: dict[str, Any] = Field(sa_type=JSONType)
    output_schema: dict[str, Any] = Field(sa_type=JSONType)
    examples: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    runtime: dict[str, Any] = Field(sa_type=JSONType)
    model_uri: str | None = Field(default=None, max_length=1000)
    artifact_uri: str | None = Field(default=None, max_length=1000)
    content_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Change(SQLModel, table=True):
    """The change log: one row per write, appended in the write's own transaction.
    ``seq`` is node-local and, because writers are serialized, in commit order.

    A change applied from another node keeps that node's sequence number
    (``origin_seq``) and the signed item as it arrived (``item``), which this node's
    feed passes on unchanged, so nodes further up verify the origin's own signature."""

    seq: int | None = Field(default=None, primary_key=True)
    entity: str = Field(max_length=16)
    key: str = Field(index=True, max_length=600)
    op: str = Field(max_length=8)
    content_hash: str = Field(max_length=64)
    origin_node: str = Field(max_length=330)
    created_at: datetime = _ts()
    origin_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    item: dict[str, Any] | None = Field(default=None, sa_type=JSONType)


class Peer(SQLModel, table=True):
    """A linked node: this node's parent or one of its children.

    ``checkpoint`` is how far into that peer's feed this node has applied (for a child
    whether it is pulled or pushes, for a followed parent); it moves in the same
    transaction as the entries it covers, so a crash on either side loses nothing and
    applies nothing twice."""

    id: str = Field(primary_key=True, max_length=330)  # the peer's node id
    relation: str = Field(max_length=8)  # child | parent
    url: str | None = Field(default=None, max_length=2000)
    public_key: str = Field(max_length=200)
    pull: bool = False  # this node reads the peer's feed (a child's, or a followed parent's)
    push: bool = False  # this node sends its own feed to the peer (a parent)
    checkpoint: int = Field(default=0, sa_type=sa.BigInteger)
    head: int = Field(default=0, sa_type=sa.BigInteger)  # the peer's newest seq, last seen
    caught_up_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_sync_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=2000)
    last_error_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failures: int = 0  # consecutive
    applied: int = Field(default=0, sa_type=sa.BigInteger)
    rejected: int = Field(default=0, sa_type=sa.BigInteger)
    resyncs: int = 0
    # A pushing child is sending its whole feed again (its own was compacted past this
    # node's checkpoint); its last page then lists what it still has, and the rest goes.
    resync_pending: bool = False
    created_at: datetime = _ts()


class Rejection(SQLModel, table=True):
    """An entry a peer sent that was not applied (bad signature, foreign origin, policy),
    kept for operators next to the count on its peer."""

    __tablename__ = "cascade_rejection"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    peer: str = Field(index=True, max_length=330)
    origin: str | None = Field(default=None, max_length=330)
    entity: str | None = Field(default=None, max_length=16)
    key: str | None = Field(default=None, max_length=600)
    reason: str = Field(max_length=500)
    item: Any = Field(default=None, sa_type=JSONType)


class CascadeState(SQLModel, table=True):
    """Node-wide cascade facts, one value per name (``compacted_through``: the feed has
    no superseded changes or tombstones at or below this sequence number)."""

    __tablename__ = "cascade_state"

    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(default=0, sa_type=sa.BigInteger)


class ApiKey(SQLModel, table=True):
    """An application credential: a random secret shown once, kept only as its hash."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=16)  # public part of the key: yk_<id>_...
    secret_hash: str = Field(max_length=64)  # SHA-256 of the whole key
    name: str = Field(max_length=200)  # what it is for, e.g. the application
    subject: str = Field(max_length=500)  # who calls with it (usage records name it)
    role: str = Field(max_length=16)
    scopes: list[str] = Field(default_factory=list, sa_type=JSONType)
    # namespace/name (or namespace/*) it may invoke; empty: whatever its role may
    capabilities: list[str] = Field(default_factory=list, sa_type=JSONType)
    # The key's own rate limit ("100/min"), overriding the node's per-caller default.
    rate_limit: str | None = Field(default=None, max_length=64)
    created_by: str = Field(max_length=500)
    created_at: datetime = _ts()
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RateBucket(SQLModel, table=True):
    """A token bucket of the rate limiter (runtimes.ratelimit) when the store is
    PostgreSQL, so every gateway process sharing it shares the limits."""

    __tablename__ = "rate_bucket"

    key: str = Field(primary_key=True, max_length=400)
    tokens: float
    stamp: float  # seconds since the epoch, by the database's clock


class AuditEvent(SQLModel, table=True):
    """One audited request, chained to the one before by its hash (append-only)."""

    __tablename__ = "audit_event"
    __table_args__ = {"sqlite_autoincrement": True}  # a sequence number is never reused

    seq: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor: str | None = Field(default=None, index=True, max_length=500)  # None: anonymous
    issuer: str | None = Field(default=None, max_length=500)
    role: str | None = Field(default=None, max_length=16)
    peer: str | None = Field(default=None, max_length=330)  # forwarded by a linked node
    action: str = Field(index=True, max_length=100)  # operation id, e.g. publishVersion
    method: str = Field(max_length=8)
    path: str = Field(max_length=2000)
    status: int
    outcome: str = Field(max_length=16)  # ok | denied | refused | failed
    request_id: str | None = Field(default=None, max_length=128)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class Job(SQLModel, table=True):
    """An asynchronous invocation. Durable: a job queued or running when a node stops is
    run when a node (this or another sharing the store) picks it up again."""

    id: str = Field(primary_key=True, max_length=32)
    namespace: str = Field(max_length=370)
    name: str = Field(max_length=64)
    version: str = Field(max_length=128)
    caller: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)  # the identity
    input: Any = Field(default=None, sa_type=JSONType)
    timeout: float
    callback_url: str | None = Field(default=None, max_length=2000)
    request_id: str | None = Field(default=None, max_length=128)
    # queued → running → succeeded | failed (running again after an expired lease)
    status: str = Field(index=True, max_length=16)
    attempts: int = 0
    not_before: datetime = _ts(index=True)  # not claimed before (backoff after a 503)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    output: Any = Field(default=None, sa_type=JSONType)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)  # problem document
    # None (no callback) | pending | delivered | failed
    callback_status: str | None = Field(default=None, index=True, max_length=16)
    callback_attempts: int = 0
    callback_error: str | None = Field(default=None, max_length=500)  # why not delivered
    created_at: datetime = _ts()
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UsageRecord(SQLModel, table=True):
    """One invocation, for usage statistics and assessment."""

    __tablename__ = "usage_record"
    __table_args__ = (sa.Index("ix_usage_record_namespace_name_at", "namespace", "name", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    caller: str | None = Field(default=None, index=True, max_length=500)
    namespace: str = Field(max_length=370)
    name: str = Field(max_length=64)
    version: str | None = Field(default=None, max_length=128)
    runtime: str | None = Field(default=None, max_length=32)
    mode: str = Field(max_length=8)  # sync | async | v2
    status: int  # the HTTP status the call ended with
    latency_ms: float
    request_id: str | None = Field(default=None, max_length=128)
    error_id: str | None = Field(default=None, max_length=32)
    # Where the caller belongs (Identity.node / own_department), and the linked node
    # that forwarded the call (None: made at this node): the assessment's split of calls
    # into the same department, other departments and other nodes.
    caller_node: str | None = Field(default=None, max_length=330)
    caller_department: str | None = Field(default=None, max_length=370)
    forwarded_by: str | None = Field(default=None, max_length=330)
    items: int | None = None  # a streamed call's items (None: answered once)


class UsedAssertion(SQLModel, table=True):
    """A linked node's one-time assertion id (``peer jti``), accepted once by some
    process of this node, kept until it expires (epoch seconds)."""

    __tablename__ = "used_assertion"

    key: str = Field(primary_key=True, max_length=700)
    expires: float = Field(index=True)


class UsageDaily(SQLModel, table=True):
    """One origin node's calls of one capability on one day (Beijing time), by outcome,
    by where the callers came from, and as a latency histogram (so days and capabilities
    add up exactly, percentiles at the histogram's resolution). A node computes its own
    rows from its usage records; its parent holds them as its signed ``usage`` feed items
    carry them up the cascade. ``name`` is "" for the summed calls of capabilities that
    may not leave their node (restricted), so only their department is named above."""

    __tablename__ = "usage_daily"

    node: str = Field(primary_key=True, max_length=330)  # the origin node that served them
    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD, Asia/Shanghai
    namespace: str = Field(primary_key=True, max_length=370)
    name: str = Field(primary_key=True, max_length=64)
    calls: int = 0
    ok: int = 0  # 2xx
    errors: int = 0  # 5xx (the capability or its runtime failed, or timed out)
    refused: int = 0  # 401, 403, 429: not allowed or over a limit
    invalid: int = 0  # other 4xx: the caller's input
    same_department: int = 0
    other_department: int = 0  # this node's other departments, anonymous callers too
    other_node: int = 0  # callers of another node (forwarded through the cascade)
    latency_hist: list[int] = Field(default_factory=list, sa_type=JSONType)
    updated_at: datetime = _ts()


class ProbeDaily(SQLModel, table=True):
    """This node's live probes of another node on one day (Beijing time): how many were
    made and how many it answered in time (the other node's availability as seen here)."""

    __tablename__ = "probe_daily"

    node: str = Field(primary_key=True, max_length=330)
    day: str = Field(primary_key=True, max_length=10)
    probes: int = 0
    ok: int = 0
    updated_at: datetime = _ts()


class AccessRequest(SQLModel, table=True):
    """Someone who may find a capability asking to call it (权限申请), kept at the node that
    owns the capability, where its department decides; approval adds a grant (optionally
    expiring) to the capability's access rules."""

    __tablename__ = "access_request"

    id: str = Field(primary_key=True, max_length=32)
    namespace: str = Field(index=True, max_length=370)
    name: str = Field(max_length=64)
    requester: str = Field(index=True, max_length=500)  # the subject
    requester_node: str = Field(max_length=330)  # the node that vouches for the subject
    requester_department: str | None = Field(default=None, max_length=370)
    via: str | None = Field(default=None, max_length=330)  # the linked node it came through
    reason: str = Field(max_length=2000)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # asked/granted
    # pending → approved | refused | withdrawn
    status: str = Field(index=True, max_length=16)
    decided_by: str | None = Field(default=None, max_length=500)
    decision_reason: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _ts(index=True)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Package(SQLModel, table=True):
    """A distribution a department uploaded (a wheel, or an sdist built in the sandbox):
    its archive's SHA-256, where its checked code is unpacked on this node and which
    environment holds its dependencies (shared by packages with the same resolved set)."""

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the archive, hex
    namespace: str = Field(index=True, max_length=370)
    distribution: str = Field(max_length=200)
    version: str = Field(max_length=128)
    filename: str = Field(max_length=300)
    size: int
    environment: str | None = Field(default=None, index=True, max_length=64)
    uploaded_by: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = _ts()
    job_id: str | None = Field(default=None, max_length=32)  # the job that recorded it


class PackageVersion(SQLModel, table=True):
    """A version an uploaded package published, and the MLflow model it got: when none
    of a package's versions is live any more, its code and environment are removed."""

    __tablename__ = "package_version"

    package_id: str = Field(foreign_key="package.id", primary_key=True, max_length=64)
    namespace: str = Field(primary_key=True, max_length=370)
    name: str = Field(primary_key=True, max_length=64)
    version: str = Field(primary_key=True, max_length=128)
    model_uri: str | None = Field(default=None, max_length=1000)


class PublishJob(SQLModel, table=True):
    """One upload being published: the steps so far (``log``), and in the end the
    versions it published or the problem that stopped it (nothing of it then remains)."""

    __tablename__ = "publish_job"

    id: str = Field(primary_key=True, max_length=32)
    namespace: str = Field(index=True, max_length=370)
    filename: str = Field(max_length=300)
    package_id: str | None = Field(default=None, max_length=64)
    caller: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # queued → running → succeeded | failed
    status: str = Field(index=True, max_length=16)
    log: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)  # problem document
    result: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = _ts(index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The node process running it, and when it last said it still is (a job whose
    # runner stopped is failed and cleaned up by the next publisher that sees it).
    runner: str | None = Field(default=None, max_length=200)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Webhook(SQLModel, table=True):
    """A subscription to events of a namespace (its authors') or of the node (its
    operators'), delivered to ``url`` signed with ``secret`` (Standard Webhooks)."""

    id: str = Field(primary_key=True, max_length=32)
    scope: str = Field(index=True, max_length=370)  # a namespace of this node, or its id
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_type=JSONType)
    secret: str = Field(max_length=100)  # whsec_<base64>
    description: str = Field(default="", max_length=200)
    created_by: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    disabled: bool = False


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription: the durable outbox (written in the transaction of
    the change it reports) and the delivery's log. ``seq`` orders a subscription's."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.Index("ix_webhook_delivery_webhook_state_seq", "webhook_id", "state", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True)  # webhook-id: msg_<hex>
    webhook_id: str = Field(max_length=32)
    event: str = Field(max_length=64)
    payload: str  # the JSON body, exactly as signed and sent
    created_at: datetime = _ts()
    state: str = Field(max_length=16)  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookAttempt(SQLModel, table=True):
    """One try of a delivery: the answer's status, or why there was none."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(index=True, max_length=40)
    at: datetime = _ts()
    status: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: float


class IdempotencyKey(SQLModel, table=True):
    """A caller's ``Idempotency-Key``: the request it came with, and once that completed,
    the answer a retry gets (see runtimes/gateway/idempotency.py)."""

    __tablename__ = "idempotency_key"

    id: str = Field(primary_key=True, max_length=64)  # sha256(who, key)
    fingerprint: str = Field(max_length=64)  # sha256 of the request
    state: str = Field(max_length=16)  # running | done
    status: int | None = None
    headers: str | None = None  # JSON: the answer's headers that are replayed
    body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class ReviewRow(SQLModel, table=True):
    """A capability from a child's subtree in this node's review (cascade/review.py):
    pending, approved (by a reviewer, a rule, or held before review was on) or refused."""

    __tablename__ = "review"

    namespace: str = Field(primary_key=True, max_length=370)
    name: str = Field(primary_key=True, max_length=64)
    origin_node: str = Field(max_length=330)
    via_node: str = Field(max_length=330)  # the child it came through
    state: str = Field(index=True, max_length=16)  # pending | approved | refused
    reason: str | None = Field(default=None, max_length=500)
    decided_by: str | None = Field(default=None, max_length=500)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    arrived_at: datetime = _ts()
    rule_id: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    classification: str | None = Field(default=None, max_length=16)


class ReviewHeld(SQLModel, table=True):
    """A signed item of a capability not approved yet, as received (the newest per
    entity and key): written to the catalog when the capability is approved."""

    __tablename__ = "review_held"
    __table_args__ = (sa.Index("ix_review_held_capability", "namespace", "name"),)

    entity: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=600)
    namespace: str = Field(max_length=370)
    name: str = Field(max_length=64)
    origin_seq: int = Field(sa_type=sa.BigInteger)
    item: dict[str, Any] = Field(sa_type=JSONType)
    held_at: datetime = _ts()


class ReviewRule(SQLModel, table=True):
    """What this node approves without a reviewer: every field given must match."""

    __tablename__ = "review_rule"

    id: str = Field(primary_key=True, max_length=32)
    namespace: str | None = Field(default=None, max_length=370)
    classification: str | None = Field(default=None, max_length=16)
    district: str | None = Field(default=None, max_length=330)
    created_by: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()


class ReviewUpward(SQLModel, table=True):
    """At a child: a decision of a node above about one of its subtree's capabilities."""

    __tablename__ = "review_upward"

    namespace: str = Field(primary_key=True, max_length=370)
    name: str = Field(primary_key=True, max_length=64)
    reviewer: str = Field(primary_key=True, max_length=330)
    state: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    received_at: datetime = _ts()


class TrafficSplit(SQLModel, table=True):
    """A capability's traffic split at its own node: of the calls that name no version,
    a share goes to the ``canary`` version and the rest to ``stable`` (the current
    version when the split was set), each mirrored to ``shadow``. When a new version's
    error rate passes the rule the split is removed by itself, or, while a newer version
    than ``stable`` is current, kept without canary and shadow as a pin on ``stable``
    (``note`` says why) until its writers clear it."""

    __tablename__ = "traffic_split"

    namespace: str = Field(primary_key=True, max_length=370)
    name: str = Field(primary_key=True, max_length=64)
    stable: str = Field(max_length=128)
    canary: str | None = Field(default=None, max_length=128)
    share: float = 0.0
    shadow: str | None = Field(default=None, max_length=128)
    max_error_rate: float = 0.05
    min_calls: int = 50
    window_s: float = 300.0
    set_by: str | None = Field(default=None, max_length=500)
    set_at: datetime = _ts()
    note: str | None = Field(default=None, max_length=500)
