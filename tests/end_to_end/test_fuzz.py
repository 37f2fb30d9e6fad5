"""Fuzzing the node's HTTP API with schemathesis, against the node's own /openapi.json.

Every operation of the document is driven with generated input, valid and invalid, by
several callers: anonymous, a consumer, an author, and three bad tokens. The example
capabilities are also invoked with input generated from their own input schemas.
Whatever comes in, the node must answer

1. never with a 5xx;
2. every 4xx as RFC 9457 problem+json (what ``assert_problem`` asks);
3. nothing of an entry the caller may not discover: entries with distinctive names and
   contents are published first; no answer names one to a caller that may not see it
   (unless the request itself named it) or shows its contents, and asking for a hidden
   entry answers exactly as asking for one that never existed;
4. bad tokens: 401 problem+json, whatever the route;

and the entries a caller may not write are unchanged afterwards.

Findings are collected over all operations, so one run reports them all. A bug that
cannot be fixed at once gets a ``KNOWN_BUGS`` line, which leaves its findings out of the
verdict, and a strict-xfail test reproducing it, so that fixing it turns the test into
an XPASS failure (the reminder to drop both). The four bugs this fuzzer found first are
fixed; their tests stay below as regression tests.

The requests go through the node's own Starlette ``TestClient`` (a ``requests`` adapter
hands schemathesis' requests to it), so they run in process, on the event loop the
node's lifespan started, like every other test's.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import hypothesis
import pytest
import requests
import requests.adapters
import schemathesis
import urllib3
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.app import create_app
from yunnao.registry.identity import tokens
from yunnao.settings import Settings

pytestmark = [
    pytest.mark.slow,
    # Generated tensors hold numbers FP32 cannot (1e121): numpy warns as it casts them.
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

BASE_URL = "http://testserver"
SECRET, OPEN, OTHER = "sd.qd.secret", "sd.qd.open", "sd.qd.other"
# Generated cases per operation for each of the three signed-in or anonymous callers (12
# keeps each of those runs near half a minute on a 2-core machine; 20 took near a
# minute). Bad tokens are refused before routing, so a few cases per operation show it.
EXAMPLES = 12
BAD_TOKEN_EXAMPLES = 4
AIMED_EXAMPLES = 2  # per aim (an entry, a version reference), see _aims


@dataclass(frozen=True)
class Entry:
    """A capability published before fuzzing. ``name`` may be echoed to a caller that
    named it; ``secret`` is only in its contents, so no answer may show it to a caller
    that may not see the entry; ``twin`` is a name that never exists."""

    namespace: str
    name: str
    classification: str
    status: str
    secret: str
    twin: str

    @property
    def path(self) -> str:
        return f"/v1/capabilities/{self.namespace}/{self.name}"


INTERNAL = Entry(SECRET, "int-hiddenzx1", "internal", "published", "qvzintbody", "int-absentzx1")
RESTRICTED = Entry(
    SECRET, "res-hiddenzx2", "restricted", "published", "qvzresbody", "res-absentzx2"
)
PUBLIC = Entry(OPEN, "pub-hiddenzx3", "public", "published", "qvzpubbody", "pub-absentzx3")
DRAFT = Entry(OPEN, "drf-hiddenzx4", "public", "draft", "qvzdrfbody", "drf-absentzx4")
ENTRIES = (INTERNAL, RESTRICTED, PUBLIC, DRAFT)

# The example plugins the test node loads (entry points of examples/*), published before
# fuzzing so that invocation reaches the in-process runtime. Their secret is a phrase of
# their summary; air-anomaly is internal, so anonymous callers may not see it.
AIR = Entry(
    "sd.qd.env", "air-anomaly", "internal", "published", "Flags monitoring stations", "air-anomalz"
)
FLOW = Entry(
    "sd.qd.traffic", "flow-forecast", "public", "published", "Forecasts hourly", "flow-forecasz"
)
SCENE = Entry(  # a tensor capability: also a V2 model
    "sd.qd.urban", "scene-stats", "public", "published", "Brightness, contrast", "scene-statz"
)
EXAMPLE_CAPABILITIES = (AIR, FLOW, SCENE)

# Version references the targeted cases use: a version, one that does not exist, the
# latest, the alias publishing sets, and an alias that does not exist.
REFS = ("1.0.0", "9.9.9", "latest", "production", "no-such-alias")

# Exclusions: none. Every operation of /openapi.json runs in process and deterministically
# for these callers. The cascade long poll (GET /v1/cascade/changes?wait=) and a peer sync
# (POST /v1/cascade/peers/{peer}/sync, which calls the peer) need an operator token, which
# no caller here holds, so they are refused before waiting or calling out; `wait` is still
# forced to 0 below in case that changes. Asynchronous invocation (the Prefer header, not
# in the document) is not generated, and the node runs no job workers, so no callback URL
# is ever called.


@dataclass(frozen=True)
class Profile:
    """A caller: its token (None: no Authorization header), the entries it may not
    discover, whether everything must be refused with 401, and whether it may write."""

    name: str
    token: Callable[[Node, Path], str | None]
    hidden: tuple[Entry, ...] = ()
    rejected: bool = False
    examples: int = EXAMPLES
    read_only: bool = True


def _foreign_token(node: Node, tmp: Path) -> str:
    """A well-formed token for this node, signed by another key."""
    other_key = tokens.load_or_create_key(tmp / "other-node-key.pem")
    return tokens.issue(
        other_key, node_id=NODE_ID, subject="eve", role="admin", scopes=["sd"], ttl=timedelta(1)
    )


PROFILES = [
    Profile("anonymous", lambda node, tmp: None, hidden=(INTERNAL, RESTRICTED, DRAFT, AIR)),
    Profile(
        "consumer-other-namespace",
        lambda node, tmp: node.token("consumer", OTHER),
        hidden=(RESTRICTED, DRAFT),
    ),
    Profile(
        "garbage-token",
        lambda node, tmp: "not-a-jwt",
        hidden=ENTRIES,
        rejected=True,
        examples=BAD_TOKEN_EXAMPLES,
    ),
    Profile(
        "foreign-key-token",
        _foreign_token,
        hidden=ENTRIES,
        rejected=True,
        examples=BAD_TOKEN_EXAMPLES,
    ),
    Profile(
        "expired-token",
        lambda node, tmp: node.token("admin", NODE_ID, ttl=timedelta(seconds=-120)),
        hidden=ENTRIES,
        rejected=True,
        examples=BAD_TOKEN_EXAMPLES,
    ),
    # Last: it may write (and delete) in sd.qd.secret, which the others find intact. It
    # sees all of sd.qd.secret, but not a draft of another namespace.
    Profile(
        "author-secret-namespace",
        lambda node, tmp: node.token("author", SECRET),
        hidden=(DRAFT,),
        read_only=False,
    ),
]


# ------------------------------------------------------------------ transport


class _ClientAdapter(requests.adapters.HTTPAdapter):
    """Sends what schemathesis prepares (a ``requests`` request) through the node's
    Starlette TestClient and hands the answer back as a ``requests`` response."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        headers = [
            (k.encode("latin-1"), v if isinstance(v, bytes) else v.encode("latin-1"))
            for k, v in request.headers.items()
        ]
        body = request.body.encode() if isinstance(request.body, str) else request.body
        resp = self.client.request(
            str(request.method),
            str(request.url),
            headers=headers,
            content=body,
            follow_redirects=False,
        )
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(resp.content),
            # httpx has decoded the body already
            headers=[(k, v) for k, v in resp.headers.multi_items() if k != "content-encoding"],
            status=resp.status_code,
            reason=resp.reason_phrase,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)


def _session(client: TestClient) -> requests.Session:
    session = requests.Session()
    adapter = _ClientAdapter(client)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ------------------------------------------------------------------ the node


@dataclass
class FuzzNode:
    node: Node
    tmp: Path
    session: requests.Session
    schema: Any  # schemathesis' OpenApiSchema of the node's /openapi.json
    invoke_schema: Any  # POST /v1/invoke of the examples, typed by their input schemas

    def read(self, entry: Entry) -> Any:
        """The entry and its versions as an admin sees them (None: gone)."""
        admin = self.node.auth("admin", NODE_ID)
        resp = self.node.client.get(entry.path, headers=admin)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        versions = self.node.client.get(entry.path + "/versions", headers=admin)
        assert versions.status_code == 200, versions.text
        entry = resp.json()
        entry.pop("health", None)  # live state (reachability, recent calls), not content
        return entry, versions.json()


def _invoke_document(node: Node) -> dict[str, Any]:
    """An OpenAPI document of POST /v1/invoke for each example capability, with the
    capability's own input schema, so that generated input gets past validation."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for cap in EXAMPLE_CAPABILITIES:
        resp = node.client.get(f"{cap.path}/versions/1.0.0", headers=node.auth("admin"))
        assert resp.status_code == 200, resp.text
        prefix = re.sub(r"\W", "_", cap.name)
        # the schema's own $defs become components, its refs follow them
        text = json.dumps(resp.json()["input_schema"])
        schema = json.loads(text.replace('"#/$defs/', f'"#/components/schemas/{prefix}_'))
        for def_name, definition in schema.pop("$defs", {}).items():
            components[f"{prefix}_{def_name}"] = definition
        body = {
            "type": "object",
            "properties": {
                "input": schema,
                "timeout": {"type": "number", "minimum": 5, "maximum": 60},
            },
            "required": ["input"],
            "additionalProperties": False,
        }
        paths[f"/v1/invoke/{cap.namespace}/{cap.name}"] = {
            "post": {
                "operationId": f"invoke-{cap.name}",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {"200": {"description": "the output"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "example invocations", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }


def _settings(tmp: Path) -> Settings:
    """A SQLite node with no job workers and no replication loops: nothing in the
    background that a generated request could send outside the process."""
    return Settings(
        node_id=NODE_ID,
        data_dir=tmp / "node",
        database_url=f"sqlite:///{tmp / 'registry.db'}",
        job_workers=0,
        cascade_sync=False,
        cascade_keep_days=None,
    )


def _publish_entries(node: Node) -> None:
    admin = node.auth("admin", NODE_ID)
    for e in ENTRIES:
        resp = node.publish(
            e.namespace,
            e.name,
            headers=admin,
            title=f"{e.name} {e.secret}",
            summary=f"summary {e.secret}",
            description=f"# {e.secret}\n\nOnly for those who may see {e.secret}.",
            tags=[e.secret],
            owner=f"owner {e.secret}",
            contact=f"{e.secret}@example.gov.cn",
            classification=e.classification,
            status=e.status,
        )
        assert resp.status_code == 201, resp.text
    for cap in EXAMPLE_CAPABILITIES:
        resp = node.client.post("/v1/publish", json={"capability": cap.name}, headers=admin)
        assert resp.status_code == 201, resp.text
        assert resp.json()["namespace"] == cap.namespace, resp.text
    # Their owners call the hidden capabilities (RESTRICTED has nothing to run: 409), as
    # happens on any node: no answer to anyone else may show it afterwards.
    for e in (RESTRICTED, AIR):
        resp = node.client.post(
            f"/v1/invoke/{e.namespace}/{e.name}", json={"input": {}}, headers=admin
        )
        assert resp.status_code in (409, 422), resp.text


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    """One node for the module, with the marker entries and the examples published."""
    tmp = tmp_path_factory.mktemp("fuzz")
    settings = _settings(tmp)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        node = Node(client=client, settings=settings)
        _publish_entries(node)
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        invoke_schema = schemathesis.openapi.from_dict(_invoke_document(node))
        yield FuzzNode(node, tmp, _session(client), schema, invoke_schema)


# ------------------------------------------------------------------ generation


def _aimed(operation: Any) -> list[dict[str, str]]:
    """Path parameters aiming ``operation`` at the marker entries, the examples and a new
    name a writer may publish, under each version reference: random names never hit them."""
    params = {p.name for p in operation.path_parameters}
    invoke = operation.path.startswith("/v1/invoke/")
    targets = [(e.namespace, e.name) for e in ENTRIES + EXAMPLE_CAPABILITIES]
    aimed = []
    for namespace, name in [*targets, (SECRET, "fuzz-new")]:
        for ref in (None, *REFS):
            fixed: dict[str, str] = {}
            if {"namespace", "name"} <= params:
                if ref is not None and not invoke:
                    continue
                fixed.update(namespace=namespace, name=f"{name}@{ref}" if ref else name)
            if "model" in params:
                fixed["model"] = f"{namespace}.{name}"
            if "version" in params:
                if ref is None:
                    continue
                fixed["version"] = ref
            if fixed:
                aimed.append(fixed)
    return aimed


def _aims(operation: Any) -> list[dict[str, Any]]:
    """``as_strategy`` arguments aiming ``operation`` at the marker entries and the
    examples, by path, by search text and by namespace."""
    aims: list[dict[str, Any]] = [{"path_parameters": fixed} for fixed in _aimed(operation)]
    query = {p.name for p in operation.query}
    if "q" in query:
        aims += [{"query": {"q": m}} for e in ENTRIES for m in (e.name, e.secret)]
    if "namespace" in query:
        aims += [{"query": {"namespace": ns}} for ns in (SECRET, OPEN)]
    return aims


# Publishing fields the document leaves free but the node checks (semver, the tag
# alphabet, JSON Schema): a random publish never gets past validation without this.
_PUBLISH_KEEP = {"title", "version", "summary", "classification", "status", "kind", "domain"}


def _publishable(case: Any, version: str, minimal: bool) -> Any:
    """``case`` with a version that parses, and (``minimal``) only the plain fields, when
    it publishes: so that writers' publishes succeed too."""
    if isinstance(case.body, dict) and "version" in case.body:
        case.body["version"] = version
        if minimal:
            for key in set(case.body) - _PUBLISH_KEEP:
                del case.body[key]
    return case


def _aimed_strategy(operation: Any, aim: dict[str, Any]) -> st.SearchStrategy[Any]:
    cases = operation.as_strategy(GenerationMode.POSITIVE, **aim)
    versions = st.sampled_from(["1.0.0", "1.0.1", "2.0.0"])
    return st.tuples(cases, versions, st.booleans()).map(lambda args: _publishable(*args))


# ------------------------------------------------------------------ oracles


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _not_a_problem(status: int, ctype: str, content: bytes) -> str | None:
    """Why an answer is not RFC 9457 problem+json as ``assert_problem`` wants it."""
    if not ctype.startswith("application/problem+json"):
        return f"content-type {ctype!r}, not application/problem+json"
    body = _json(content)
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("status") != status:
        return f"status member {body.get('status')!r}, not {status}"
    if not (body.get("title") and body.get("detail")):
        return "no title or detail"
    if not str(body.get("type", "")).startswith("https://"):
        return f"type {body.get('type')!r} is not an https URI"
    if b"Traceback" in content:
        return "a traceback in the body"
    return None


def _problem(content: bytes) -> dict[str, Any]:
    body = _json(content)
    return body if isinstance(body, dict) else {}


def _as_absent(content: bytes, entry: Entry) -> Any:
    """An answer about ``entry`` as it reads about its twin (request ids differ)."""
    text = content.decode("utf-8", "replace").replace(entry.name, entry.twin)
    body = _json(text.encode())
    if isinstance(body, dict):
        body.pop("request_id", None)
    return body if body is not None else text


@dataclass(frozen=True)
class Finding:
    profile: str
    operation: str
    kind: str  # 5xx, not problem+json, bad token not refused, leak, existence revealed
    status: int
    problem: dict[str, Any]
    about: str  # an entry's name or the status: findings are reported once per key
    text: str
    absent_status: int | None = None  # existence revealed: what the absent twin answered

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.profile, self.operation, self.kind, self.about


@dataclass(frozen=True)
class KnownBug:
    """A reported server bug, reproduced by its own xfail test; ``matches`` recognizes
    its findings."""

    title: str
    matches: Callable[[Finding], bool]


def _slug(f: Finding) -> str:
    return str(f.problem.get("type", "")).rsplit("/", 1)[-1]


KNOWN_BUGS: list[KnownBug] = []  # none open: the four the fuzzer found are fixed


def _known(finding: Finding) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(finding)), None)


@dataclass
class Findings:
    new: dict[tuple[str, ...], Finding] = field(default_factory=dict)
    known: dict[str, list[Finding]] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        bug = _known(finding)
        if bug is not None:
            self.known.setdefault(bug.title, []).append(finding)
        else:
            self.new.setdefault(finding.key, finding)

    def report(self) -> str:
        return f"{len(self.new)} findings:\n\n" + "\n\n".join(f.text for f in self.new.values())


def _sent_text(prepared: requests.PreparedRequest) -> str:
    body = prepared.body or b""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    headers = [f"{k}: {v}" for k, v in prepared.headers.items()]
    return "\n".join([str(prepared.url), unquote(str(prepared.url)), body, *headers])


def _check(fuzz: FuzzNode, profile: Profile, case: Any, findings: Findings) -> None:
    """Send ``case`` as ``profile`` and record what breaks the oracles."""
    # The caller's credentials are the profile's, never generated ones.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    token = profile.token(fuzz.node, fuzz.tmp)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    if case.query and "wait" in case.query:
        case.query["wait"] = 0  # the long poll never waits (see the exclusions note)
    response = case.call(session=fuzz.session, base_url=BASE_URL, headers=headers)
    status, content, prepared = response.status_code, response.content, response.request
    if token is not None and "Authorization" not in prepared.headers:
        # schemathesis drops the credentials in some invalid cases: an anonymous call
        profile = replace(PROFILES[0], name=f"{profile.name} (token left out)")
    ctype = (response.headers.get("content-type") or [""])[0]
    sent = _sent_text(prepared)
    operation = f"{case.method} {case.path}"

    def record(kind: str, about: str, why: str, absent_status: int | None = None) -> None:
        body = prepared.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        shown = {k: v for k, v in prepared.headers.items() if k.lower() != "authorization"}
        text = (
            f"[{profile.name}] {operation}: {kind}: {why}\n"
            f"  request: {prepared.method} {prepared.url}\n  headers: {shown}\n"
            f"  body: {str(body)[:400]}\n"
            f"  response {status} {ctype}: {content[:600].decode('utf-8', 'replace')}"
        )
        problem = _problem(content)
        findings.add(
            Finding(profile.name, operation, kind, status, problem, about, text, absent_status)
        )

    if status >= 500:
        asked = (_json(prepared.body or b"") or {}) if prepared.body else {}
        timeout = asked.get("timeout") if isinstance(asked, dict) else None
        # A caller that gives a call under a second to answer may get its 504.
        if not (status == 504 and isinstance(timeout, (int, float)) and timeout < 1):
            record("5xx", str(status), f"answered {status}")
    elif 400 <= status < 500:
        why = _not_a_problem(status, ctype, content)
        if why is not None:
            record("not problem+json", str(status), why)
    if profile.rejected and status != 401:
        record("bad token not refused", str(status), f"a bad token got {status}, not 401")

    answer = "\n".join(
        [*(f"{k}: {v}" for k, vs in response.headers.items() for v in vs), response.text]
    )
    for entry in profile.hidden:
        if entry.secret in answer and entry.secret not in sent:
            record("leak", entry.name, f"shows the contents of hidden {entry.name}")
        if entry.name in answer and entry.name not in sent:
            record("leak", entry.name, f"names hidden {entry.name}, which it was not asked for")
        if entry.name in str(prepared.url) and not profile.rejected and profile.read_only:
            # Asking for a hidden entry answers as asking for one that never existed.
            twin = prepared.copy()
            twin.url = str(prepared.url).replace(entry.name, entry.twin)
            other = fuzz.session.send(twin, allow_redirects=False)
            mine, absent = _as_absent(content, entry), _as_absent(other.content, entry)
            if other.status_code != status or mine != absent:
                record(
                    "existence revealed",
                    entry.name,
                    f"hidden {entry.name} answered {status} {mine}, absent {entry.twin} "
                    f"answered {other.status_code} {absent}",
                    other.status_code,
                )


# ------------------------------------------------------------------ fuzzing

SETTINGS: dict[str, Any] = {
    "deadline": None,
    "derandomize": True,  # the same cases on every run and machine
    "database": None,
    "suppress_health_check": list(HealthCheck),
    # Findings are collected, not raised: nothing to shrink, and one run reports them all.
    "phases": [Phase.explicit, Phase.generate],
}


def _run(examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    @hypothesis.settings(max_examples=examples, **SETTINGS)
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    run()


def _fuzz_schema(fuzz: FuzzNode, profile: Profile, schema: Any, findings: Findings) -> list[str]:
    """Fuzz each operation of ``schema`` as ``profile``: valid and invalid cases, then a
    few valid ones for each aim (bad tokens are refused before any aim could matter)."""
    operations = []

    def check(case: Any) -> None:
        _check(fuzz, profile, case, findings)

    for result in schema.get_all_operations():
        operation = result.ok()
        operations.append(f"{operation.method.upper()} {operation.path}")
        anything = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
        _run(profile.examples, anything, check)
        if not profile.rejected:
            for aim in _aims(operation):
                _run(AIMED_EXAMPLES, _aimed_strategy(operation, aim), check)
    return operations


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_fuzz_the_api(fuzz: FuzzNode, profile: Profile) -> None:
    findings = Findings()
    before = {e: fuzz.read(e) for e in ENTRIES}  # not the module's: an author may have run
    operations = _fuzz_schema(fuzz, profile, fuzz.schema, findings)
    assert len(operations) >= 40 and "POST /v1/invoke/{namespace}/{name}" in operations
    invoked = _fuzz_schema(fuzz, profile, fuzz.invoke_schema, findings)
    assert len(invoked) == len(EXAMPLE_CAPABILITIES)
    for entry in ENTRIES:
        if profile.read_only or entry.namespace != SECRET:
            now = fuzz.read(entry)
            if now != before[entry]:
                findings.new[("entries", entry.name)] = Finding(
                    profile.name,
                    "-",
                    "changed",
                    0,
                    {},
                    entry.name,
                    f"[{profile.name}] {entry.name} changed, but this caller may not write "
                    f"it:\n  before: {before[entry]}\n  after: {now}",
                )
    assert not findings.new, findings.report()


# ------------------------------------------------------------------ malformed bodies
# Bodies generation does not reach (issue 15, item 8): JSON nested deeper than the
# parser's stack, integers longer than Python converts, and V2 infer bodies with wrong
# shapes, datatypes and members. Each is sent to every operation that takes a body,
# aimed at the examples, by an anonymous caller and a writer: never a 5xx, every 4xx a
# problem document.

_DEEP = "[" * 50_000 + "]" * 50_000
_LONG_INT = "9" * 5000
MALFORMED_BODIES = {
    "deep array": _DEEP,
    "deep object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "deep member": '{"input": ' + _DEEP + ', "version": "1.0.0", "title": "t"}',
    "long integer": '{"input": ' + _LONG_INT + ', "version": ' + _LONG_INT + "}",
    "long integer deep inside": '{"input": {"image": [[' + _LONG_INT + "]]}}",
}
_FRAME = [0.5] * 9


def _v2(**changes: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "FP32", "shape": [3, 3], "data": _FRAME, **changes}


MALFORMED_V2 = {
    "huge shape": {"inputs": [_v2(shape=[2**33, 2**33], data=[])]},
    "empty huge shape": {"inputs": [_v2(shape=[0, 2**70], data=[])]},
    "int64-overflowing shape": {"inputs": [_v2(shape=[2**62, 4], data=[])]},
    "boolean sizes": {"inputs": [_v2(shape=[True, True], data=[0.5])]},
    "shape and data disagree": {"inputs": [_v2(shape=[3, 4])]},
    "negative size": {"inputs": [_v2(shape=[-1, 9])]},
    "strings for FP32": {"inputs": [_v2(data=["a"] * 9)]},
    "ragged data": {"inputs": [_v2(data=[[0.1, 0.2], [0.3]])]},
    "no float holds it": {"inputs": [_v2(data=[10**400] * 9)]},
    "BYTES where FP32": {"inputs": [_v2(datatype="BYTES", data=["a"] * 9)]},
    "name a list": {"inputs": [_v2(name=["image"])]},
    "tensor not an object": {"inputs": ["image"]},
    "parameters a list": {"inputs": [_v2()], "parameters": [1]},
    "tensor parameters a string": {"inputs": [_v2(parameters="x")]},
    "binary size negative": {"inputs": [_v2(parameters={"binary_data_size": -4})]},
    "outputs not objects": {"inputs": [_v2()], "outputs": [1]},
    "outputs an object": {"inputs": [_v2()], "outputs": {"name": "brightness"}},
    "output parameters a list": {
        "inputs": [_v2()],
        "outputs": [{"name": "brightness", "parameters": [1]}],
    },
    "input sent twice": {"inputs": [_v2(), _v2()]},
}


def _malformed_verdict(resp: Any) -> str | None:
    if resp.status_code >= 500:
        return f"answered {resp.status_code}: {resp.text[:300]}"
    if 400 <= resp.status_code < 500:
        ctype = resp.headers.get("content-type", "")
        return _not_a_problem(resp.status_code, ctype, resp.content)
    return None


@pytest.mark.parametrize("profile", [PROFILES[0], PROFILES[-1]], ids=["anonymous", "author"])
def test_malformed_bodies_are_4xx_problems_everywhere(fuzz: FuzzNode, profile: Profile) -> None:
    client = fuzz.node.client
    token = profile.token(fuzz.node, fuzz.tmp)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    headers = {"Content-Type": "application/json", **auth}
    found: list[str] = []
    sent = 0
    for result in fuzz.schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() not in ("POST", "PUT", "PATCH") or not operation.body:
            continue
        params = {p.name for p in operation.path_parameters}
        aimed = [a for a in _aimed(operation) if set(a) == params] or [{}]
        fixed = {**dict.fromkeys(params, "x"), **aimed[0]}
        path = operation.path.format(**fixed)
        for what, body in MALFORMED_BODIES.items():
            resp = client.request(operation.method.upper(), path, content=body, headers=headers)
            sent += 1
            why = _malformed_verdict(resp)
            if why:
                found.append(f"{operation.method.upper()} {path} ({what}): {why}")
    for ref in (None, "1.0.0"):
        version = f"/versions/{ref}" if ref else ""
        path = f"/v2/models/{SCENE.namespace}.{SCENE.name}{version}/infer"
        for what, body in {**MALFORMED_BODIES, **MALFORMED_V2}.items():
            raw = body if isinstance(body, str) else json.dumps(body)
            resp = client.post(path, content=raw, headers=headers)
            sent += 1
            why = _malformed_verdict(resp)
            if why is None and resp.status_code < 400:
                why = f"accepted with {resp.status_code}"
            if why:
                found.append(f"POST {path} ({what}): {why}")
    assert sent > 80
    assert not found, "\n".join(found)


# ------------------------------------------------------------------ found by fuzzing
# Bugs the fuzzer found, fixed; each stays as a regression test. A bug found later gets a
# KNOWN_BUGS line and a strict-xfail test like these until it is fixed.


def test_a_version_reference_mlflow_cannot_take_is_404_not_502(fuzz: FuzzNode) -> None:
    client = fuzz.node.client
    model = f"{SCENE.namespace}.{SCENE.name}"
    for method, path in [
        ("GET", f"/v2/models/{model}/versions/a b"),
        ("GET", f"/v2/models/{model}/versions/a b/ready"),
        ("POST", f"/v1/invoke/{SCENE.namespace}/{SCENE.name}@a b"),
        ("POST", "/v1/invoke/sd.qd.nowhere/nothing@a b"),
    ]:
        body = {"input": {}} if method == "POST" else None
        assert_problem(client.request(method, path, json=body), 404)


def test_a_frame_scene_stats_cannot_use_is_invalid_input_not_a_failure(fuzz: FuzzNode) -> None:
    for image in ([[]], [[0.5]], [[0.1, 0.2, 0.3, 0.4]]):
        resp = fuzz.node.client.post(
            f"/v1/invoke/{SCENE.namespace}/{SCENE.name}", json={"input": {"image": image}}
        )
        assert_problem(resp, 422)


def test_a_hidden_capability_answers_as_an_absent_one_whatever_the_reference(
    fuzz: FuzzNode,
) -> None:
    client = fuzz.node.client  # anonymous: air-anomaly is internal
    for ref in REFS:
        for method, path in [
            ("POST", "/v1/invoke/{ns}/{name}@{ref}"),
            ("GET", "/v2/models/{ns}.{name}/versions/{ref}"),
        ]:
            body = {"input": {}} if method == "POST" else None
            hidden, absent = (
                client.request(method, path.format(ns=AIR.namespace, name=n, ref=ref), json=body)
                for n in (AIR.name, AIR.twin)
            )
            assert hidden.status_code == absent.status_code == 404, (ref, hidden.text)
            assert _as_absent(hidden.content, AIR) == _as_absent(absent.content, AIR), ref


def test_metrics_name_no_capability_the_caller_may_not_discover(fuzz: FuzzNode) -> None:
    node = fuzz.node
    example = {"readings": [{"station": s, "pm25": v} for s, v in [("a", 1), ("b", 2), ("c", 3)]]}
    resp = node.client.post(
        f"/v1/invoke/{AIR.namespace}/{AIR.name}",
        json={"input": example},
        headers=node.auth("consumer", OTHER),
    )
    assert resp.status_code == 200, resp.text
    assert node.client.get(f"/v1/capabilities/{AIR.namespace}/{AIR.name}").status_code == 404
    # Metrics name every capability invoked: they are for this node's operators only.
    metrics = node.client.get("/metrics")
    assert_problem(metrics, 401)
    assert AIR.name not in metrics.text
    assert_problem(node.client.get("/metrics", headers=node.auth("consumer", OTHER)), 403)
