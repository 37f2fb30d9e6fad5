"""Pydantic models at the HTTP edge: what callers send and what they get back.

Input models forbid unknown fields, so a typo ("sumary") is a 422 naming the field
rather than silently dropped data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from . import names

Classification = Literal["public", "internal", "restricted"]
Kind = Literal["algorithm", "model"]
Domain = Literal["governance", "livelihood", "economy", "other"]
Status = Literal["draft", "published", "deprecated", "retired"]
CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "restricted")
STATUSES: tuple[str, ...] = ("draft", "published", "deprecated", "retired")
DOMAINS: tuple[str, ...] = ("governance", "livelihood", "economy", "other")


def _tag(value: str) -> str:
    if not names.is_tag(value):
        raise ValueError(f"invalid tag {value!r}: {names.TAG_RULE}")
    return value


def _unique_tags(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _semver(value: str) -> str:
    if not names.is_semver(value):
        raise ValueError(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    return value


def _json_schema(value: dict[str, Any]) -> dict[str, Any]:
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
    return value


Tag = Annotated[str, AfterValidator(_tag)]
SemVer = Annotated[str, AfterValidator(_semver)]
JsonSchema = Annotated[dict[str, Any], AfterValidator(_json_schema)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
RuntimeType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeBinding(Strict):
    """Where a version executes. ``type`` names a runtime plugin; ``config`` is its own."""

    type: RuntimeType = "inprocess"
    config: dict[str, Any] = Field(default_factory=dict)


class Example(Strict):
    title: Text = ""
    input: Any
    output: Any = None


def _node_ref(value: str) -> str:
    if not names.is_node_id(value):
        raise ValueError(f"invalid node id {value!r}: {names.NODE_ID_RULE}")
    return value


def _department(value: str) -> str:
    if not names.is_namespace(value):
        raise ValueError(f"invalid department {value!r}: {names.NAMESPACE_RULE}")
    return value


def _rate_limit(value: str) -> str:
    from .limits import Limit

    Limit.parse(value)
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    return value.astimezone(UTC)


NodeRef = Annotated[str, AfterValidator(_node_ref)]
Department = Annotated[str, AfterValidator(_department)]
Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Role = Literal["admin", "operator", "author", "consumer", "auditor", "reviewer"]
RateLimit = Annotated[str, StringConstraints(max_length=64), AfterValidator(_rate_limit)]


class AccessRule(Strict):
    """Who may: a caller matches when it matches every list given (OR within a list);
    an empty list does not narrow. An anonymous caller matches only the empty rule."""

    nodes: Annotated[list[NodeRef], Field(max_length=64)] = Field(
        default_factory=list, description="callers of these nodes or of nodes below them"
    )
    departments: Annotated[list[Department], Field(max_length=64)] = Field(
        default_factory=list, description="callers of these departments (e.g. sd.qd.traffic)"
    )
    roles: Annotated[list[Role], Field(max_length=5)] = Field(default_factory=list)


class Grant(Strict):
    """A subject together with the node that vouches for it (the node whose token, API key
    or identity-provider claim names it): the same subject of another node is someone
    else."""

    subject: Subject
    node: NodeRef
    expires_at: Annotated[datetime, AfterValidator(_utc)] | None = Field(
        None,
        description="when the grant stops counting (UTC); absent: it does not expire. "
        "An expired grant names nobody, at every node",
    )

    @model_serializer(mode="wrap")
    def _without_no_expiry(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A grant that does not expire serializes as it did before expiry existed, so
        # the content hashes and ETags of existing entries stay the same.
        out: dict[str, Any] = handler(self)
        if out.get("expires_at") is None:
            out.pop("expires_at", None)
        return out


class Access(Strict):
    """A capability's own access rules, narrowing what its classification allows.
    Staff scoped to its namespace and the subjects in ``grants`` are never narrowed."""

    discover: AccessRule = Field(default_factory=AccessRule, description="who may find it")
    invoke: AccessRule = Field(
        default_factory=AccessRule, description="who, of those who may find it, may call it"
    )
    grants: Annotated[list[Subject | Grant], Field(max_length=256)] = Field(
        default_factory=list,
        description="subjects named to discover and invoke it; for a restricted capability "
        "the only callers outside its department. A plain subject is one of the node that "
        'owns the capability; {"subject": ..., "node": ...} names a subject of another node',
    )
    rate_limit: RateLimit | None = Field(
        None, description='calls of this capability, all callers together: "100/s", "5000/day"'
    )


class CapabilityMeta(Strict):
    """Descriptive metadata of a capability (shared by all its versions)."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    summary: Text = ""
    description: Annotated[str, StringConstraints(max_length=100_000)] = Field(
        "", description="Markdown"
    )
    summary_en: Text = Field("", description="the summary in English, for English pages")
    description_en: Annotated[str, StringConstraints(max_length=100_000)] = Field(
        "", description="the description in English (Markdown), for English pages"
    )
    kind: Kind = "algorithm"
    domain: Domain = "other"
    tags: Annotated[list[Tag], Field(max_length=32), AfterValidator(_unique_tags)] = Field(
        default_factory=list
    )
    classification: Classification = Field(
        "internal",
        description="public: anyone; internal: signed-in staff; restricted: its namespace's "
        "staff and named grants",
    )
    access: Access = Field(default_factory=Access)
    owner: Text = ""
    contact: Text = ""
    license: Text = ""


class MetaPatch(Strict):
    """A partial update of capability metadata: only the fields given change."""

    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    summary: Text | None = None
    description: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    summary_en: Text | None = None
    description_en: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    kind: Kind | None = None
    domain: Domain | None = None
    tags: Annotated[list[Tag], Field(max_length=32), AfterValidator(_unique_tags)] | None = None
    classification: Classification | None = None
    access: Access | None = None
    owner: Text | None = None
    contact: Text | None = None
    license: Text | None = None


def _model_uri(value: str) -> str:
    from .models import MODEL_URI

    if not MODEL_URI.match(value):
        raise ValueError(
            "must be models:/<namespace>.<name>/<version>, a model version this node logged "
            "in its own MLflow; authors do not choose model locations"
        )
    return value


ModelUri = Annotated[str, StringConstraints(max_length=1000), AfterValidator(_model_uri)]


class VersionSpec(Strict):
    """What a version carries besides the capability's metadata."""

    input_schema: JsonSchema = Field(default_factory=lambda: {"type": "object"})
    output_schema: JsonSchema = Field(default_factory=lambda: {"type": "object"})
    examples: Annotated[list[Example], Field(max_length=50)] = Field(default_factory=list)
    runtime: RuntimeBinding = Field(default_factory=RuntimeBinding)
    model_uri: ModelUri | None = Field(
        None,
        description="models:/<namespace>.<name>/<version>: a version of the model this node "
        "logged for this capability in its own MLflow (POST /v1/publish, `yunnao publish`); "
        "never a path, URL, run or another capability's model",
    )
    artifact_uri: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        None,
        description="set by the node from its MLflow (where the model's files are); "
        "if given, it must be that",
    )


class PublishRequest(CapabilityMeta, VersionSpec):
    """Body of ``POST /v1/capabilities/{namespace}/{name}/versions``.

    Publishing creates the capability on its first version and refreshes its
    metadata on later ones.
    """

    version: SemVer
    status: Literal["draft", "published"] = "published"


def _alias(value: str) -> str:
    if not names.is_alias(value):
        raise ValueError(f"invalid alias {value!r}: {names.ALIAS_RULE}")
    return value


Alias = Annotated[str, AfterValidator(_alias)]


class PluginPublishRequest(Strict):
    """Body of ``POST /v1/publish``: publish a capability of a plugin loaded at the node."""

    capability: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="the capability's name in its plugin"
    )
    namespace: Annotated[str, StringConstraints(max_length=370)] | None = Field(
        None,
        description="<node>.<plugin name>, the plugin's own department (the only namespace "
        "a plugin is published into over HTTP; another is refused)",
    )
    status: Literal["draft", "published"] = "published"
    aliases: Annotated[list[Alias], Field(max_length=8)] | None = Field(
        None, description="MLflow aliases to set; default: production for a published version"
    )


class TransitionRequest(Strict):
    status: Status


class CapabilityHealth(BaseModel):
    """Whether a capability's origin can be reached now, and how it served lately (not
    part of any content hash or ETag)."""

    reachable: bool
    state: str = Field(description="ok, late, down or unknown: its origin node's state")
    checked_at: datetime | None = Field(default=None, description="the probe it is based on")
    since: datetime | None = Field(default=None, description="when it entered this state")
    p50_ms: float | None = Field(default=None, description="median latency, last 7 days")
    success_rate: float | None = Field(default=None, description="2xx share, last 7 days")
    calls: int = Field(default=0, description="calls in the last 7 days")


class CapabilitySummary(BaseModel):
    id: str = Field(description="namespace/name")
    namespace: str
    name: str
    title: str
    summary: str
    summary_en: str = ""
    kind: Kind
    domain: Domain
    tags: list[str]
    classification: Classification
    status: Status
    latest_version: str | None
    runtime: str | None
    origin_node: str
    updated_at: datetime
    health: CapabilityHealth | None = Field(
        default=None, description="live: its origin reachable now, recent p50 and success"
    )


class Capability(CapabilitySummary):
    description: str
    description_en: str = ""
    access: Access
    owner: str
    contact: str
    license: str
    versions: list[str] = Field(description="newest first")
    created_at: datetime
    content_hash: str


class Version(BaseModel):
    id: str = Field(description="namespace/name@version")
    namespace: str
    name: str
    version: str
    status: Status
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    examples: list[Example]
    runtime: RuntimeBinding
    model_uri: str | None
    artifact_uri: str | None
    content_hash: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class VersionList(BaseModel):
    items: list[Version]


class SearchPage(BaseModel):
    items: list[CapabilitySummary]
    total: int
    page: int
    per_page: int
    facets: dict[str, dict[str, int]] = Field(
        description="for each facet, value -> count of matches if that facet's own filter "
        "were lifted (so alternatives stay visible)"
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    node: str | None = None
    version: str | None = None
