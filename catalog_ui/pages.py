"""The pages: catalog search, a capability, "try it", the operator view, sign-in and the
language switch. Each page reads through the same store, gateway and policy module as
the HTTP API, as the signed-in identity (a session cookie holding a bearer token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from yunnao.cascade.peers import PeerStatus
from yunnao.plugins.errors import FieldError, Forbidden, NotFound, ValidationFailed, YunnaoError
from yunnao.plugins.media import media_fields
from yunnao.registry import access, names, schemas, search
from yunnao.registry.access import Action, Identity
from yunnao.registry.health_view import add_health
from yunnao.registry.http import is_loopback
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE, identity_of
from yunnao.runtimes.adapters.sandbox.status import sandbox_status
from yunnao.runtimes.gateway import usage_stats
from yunnao.runtimes.gateway.v2 import tensor_specs, v2_callable

from . import access_panel, authors, charts, forms, i18n, review_panel, snippets, sso, text, tryit
from .names import Namer

_HERE = Path(__file__).parent
_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
FACETS = ("domain", "node", "namespace", "runtime", "classification", "kind", "tag")
PER_PAGE = 20
SESSION_HOURS = 8


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = i18n.language(request)
    settings = request.app.state.settings
    identity: Identity = identity_of(request)
    named = Namer.of(request, lang)
    html = _env.get_template(template).render(
        request=request,
        _=i18n.translator(lang),
        lang=lang,
        languages=i18n.LANGUAGES,
        identity=identity,
        node_id=settings.node_id,
        node_title=named.title(settings.node_id, settings.node_title),
        named=named,
        dev_signin_active=dev_signin_enabled(settings),
        dev_signin=dev_signin_refusal(request) is None,
        may_operate=access.decide(
            identity, Action.READ_NODE, access.Entry(settings.node_id)
        ).allowed,
        may_publish=authors.may_publish(identity, settings.node_id),
        may_assess=access.decide(identity, Action.AUDIT, access.Entry(settings.node_id)).allowed,
        may_review=access.decide(identity, Action.REVIEW, access.Entry(settings.node_id)).allowed,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={"Content-Language": lang})


def _page(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Problems on a page answer as a page (in the visitor's language), not JSON."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except YunnaoError as exc:
            return _render(request, "error.html", status=exc.status, problem=exc)

    wrapped.__name__ = handler.__name__
    return wrapped


def dev_signin_enabled(settings: Any) -> bool:
    """The dev sign-in (pick a role, get a session) is for a node on embedded defaults on
    loopback: on when set (or, unset, without a database or identity provider), and only
    while the node listens on loopback (see :attr:`~yunnao.settings.Settings.dev_signin`)."""
    return bool(settings.dev_signin)


_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def dev_signin_refusal(request: Request) -> str | None:
    """Why this request may not use the dev sign-in (None: it may). Besides the node's
    setting, the request itself must come from this machine: a loopback client address,
    and no proxy's forwarding headers (a proxy on this machine may relay the network)."""
    settings = request.app.state.settings
    if not dev_signin_enabled(settings):
        if settings.ui_dev_signin and not is_loopback(settings.host):
            return (
                f"the dev sign-in is off on this node: it listens on {settings.host}, and the "
                "dev sign-in works only on a node listening on loopback"
            )
        return "the dev sign-in is off on this node"
    client = request.client.host if request.client else None
    if not is_loopback(client):
        return "the dev sign-in answers only requests made on this node's own machine"
    if any(h in request.headers for h in _PROXY_HEADERS):
        return "the dev sign-in does not answer requests relayed by a proxy"
    return None


def _check_origin(request: Request) -> None:
    """Forms post only from this site's own pages (the session cookie is also SameSite)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("this form must be sent from this node's own pages")


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


# ---------------------------------------------------------------- catalog


def _query_url(params: list[tuple[str, str]], **changes: Any) -> str:
    """The catalog URL with ``params`` changed: ``toggle=(facet, value)`` adds or removes a
    facet value, ``page=N`` moves; any other change resets to page 1."""
    out = [(k, v) for k, v in params if k != "page"]
    toggle = changes.get("toggle")
    if toggle is not None:
        if toggle in out:
            out.remove(toggle)
        else:
            out.append(toggle)
    page = changes.get("page")
    if page and page > 1:
        out.append(("page", str(page)))
    return "/?" + urlencode(out) if out else "/"


@_page
async def home(request: Request) -> Response:
    store = request.app.state.catalog.store
    q = request.query_params.get("q", "").strip()[:200]
    filters = {
        f: [v for v in request.query_params.getlist(f) if v][:20]
        for f in FACETS
        if request.query_params.getlist(f)
    }
    try:
        page = max(1, min(int(request.query_params.get("page", "1")), 10_000))
    except ValueError:
        page = 1
    query = search.SearchQuery(q=q, filters=filters, page=page, per_page=PER_PAGE)
    result = await _run(store.search, identity_of(request), query)
    await add_health(request, result.items)  # live: reachable now, p50, success rate
    summary_of = Namer(i18n.language(request)).summary
    params = [(k, v) for k, v in request.query_params.multi_items() if k in ("q", *FACETS) and v]
    pages = max(1, -(-result.total // PER_PAGE))
    facets = [
        (
            facet,
            [
                (value, count, (facet, value) in params, _query_url(params, toggle=(facet, value)))
                for value, count in counts.items()
            ],
        )
        for facet, counts in result.facets.items()
        if counts and facet in FACETS
    ]
    return _render(
        request,
        "home.html",
        q=q,
        items=[
            (item, text.highlight(item.title, q), text.highlight(summary_of(item), q))
            for item in result.items
        ],
        total=result.total,
        facets=facets,
        page=page,
        pages=pages,
        prev_url=_query_url(params, page=page - 1) if page > 1 else None,
        next_url=_query_url(params, page=page + 1) if page < pages else None,
        clear_url="/?" + urlencode([("q", q)]) if q else "/",
    )


# ---------------------------------------------------------------- one capability


def _usage(request: Request, namespace: str, name: str) -> dict[str, Any]:
    """Calls, errors and latency per day over the last 30 days (signed-in callers)."""
    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=29), today + timedelta(days=1)
    rows = usage_stats.report(
        request.app.state.usage_engine,
        since=since,
        until=until,
        namespaces=[namespace],
        identity=identity_of(request),
    )
    mine = {r.day: r for r in rows if r.key == f"{namespace}/{name}"}
    days = [since + timedelta(days=i) for i in range(30)]
    labels = [d.strftime("%m-%d") for d in days]
    calls = [float(mine[d].calls) if d in mine else 0.0 for d in days]
    return {
        "total": int(sum(calls)),
        "labels": labels,
        "calls": [mine[d].calls if d in mine else 0 for d in days],
        "p50": [mine[d].p50_ms if d in mine else None for d in days],
        "p99": [mine[d].p99_ms if d in mine else None for d in days],
        "errors": [float(mine[d].errors) if d in mine else 0.0 for d in days],
        "refused": [float(mine[d].refused) if d in mine else 0.0 for d in days],
    }


@_page
async def capability(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    identity = identity_of(request)
    store = request.app.state.catalog.store
    cap, _etag = await _run(store.describe, identity, namespace, name)
    await add_health(request, [cap])
    versions: list[schemas.Version] = await _run(store.list_versions, identity, namespace, name)
    current = next((v for v in versions if v.version == cap.latest_version), None)
    if current is None and versions:
        current = versions[0]
    _ = i18n.translator(i18n.language(request))
    example = current.examples[0].input if current and current.examples else None
    sample = example
    if current and example is None:  # the snippets show an input that runs as copied
        sample = snippets.sample_input(dict(current.input_schema))
    anyone = snippets.anyone_may_call(cap, store.node_id)
    v2 = current and v2_callable(dict(current.input_schema), dict(current.output_schema))
    tensors = tensor_specs(dict(current.input_schema)) if current and v2 else None
    usage = None
    if identity.authenticated:
        usage = await _run(_usage, request, namespace, name)
    charts_html = None
    if usage is not None and usage["total"]:
        charts_html = {
            "calls": charts.bars(
                _("Calls per day"),
                usage["labels"],
                [
                    charts.Series(_("calls"), usage["calls"]),
                    charts.Series(_("refused (4xx)"), usage["refused"]),
                    charts.Series(_("errors (5xx)"), usage["errors"]),
                ],
            ),
            "latency": charts.lines(
                _("Latency per day"),
                usage["labels"],
                [charts.Series("p50", usage["p50"]), charts.Series("p99", usage["p99"])],
                unit=" ms",
            ),
        }
    return _render(
        request,
        "capability.html",
        cap=cap,
        versions=versions,
        current=current,
        description=text.markdown(Namer(i18n.language(request)).description(cap)),
        input_rows=forms.rows(current.input_schema) if current else [],
        output_rows=forms.rows(forms.stream_items(current.output_schema)) if current else [],
        controls=forms.fields(current.input_schema, example) if current else [],
        snippets=snippets.snippets(
            str(request.base_url).rstrip("/"),
            namespace,
            name,
            sample,
            tensors,
            anonymous=anyone,
            files=media_fields(dict(current.input_schema)) if current else None,
            stream=bool(current and current.output_schema.get("x-stream")),
        ),
        anyone=anyone,
        down_since=authors.beijing(cap.health.since if cap.health else None),
        usage=usage,
        charts=charts_html,
        callable_=current is not None and current.status in ("published", "deprecated"),
        streaming=bool(current and current.output_schema.get("x-stream")),
        author_actions=authors.version_actions(identity, cap, versions, store.node_id),
        access_request=await access_panel.panel(request, cap),
        reviews=await review_panel.panel(request, cap),
    )


async def try_it(request: Request) -> Response:
    """The "try it" form, posted by htmx: invoke through the gateway as the visitor and
    answer a fragment with the output, or the problem (:mod:`.tryit`)."""
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    outcome = await tryit.outcome(request, _check_origin)
    # Always 200: the fragment shows the call's own status (htmx swaps only 2xx answers).
    if "hx-request" in request.headers:
        return _render(request, "_result.html", **outcome)
    back = f"/c/{namespace}/{name}"  # without script, the form posts here: a whole page
    return _render(request, "try_page.html", back=back, **outcome)


# ---------------------------------------------------------------- operators


@_page
async def operators(request: Request) -> Response:
    settings = request.app.state.settings
    access.require(identity_of(request), Action.READ_NODE, settings.node_id)
    cascade = request.app.state.cascade
    history = request.app.state.lag_history
    _ = i18n.translator(i18n.language(request))
    peers = [PeerStatus.of(p) for p in await _run(cascade.peers.all)]
    lag_charts = {}
    for peer in peers:
        samples = history.of(peer.id)
        if samples:
            lag_charts[peer.id] = charts.lines(
                _("Lag of {peer}", peer=peer.id),
                [datetime.fromtimestamp(s.at, UTC).strftime("%H:%M:%S") for s in samples],
                [charts.Series(_("entries behind"), [float(s.lag_entries) for s in samples])],
            )
    rejections = await _run(cascade.peers.rejections, None, 20)
    runtimes = request.app.state.invoker.gateway.runtimes
    health = await runtimes.health()
    sandbox = await sandbox_status(runtimes, request.app.state.env_usage)
    result = await _run(
        request.app.state.catalog.store.search,
        identity_of(request),
        search.SearchQuery(filters={"node": [settings.node_id]}, per_page=100),
    )
    parent = next((p for p in peers if p.relation == "parent"), None)
    leadership = request.app.state.leadership
    return _render(
        request,
        "operators.html",
        node_public_key=cascade.public_key,
        leadership=await _run(leadership.describe) if leadership else None,
        parent=parent,
        children=[p for p in peers if p.relation == "child"],
        peers=peers,
        lag_charts=lag_charts,
        rejections=rejections,
        runtimes=sorted(runtimes.factories),
        health=health,
        sandbox=sandbox,
        own=[
            (item, health.get(item.runtime or ""))
            for item in result.items
            if item.runtime != "remote"
        ],
    )


# ---------------------------------------------------------------- sign-in, language


def _next(request: Request, fallback: str = "/") -> str:
    """A local path to go back to (never another site)."""
    target = request.query_params.get("next") or fallback
    return target if target.startswith("/") and not target.startswith("//") else fallback


def landing(path: str) -> str:
    """Where a sign-in ends: the page it started from, but the federation overview (the
    staff's landing page) instead of the catalog's first page."""
    return "/overview" if path == "/" else path


@_page
async def signin(request: Request) -> Response:
    settings = request.app.state.settings
    if request.method == "GET":
        return _render(
            request,
            "signin.html",
            next=_next(request),
            roles=access.ROLES,
            sso_enabled=request.app.state.sso is not None,
            dev_signin_refused=dev_signin_refusal(request),
        )
    _check_origin(request)
    refusal = dev_signin_refusal(request)
    if refusal is not None:
        how = (
            "sign in with single sign-on"
            if request.app.state.sso is not None
            else "call the API with a node token (yunnao token create) or an API key"
        )
        raise Forbidden(f"{refusal}: {how}")
    form = await request.form()
    subject = str(form.get("subject", "")).strip()[:100]
    role = str(form.get("role", "consumer"))
    scope = str(form.get("scope", "")).strip() or settings.node_id
    department = str(form.get("department", "")).strip() or None
    problems = []
    if not subject:
        problems.append(("subject", "required"))
    if role not in access.ROLES:
        problems.append(("role", f"one of {', '.join(access.ROLES)}"))
    if not names.is_node_id(scope):
        problems.append(("scope", names.NAMESPACE_RULE))
    if department is not None and not names.is_namespace(department):
        problems.append(("department", names.NAMESPACE_RULE))
    if problems:
        raise ValidationFailed(
            "; ".join(f"{f}: {m}" for f, m in problems),
            errors=[FieldError(f, m) for f, m in problems],
        )
    # A web page session (audience <node>#ui): the API refuses it as a bearer token.
    token = tokens.issue_session(
        request.app.state.node_key,
        node_id=settings.node_id,
        identity=Identity(
            subject=subject,
            role=role,
            scopes=(scope,),
            issuer=settings.node_id,
            node=settings.node_id,
            department=department,
        ),
        ttl=timedelta(hours=SESSION_HOURS),
    )
    response = RedirectResponse(landing(_next(request)), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@_page
async def signin_sso(request: Request) -> Response:
    return await sso.start(request, _next(request))


@_page
async def sso_callback(request: Request) -> Response:
    return await sso.callback(request)


async def signout(request: Request) -> Response:
    _check_origin(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def language(request: Request) -> Response:
    chosen = request.path_params["lang"]
    if chosen not in i18n.LANGUAGES:
        raise NotFound(f"no language {chosen!r}; one of {', '.join(i18n.LANGUAGES)}")
    response = RedirectResponse(_next(request), status_code=303)
    response.set_cookie(i18n.COOKIE, chosen, max_age=365 * 86400, samesite="lax")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/c/{namespace}/{name}", capability, methods=["GET"]),
        Route("/c/{namespace}/{name}/try", try_it, methods=["POST"]),
        Route("/ops", operators, methods=["GET"]),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signin/sso", signin_sso, methods=["GET"]),
        Route("/signin/callback", sso_callback, methods=["GET"], name="sso_callback"),
        Route("/signout", signout, methods=["POST"]),
        Route("/lang/{lang}", language, methods=["GET"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]


# Audit names for the pages that change something or call a capability.
ACTIONS: dict[Any, str] = {
    try_it: "uiTryIt",
    signin: "uiSignIn",
    sso_callback: "uiSignIn",
    signout: "uiSignOut",
}
