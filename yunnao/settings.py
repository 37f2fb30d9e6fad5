"""Node settings: command-line flags over ``YUNNAO_*`` environment variables over the
embedded defaults (SQLite under ``./var``, a generated node key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from yunnao.registry import names
from yunnao.registry.http import is_loopback
from yunnao.registry.outbound import parse_allow
from yunnao.registry.schemas import RateLimit


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YUNNAO_", extra="ignore")

    node_id: str = Field("local", description="this node's dotted id, e.g. sd.qd.shinan")
    node_title: str = Field("", description="human name of this node")
    data_dir: Path = Field(Path("var"), description="where embedded state lives")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/registry.db"
    )
    key_file: Path | None = Field(None, description="node key; default <data_dir>/node_key.pem")
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server (http://...) or database URI; default: MLflow on "
        "SQLite with local artifacts under <data_dir>/mlflow",
    )
    mlflow_registry_uri: str | None = Field(
        None, description="MLflow model registry URI, if not the tracking URI"
    )
    plugins: bool = Field(True, description="load the plugins installed in the `yunnao` group")
    plugin_targets: list[str] = Field(
        default_factory=list,
        description="further plugins to load: package directories, .py files or modules "
        '(JSON list in the environment, e.g. ["./my_plugin"])',
    )
    publish_plugins: bool = Field(
        False,
        description="on start, publish every loaded capability whose version is not in the "
        "registry yet, into <node>.<plugin> (what `make run` does for the examples)",
    )
    runtimes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='configuration per runtime type, as JSON, e.g. {"triton": {"url": '
        '"127.0.0.1:8001", "repository": "/srv/triton"}, "rayserve": {"address": "auto"}}',
    )
    invoke_timeout: float = Field(30.0, gt=0, description="default seconds a call may take")
    max_invoke_timeout: float = Field(300.0, gt=0, description="most a caller may ask for")
    job_workers: int = Field(2, ge=0, description="asynchronous jobs run at once per node")
    job_lease_grace: float = Field(
        30.0, gt=0, description="seconds past its timeout before a job of a dead node reruns"
    )
    job_max_attempts: int = Field(5, ge=1, description="tries of a job while a runtime is down")
    cascade_share_internal: bool = Field(
        False,
        description="let this node's internal capabilities go sideways and down the node tree "
        "(to sibling and child nodes following their parent), not only up",
    )
    cascade_review: bool = Field(
        False,
        description="hold the capabilities that arrive from child nodes until this node's "
        "reviewers (or a review rule) approve them: until then they are not in this node's "
        "catalog and do not travel further up",
    )
    cascade_sync: bool = Field(
        True, description="run the replication loops with linked nodes in this process"
    )
    cascade_batch: int = Field(500, ge=1, le=2000, description="entries per feed page")
    cascade_wait: float = Field(
        20.0, gt=0, le=30, description="seconds a caught-up follower long-polls for a change"
    )
    cascade_keep_days: float | None = Field(
        30.0,
        ge=0,
        description="compact superseded changes and tombstones older than this from the feed "
        "(hourly); followers further behind read it again from the start. None: never",
    )
    usage_keep_days: float | None = Field(
        None,
        ge=7,
        description="delete usage records older than this (hourly; the daily aggregates "
        "the assessment reads are kept). None: keep them all",
    )
    audit_keep_days: float | None = Field(
        None,
        ge=180,
        description="remove audit events older than this (hourly), keeping the hash chain "
        "verifiable; at least 180 (logs are kept six months). None: keep them all",
    )
    idempotency_window: float = Field(
        86400.0,
        gt=0,
        le=7 * 86400,
        description="seconds an Idempotency-Key is remembered "
        "with its request and first answer (24 h)",
    )
    webhook_retry_base: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="seconds before a failed webhook delivery's first retry "
        "(doubling after each failure)",
    )
    webhook_retry_max: float = Field(
        600.0, gt=0, le=86400, description="the longest wait between a delivery's retries"
    )
    webhook_give_up_after: float = Field(
        259200.0,
        gt=0,
        description="seconds after which a delivery that keeps failing is "
        "given up (failed; redeliver it by hand), and the subscription's next one goes",
    )
    health_probe_interval: float = Field(
        3.0, gt=0, le=300, description="seconds between live probes of each linked node"
    )
    health_probe_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds a linked node has to answer a probe"
    )
    health_late_after: float = Field(
        60.0, gt=0, description="seconds of cascade lag after which a linked node is late"
    )
    usage_rollup_interval: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="seconds between recomputing this node's daily usage figures and "
        "sending those that changed up the cascade",
    )
    breaker_open_for: float = Field(
        5.0,
        gt=0,
        le=600,
        description="seconds calls to an unreachable node are refused before one trial call",
    )
    oidc_issuer: str | None = Field(
        None,
        description="single sign-on: the OpenID Connect issuer whose bearer tokens this node "
        "accepts (e.g. https://sso.qd.gov.cn/realms/city); unset: node tokens only",
    )
    oidc_audience: str = Field("yunnao", description="the audience those tokens must name")
    oidc_jwks_url: str | None = Field(
        None, description="the issuer's JWKS URL, if not the one its discovery document names"
    )
    oidc_leeway: float = Field(60.0, ge=0, le=600, description="seconds of clock skew tolerated")
    oidc_client_id: str | None = Field(
        None,
        description="the web catalog's client id at the provider, for sign-in with the "
        "authorization code flow (PKCE); default: the audience",
    )
    oidc_client_secret: str | None = Field(
        None, description="that client's secret, for providers that require one"
    )
    oidc_role_claim: str = Field("role", description="claim holding the role (or a list)")
    oidc_node_claim: str = Field("node", description="claim holding the caller's node id")
    oidc_department_claim: str = Field(
        "department", description="claim holding the caller's department (a namespace segment)"
    )
    rate_limit: RateLimit | None = Field(
        None,
        description='calls each signed-in caller may make, e.g. "100/s" or "50000/day" (a '
        "token bucket; an API key's own limit overrides it); unset: no limit",
    )
    rate_limit_anonymous: RateLimit | None = Field(
        None,
        description='calls each anonymous client address may make, e.g. "10/s"; unset: no limit',
    )
    ui_dev_signin: bool | None = Field(
        None,
        description="the web catalog's dev sign-in (choose a role, get a session); only on a "
        "node listening on loopback (a node on another address refuses to start with it "
        "set to true); unset: on for embedded defaults on loopback only (no database URL, "
        "no identity provider)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="processes serving this node on one port and one store; one of them "
        "(the leader) runs the store-wide loops (replication, publish jobs, usage rollup, "
        "compaction, probe tallies)",
    )
    keep_alive: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="seconds an idle HTTP connection stays open for its next request; behind "
        "a load balancer, set it above the balancer's own idle timeout",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest accepted request body")
    max_upload_bytes: int = Field(
        20 << 20,
        ge=1024,
        description="largest call body to a capability with image or file inputs (a form, a "
        "raw file, or JSON carrying base64 files)",
    )
    max_package_bytes: int = Field(
        50 << 20, ge=1024, description="largest package archive an author may upload"
    )
    package_index: str = Field(
        "https://pypi.org/simple",
        description="the package index (PEP 503 simple API) uploaded packages' requirements "
        "are installed from",
    )
    callback_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="job callbacks may reach these internal addresses (networks such as "
        "10.20.0.0/16, addresses, host names, *.domain), comma-separated or a JSON list; "
        "unset: callbacks reach public addresses only, never loopback, link-local (cloud "
        "metadata), private or reserved ones",
    )

    @field_validator("callback_allow", mode="before")
    @classmethod
    def _callback_allow(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list | tuple):
            entries = [str(v).strip() for v in value if str(v).strip()]
            parse_allow(entries)  # raises ValueError naming a bad entry
            return entries
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not names.is_node_id(value):
            raise ValueError(f"invalid node id {value!r}: {names.NODE_ID_RULE}")
        return value

    @model_validator(mode="after")
    def _dev_signin_on_loopback_only(self) -> Settings:
        if self.ui_dev_signin and not is_loopback(self.host):
            raise ValueError(
                f"the dev sign-in (ui_dev_signin) lets anyone choose who they are: it is only "
                f"for a node listening on loopback (127.0.0.1, ::1, localhost), not on "
                f"{self.host!r}; turn it off, or sign in with single sign-on (oidc_issuer)"
            )
        return self

    @property
    def dev_signin(self) -> bool:
        """Is the dev sign-in on: asked for (or embedded defaults: no database URL, no
        identity provider), and this node listens on loopback only."""
        if self.ui_dev_signin is not None:
            wanted = bool(self.ui_dev_signin)
        else:
            wanted = self.database_url is None and self.oidc_issuer is None
        return wanted and is_loopback(self.host)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "node_key.pem"
