"""The invocation gateway: from ``namespace/name[@ref]`` and a JSON input to an answer.

:meth:`Gateway.call` is the one entry point of a call, used by every front: the
``/v1/invoke`` route, the V2 inference route, the job workers and the web page's try-it.
A rule added to a call is added there, once. The path of one call: the forwarding
rules for a call a linked node forwarded (a loop is 508, a passed deadline 504) →
resolve the reference to a version (cached; the node's own writes invalidate at once,
other nodes' within ``cache_ttl``) → access check → rate limits (429) → the traffic
split (:mod:`.splits`) → the front's input → input validated against the version's
JSON Schema (422 naming each field) → ``yunnao_before_invoke`` hooks → the runtime
bound to the version (deployed on first use) → output validated →
``yunnao_after_invoke`` hooks → usage record and metrics. Failures become problems: a
retired version 410, a runtime down 503 with ``Retry-After``, a timeout 504, a
capability that raised 500 with an error id (its message goes to the node's log only).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa
from jsonschema import Draft202012Validator

from yunnao.plugins.capability import Invocation
from yunnao.plugins.errors import (
    CapabilityError,
    FieldError,
    Forbidden,
    Gone,
    InvocationTimeout,
    LoopDetected,
    NotFound,
    RuntimeDown,
    TooManyRequests,
    Unavailable,
    ValidationFailed,
    YunnaoError,
)
from yunnao.plugins.loader import Plugins
from yunnao.plugins.media import media_fields
from yunnao.registry import names
from yunnao.registry.access import Action, Entry, Identity, access_rules, decide
from yunnao.registry.identity.forwarded import forwarded
from yunnao.registry.limits import Limit
from yunnao.registry.store import RegistryStore, Resolution

from ..adapters.base import CallContext, Target, current_call
from ..adapters.manager import Runtimes
from . import media
from .calls import Answer, Call, Inputs, schema_errors, split_ref, target_for
from .metrics import Metrics
from .ratelimit import MemoryLimiter, RateLimiter
from .splits import Splits
from .usage import Usage, UsageLog

log = logging.getLogger("yunnao.gateway")

# Deploying (loading a model, starting a deployment) is not part of a call's timeout.
DEPLOY_TIMEOUT = 300.0


@functools.lru_cache(maxsize=1024)
def _limit(text: str) -> Limit:
    return Limit.parse(text)


def _bucket_key(text: str) -> str:
    """Bucket keys fit their column: long subjects are hashed."""
    if len(text) <= 200:
        return text
    return text[:100] + "#" + hashlib.sha256(text.encode()).hexdigest()


class Gateway:
    """Resolves and runs calls; shared by the HTTP routes, the V2 protocol and jobs."""

    def __init__(
        self,
        store: RegistryStore,
        runtimes: Runtimes,
        plugins: Plugins,
        usage: UsageLog,
        metrics: Metrics,
        *,
        alias_lookup: Callable[[str, str, str], str | None] | None = None,
        cache_ttl: float = 2.0,
        limiter: RateLimiter | None = None,
        caller_limit: str | None = None,
        anonymous_limit: str | None = None,
    ) -> None:
        self.store = store
        self.runtimes = runtimes
        self.plugins = plugins
        self.usage = usage
        self.metrics = metrics
        self.alias_lookup = alias_lookup
        self.cache_ttl = cache_ttl
        self.limiter = limiter or MemoryLimiter()
        self.caller_limit = caller_limit
        self.anonymous_limit = anonymous_limit
        self._cache: dict[tuple[str, str, str | None], tuple[float, int, Resolution, Target]] = {}
        self._entries: dict[int, tuple[Resolution, Entry]] = {}  # id(resolution) -> its entry
        self._validators: dict[tuple[str, str, str], Draft202012Validator] = {}
        self._media: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self._locks: dict[tuple[str, str, str | None], asyncio.Lock] = {}
        self.splits: Splits | None = None  # canaries and shadows (see splits.py)

    # ------------------------------------------------------------ the entry point

    async def call(
        self,
        identity: Identity,
        namespace: str,
        name_ref: str,
        inputs: Inputs,
        *,
        timeout: float,
        client: str | None = None,
        request_id: str | None = None,
        mode: str = "sync",
        accept: Callable[[Call], None] | None = None,
        queued: bool = False,
    ) -> Answer:
        """Run one call of ``namespace/name[@ref]`` for ``identity``: the forwarding rules,
        :meth:`admitted` (resolve, access, rate limits), the input (``inputs`` or, when
        callable, what it builds from the resolved call), then :meth:`invoke` (validate,
        hooks, runtime, usage and metrics). ``accept`` lets a front refuse a version it
        cannot serve before the call is admitted. ``queued``: a job's call, whose access
        and rate limits were checked when it was submitted; it runs the version the job
        names as that version is now."""
        shadow = None
        if queued:
            call = await self._queued(namespace, name_ref)
            visited: tuple[str, ...] = ()
            deadline = None
        else:
            visited, deadline = self.forwarding(identity)
            call = await self.admitted(identity, namespace, name_ref, client=client, accept=accept)
            if self.splits is not None:  # a canary's share, a shadow: for `name` alone
                call, shadow = await self.splits.route(self, identity, namespace, name_ref, call)
        data = inputs(call) if callable(inputs) else inputs
        if inspect.isawaitable(data):
            data = await data
        if shadow is not None and self.splits is not None:
            self.splits.mirror(self, identity, shadow, data, timeout=timeout, request_id=request_id)
        started = time.perf_counter()
        output = await self.invoke(identity, call, data, timeout=timeout, request_id=request_id,
                                   mode=mode, visited=visited, deadline=deadline)  # fmt: skip
        return Answer(call, output, round((time.perf_counter() - started) * 1000, 3))

    def forwarding(self, identity: Identity) -> tuple[tuple[str, ...], float | None]:
        """The nodes a call forwarded by a linked node has visited and its caller's
        deadline, as the node's signed assertion says: a call that has been here already
        is a loop (508), one whose deadline has passed is answered 504 at once."""
        call = forwarded(identity)
        if call is None:
            return (), None
        here = self.store.node_id
        if here in call.visited:
            raise LoopDetected(
                f"this call has already visited node {here} (path: "
                f"{' -> '.join(call.visited)} -> {here}): the runtime bindings of these nodes "
                "form a loop",
                extra={"visited": list(call.visited)},
            )
        left = call.remaining()
        if left is not None and left <= 0:
            raise InvocationTimeout(
                f"the caller's deadline passed {-left:.3f} s before it reached {here}"
            )
        return call.visited, call.deadline

    async def admitted(
        self,
        identity: Identity,
        namespace: str,
        name_ref: str,
        *,
        client: str | None,
        accept: Callable[[Call], None] | None = None,
    ) -> Call:
        """:meth:`resolve` then :meth:`admit`: the call ``identity`` may make now (also
        what an asynchronous call's job is submitted with)."""
        call = await self.resolve(identity, namespace, name_ref)
        if accept is not None:
            accept(call)
        await self.admit(identity, call, client)
        return call

    async def _queued(self, namespace: str, name_ref: str) -> Call:
        name, number = split_ref(name_ref)
        resolution = await anyio.to_thread.run_sync(self.store.resolve, namespace, name, number)
        version = resolution.version
        return Call(target_for(resolution), version.status, resolution.classification)

    # ------------------------------------------------------------ resolution

    async def resolve(self, identity: Identity, namespace: str, name_ref: str) -> Call:
        """The version ``namespace/name[@ref]`` means for ``identity``, or the problem
        (404 for what the caller may not see, 410 for a retired version)."""
        name, ref = split_ref(name_ref)
        # Whatever the caller may not see answers exactly like what does not exist,
        # whichever version or alias they named.
        hidden = NotFound(f"no capability {namespace}/{name}")
        try:
            resolution, target = await self._resolution(namespace, name, ref)
        except NotFound:
            seen = await anyio.to_thread.run_sync(
                self.store.discoverable, identity, namespace, name
            )
            if not seen:
                raise hidden from None
            raise
        version = resolution.version
        entry = self._entry(namespace, resolution)
        if version.status == "draft" and not identity.writes(namespace):
            raise hidden
        decision = decide(identity, Action.INVOKE, entry)
        if decision.status == 404:
            raise hidden
        decision.raise_if_refused()
        if not identity.may_invoke(namespace, name):
            raise Forbidden(
                f"this API key may invoke only {', '.join(identity.capabilities or ())}, "
                f"not {namespace}/{name}"
            )
        if version.status == "retired":
            raise Gone(
                f"{version.id} is retired; call a current version "
                f"(see /v1/capabilities/{namespace}/{name}/versions)"
            )
        return Call(target, version.status, resolution.classification, entry.access.rate_limit)

    def _entry(self, namespace: str, resolution: Resolution) -> Entry:
        """What the access decision reads of a resolution: built once per cached
        resolution (its access rules parsed once), not once per call."""
        known = self._entries.get(id(resolution))
        if known is not None and known[0] is resolution:
            return known[1]
        # A capability whose versions are all retired leaves the catalog, but a caller
        # holding its address should learn it is retired (410), not that it never was.
        listed_as = resolution.capability_status
        entry = Entry(
            namespace,
            resolution.classification,
            "published" if listed_as == "retired" else listed_as,
            access_rules(resolution.access),
            local=resolution.via_node is None,
        )
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[id(resolution)] = (resolution, entry)
        return entry

    async def admit(self, identity: Identity, call: Call, client: str | None) -> None:
        """Take one call from the caller's and the capability's rate limits, or raise
        429 with the seconds until the next call fits. ``client``: the caller's address,
        which keys anonymous callers."""
        buckets = []
        if identity.authenticated:
            mine = identity.rate_limit or self.caller_limit
            who = f"caller:{identity.issuer}:{identity.subject}"
        else:
            mine = self.anonymous_limit
            who = f"peer:{identity.peer}" if identity.peer else f"client:{client or '?'}"
        if mine is not None:
            buckets.append((_bucket_key(who), _limit(mine)))
        if call.rate_limit is not None:
            buckets.append(
                (
                    _bucket_key(f"capability:{call.target.namespace}/{call.target.name}"),
                    _limit(call.rate_limit),
                )
            )
        if not buckets:
            return
        try:
            if isinstance(self.limiter, MemoryLimiter):
                verdict = self.limiter.take(buckets)
            else:
                verdict = await anyio.to_thread.run_sync(self.limiter.take, buckets)
        except sa.exc.SQLAlchemyError:
            log.exception("rate limits could not be checked")
            raise Unavailable(
                "rate limits cannot be checked now (the store is unreachable)"
            ) from None
        if verdict.allowed:
            return
        wait = max(1, math.ceil(verdict.retry_after))
        if verdict.key == buckets[0][0] and (mine is not None):
            what = f"your rate limit ({mine})"
        else:
            what = (
                f"the rate limit of {call.target.namespace}/{call.target.name} ({call.rate_limit})"
            )
        raise TooManyRequests(f"{what} is spent; retry in {wait} s", retry_after=wait)

    async def _resolution(
        self, namespace: str, name: str, ref: str | None
    ) -> tuple[Resolution, Target]:
        key = (namespace, name, ref)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now and hit[1] == self.store.generation:
            return hit[2], hit[3]
        # One lookup per key at a time: when an entry expires under load, the calls
        # that find it so wait for one query instead of each making their own.
        if len(self._locks) > 10_000:  # names that never resolved leave locks behind
            self._locks.clear()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > time.monotonic() and hit[1] == self.store.generation:
                return hit[2], hit[3]
            generation = self.store.generation
            number = ref
            if ref is not None and ref != "latest" and not names.is_semver(ref):
                number = await anyio.to_thread.run_sync(self._alias, namespace, name, ref)
            resolution = await anyio.to_thread.run_sync(self.store.resolve, namespace, name, number)
            if len(self._cache) > 10_000:
                self._cache.clear()
            target = target_for(resolution)
            self._cache[key] = (time.monotonic() + self.cache_ttl, generation, resolution, target)
            return resolution, target

    def _alias(self, namespace: str, name: str, alias: str) -> str:
        number = None
        if self.alias_lookup is not None and names.is_alias(alias):
            number = self.alias_lookup(namespace, name, alias)
        if number is None:
            raise NotFound(f"{namespace}/{name} has no version or alias {alias!r}")
        return number

    # ------------------------------------------------------------ validation

    def media_of(self, target: Target) -> dict[str, dict[str, Any]]:
        """The image and file fields of ``target``'s input (cached per version)."""
        key = (target.id, "media", target.content_hash)
        if key not in self._media:
            self._media[key] = media_fields(target.input_schema)
        return self._media[key]

    async def check_media(self, target: Target, inputs: Any) -> None:
        """Refuse a file of ``inputs`` that is too large (413) or not a readable image of
        an accepted format (422), naming the field, before any runtime sees it."""
        found = self.media_of(target)
        if found:
            await anyio.to_thread.run_sync(media.check, found, inputs)

    def validate(self, target: Target, which: str, data: Any) -> Any:
        """``data`` checked against the target's input or output schema."""
        key = (target.id, which, target.content_hash)
        validator = self._validators.get(key)
        if validator is None:
            schema = target.input_schema if which == "input" else target.output_schema
            validator = Draft202012Validator(schema)
            self._validators[key] = validator
        if which == "input" and not isinstance(data, dict):
            raise ValidationFailed(
                "input must be a JSON object of the capability's parameters",
                errors=[FieldError("input", "expected an object")],
            )
        errors = schema_errors(validator, data, which)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            detail = f"{errors[0].field}: {errors[0].message}{more}"
            if which == "input":
                raise ValidationFailed(detail, errors=errors)
            raise CapabilityError(f"{target.id} answered with invalid output: {detail}")
        return data

    # ------------------------------------------------------------ invocation

    async def invoke(
        self,
        identity: Identity,
        call: Call,
        inputs: Any,
        *,
        timeout: float,
        request_id: str | None = None,
        mode: str = "sync",
        visited: tuple[str, ...] = (),
        deadline: float | None = None,
    ) -> Any:
        """Run ``call`` on ``inputs``; the output, or a :class:`YunnaoError`. Every call
        leaves a usage record and metrics, whatever its outcome. A call forwarded by a
        linked node brings the nodes it ``visited`` and its caller's ``deadline`` (epoch
        seconds): the call gets no more time than is left (504 at once when none is),
        and a runtime that forwards it again passes both on."""
        target = call.target
        started = time.perf_counter()
        status, error_id = 200, None
        gauge = self.metrics.in_flight_of(target.runtime)
        try:
            hooks = self.plugins.has_invoke_hooks
            # In process, the capability's own types check the input with the same
            # field paths; elsewhere (and for hooks, which see validated input) the
            # version's JSON Schema does.
            if hooks or target.runtime != "inprocess":
                inputs = self.validate(target, "input", inputs)
            elif not isinstance(inputs, dict):
                self.validate(target, "input", inputs)  # raises: not an object
            if self.media_of(target):  # images and files: opened before any runtime
                await self.check_media(target, inputs)
            invocation = Invocation(target.id, inputs, identity.subject, request_id)
            if hooks:
                invocation = self.plugins.before_invoke(
                    invocation, lambda d: self.validate(target, "input", d)
                )
            runtime = self.runtimes.deployed(target)
            if runtime is None:
                with anyio.fail_after(DEPLOY_TIMEOUT):
                    runtime = await self.runtimes.ready(target)
            if deadline is None:
                deadline = time.time() + timeout
            else:
                left = deadline - time.time()
                if left <= 0:
                    raise InvocationTimeout(
                        f"{target.id}: the caller's deadline passed before it could run"
                    )
                timeout = min(timeout, left)
            current_call.set(CallContext(identity, request_id, visited, deadline))
            gauge.inc()
            try:
                if target.runtime == "inprocess":  # enforces its timeout itself, cheaply
                    output = await runtime.invoke(target, invocation.inputs, timeout=timeout)
                else:
                    # The runtime enforces the timeout; this is the safety net for one
                    # that does not (a hung connection, a bug), with a little slack.
                    async with asyncio.timeout(timeout + 2):  # cheaper than anyio's
                        output = await runtime.invoke(target, invocation.inputs, timeout=timeout)
            except TimeoutError:
                raise InvocationTimeout(
                    f"{target.id} did not answer within {timeout:g} s"
                ) from None
            finally:
                gauge.dec()
            if target.runtime != "inprocess":  # in process, the capability's type checked it
                self.validate(target, "output", output)
            if hooks:
                output = self.plugins.after_invoke(invocation, output)
            return output
        except RuntimeDown as exc:
            status = exc.status
            self.runtimes.forget(target)  # deploy again once it is back
            raise
        except CapabilityError as exc:
            status, error_id = 500, uuid.uuid4().hex[:16]
            log.error("%s failed (error id %s): %s", target.id, error_id, exc.detail)
            raise CapabilityError(
                f"{target.id} failed; quote error id {error_id} to its owner",
                extra={"error_id": error_id},
            ) from None
        except YunnaoError as exc:
            status = exc.status
            raise
        except Exception:
            status, error_id = 500, uuid.uuid4().hex[:16]
            log.exception("invoking %s failed (error id %s)", target.id, error_id)
            raise CapabilityError(
                f"invoking {target.id} failed; quote error id {error_id} to this node's operator",
                extra={"error_id": error_id},
            ) from None
        finally:
            elapsed = time.perf_counter() - started
            if self.splits is not None:
                self.splits.observe(target, status)
            label = f"{target.namespace}/{target.name}"
            self.metrics.observe(label, target.version, target.runtime, mode, status, elapsed)
            self.usage.record(
                Usage(
                    namespace=target.namespace,
                    name=target.name,
                    version=target.version,
                    runtime=target.runtime,
                    mode=mode,
                    status=status,
                    latency_ms=round(elapsed * 1000, 3),
                    caller=identity.subject,
                    request_id=request_id,
                    error_id=error_id,
                    caller_node=identity.node,
                    caller_department=identity.own_department,
                    forwarded_by=identity.peer,
                )
            )
