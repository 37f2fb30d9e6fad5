"""The ``inprocess`` runtime: capabilities run inside the node, off its event loop (short
ones on it, see below).

A version runs from its published MLflow model (code and artifacts as published): only
``models:/{namespace}.{name}/N`` of the node's own MLflow is ever loaded. An entry without
a model runs the plugin loaded at the node under the same name and version, and only
when that plugin's own namespace (``<node>.<plugin>``) is the entry's. Two executors:

- ``thread`` (default): a pool of ``threads`` worker threads (4). Cheapest per call;
  a call that overruns its timeout is answered with 504 at once and its thread is left
  to finish (Python cannot stop a thread): new calls go to a fresh pool, so stuck
  calls never exhaust it.
- ``process``: a pool of worker processes (spawned), for CPU-bound capabilities that
  hold the GIL. A call that overruns its timeout gets 504 and the pool is replaced, so
  a stuck worker never wedges the node; calls in flight on that pool get 503.

Each target has its own concurrency limit (binding config ``max_concurrency``, default
the node's ``max_concurrency``, 4): calls beyond it wait, within their timeout.

Short calls skip the thread hop (``thread`` executor): a version whose last
``INLINE_AFTER`` calls in a worker thread each finished within ``inline_budget_ms``
(1 ms) runs on the event loop itself from then on, since handing a call to a thread and
back costs more than such a call. It goes back to the threads (a warning names it) at
its first call on the event loop that takes over ``INLINE_STALL`` times the budget, or
once its calls overrun the budget more than now and then (``INLINE_STRIKES`` overruns,
each call within the budget taking back ``INLINE_FORGIVE`` of one): a call on the event
loop can be held up by another thread taking the interpreter's lock, so one overrun by
a little is not yet the capability's doing. A version sent back returns to the loop
only after ``INLINE_BACKOFF`` times as many quick calls in a row as the time before
(160, then 1,280, …, at most ``INLINE_MOST``): a loaded machine (a collection pass, a
busy neighbour) can push a quick capability over the budget, and it should not pay for
that for good, while a capability that really runs long now and then is given fewer and
fewer chances. What this costs: each time a version goes back, the calls that overran
held up the node's other calls for their duration (at most ``INLINE_STALL`` × the
budget each, or a call's own length when one suddenly runs long). ``inline_budget_ms``
0 (or binding config ``inline: false``) keeps every call in threads.

A model of an uploaded package never runs here, whoever bound it: the loader refuses it
(:class:`NotDeployable` naming the sandbox) before any of its code is imported, since
here it would run beside the node's key and store.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import Pool
from typing import Any

import anyio.to_thread
from pydantic import ConfigDict

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import (
    CapabilityError,
    FieldError,
    InvocationTimeout,
    NotDeployable,
    RuntimeDown,
    ValidationFailed,
    YunnaoError,
)
from yunnao.registry.models import own_model_version
from yunnao.registry.publishing import plugin_namespace

from .base import RuntimeContext, RuntimeHealth, Target
from .loading import Runnable, from_capability, load_runnable, refuse_uploaded, uploaded_of
from .settings import RuntimeSettings
from .streaming import thread_stream

log = logging.getLogger("yunnao.runtimes.inprocess")

EXECUTORS = ("thread", "process")
# Consecutive calls in a worker thread, each within the budget, before a version runs on
# the event loop.
INLINE_AFTER = 20
# On the event loop: one call over INLINE_STALL × the budget, or INLINE_STRIKES overruns
# (each call within the budget forgiving INLINE_FORGIVE of one) send a version back.
INLINE_STALL = 20
INLINE_STRIKES = 3.0
INLINE_FORGIVE = 0.05
# After its n-th time back in threads, a version needs INLINE_AFTER × INLINE_BACKOFF**n
# quick calls in a row (at most INLINE_MOST) to run on the loop again.
INLINE_BACKOFF = 8
INLINE_MOST = 100_000


class InProcessSettings(RuntimeSettings):
    """The ``inprocess`` runtime's node settings (``Settings.runtimes["inprocess"]``),
    every key optional. Unlike the other runtimes' settings, keys it does not know are
    ignored (as they always were here), not refused."""

    model_config = ConfigDict(extra="ignore")

    executor: str = "thread"
    """``thread`` (a pool of ``threads`` in the node) or ``process`` (a pool of
    ``processes`` worker processes)."""
    threads: int = 4
    """Worker threads of the ``thread`` executor."""
    processes: int = 0
    """Worker processes of the ``process`` executor (0: one fewer than the CPUs, at least 1)."""
    max_concurrency: int = 4
    """Calls of one target at once, unless its binding sets ``max_concurrency``."""
    inline_budget_ms: float = 1.0
    """A version whose recent calls each finished within this many milliseconds runs on
    the event loop, without a hop to a worker thread; a call there over ``INLINE_STALL``
    times it, or repeated overruns, send the version back to the threads for good. 0:
    every call in a worker thread."""


class InProcessRuntime:
    """Runs capability versions in this process (threads) or in a local process pool."""

    type = "inprocess"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        settings = InProcessSettings.parse(self.type, config)
        self.settings = settings
        self.context = context
        self.executor = settings.executor
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"inprocess executor must be one of {EXECUTORS}, not {self.executor!r}"
            )
        self.processes = settings.processes or max(1, (os.cpu_count() or 2) - 1)
        self.max_concurrency = settings.max_concurrency
        self._runnables: dict[str, Runnable] = {}  # thread executor: slug -> runnable
        self._sources: dict[str, tuple[str, str]] = {}  # process executor: slug -> source
        self._limiters: dict[str, asyncio.Semaphore] = {}
        # The inline fast path (thread executor): consecutive quick calls in threads per
        # slug, the slugs running on the event loop, and those sent back for good.
        self.inline_budget = max(0.0, settings.inline_budget_ms) / 1000
        self._quick: dict[str, int] = {}
        self._inline: dict[str, float] = {}  # slug -> its strikes on the event loop
        self._sent_back: dict[str, int] = {}  # slug -> times sent back to the threads
        self._threads_only: set[str] = set()  # never on the loop (settings, binding)
        # Few threads by default: with more, CPU-bound capabilities fight the event loop
        # for the GIL and the tail latency of every call grows (measured: p99 at 32
        # concurrent calls 40 ms with 4 threads, 260 ms with 8). Raise it for
        # capabilities that mostly wait on I/O.
        self.threads = settings.threads
        self._threads = self._new_threads()
        self._pool: Pool | None = None

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        if target.slug in self._limiters:
            return
        limit = int(target.config.get("max_concurrency", self.max_concurrency))
        if self.executor == "thread":
            runnable = await anyio.to_thread.run_sync(self._load, target)
            self._runnables[target.slug] = runnable
        else:
            self._sources[target.slug] = await anyio.to_thread.run_sync(self._source, target)
        if not self.inline_budget or target.config.get("inline", True) is False:
            self._threads_only.add(target.slug)
        self._limiters[target.slug] = asyncio.Semaphore(max(1, limit))

    async def undeploy(self, target: Target) -> None:
        self._runnables.pop(target.slug, None)
        self._sources.pop(target.slug, None)
        self._limiters.pop(target.slug, None)
        self._quick.pop(target.slug, None)
        self._inline.pop(target.slug, None)
        self._sent_back.pop(target.slug, None)
        self._threads_only.discard(target.slug)

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        if target.slug not in self._limiters:
            await self.deploy(target)
        if target.slug in self._inline and not self._limiters[target.slug].locked():
            return self._on_loop(target, inputs)
        # asyncio's own primitives: this is the hot path of every in-process call, and
        # they cost a fraction of anyio's cancel scopes and worker-thread bookkeeping.
        try:
            async with asyncio.timeout(timeout), self._limiters[target.slug]:
                if self.executor == "thread":
                    return await self._in_thread(target, inputs)
                return await self._in_process(target, inputs)
        except TimeoutError:
            if self.executor == "process":
                self._recycle_pool(f"{target.id} overran its {timeout:g} s timeout")
            else:
                self._recycle_threads()
            raise InvocationTimeout(f"{target.id} did not answer within {timeout:g} s") from None

    async def stream(
        self, target: Target, inputs: dict[str, Any], *, timeout: float
    ) -> AsyncIterator[Any]:
        """A streaming capability's items as its generator yields them (in a worker
        thread, holding one of the version's slots while it streams)."""
        if target.slug not in self._limiters:
            await self.deploy(target)
        runnable = self._runnables.get(target.slug)
        if runnable is None or not runnable.capability.streaming:
            raise NotDeployable(f"{target.id} does not stream here (thread executor only)")
        async with self._limiters[target.slug]:
            items = thread_stream(self._threads, lambda: runnable.stream(inputs),
                                  timeout=timeout, label=target.id)  # fmt: skip
            try:
                async for item in items:
                    yield item
            except YunnaoError:
                raise  # the capability's own validation (422), an invalid item, a timeout
            except Exception as exc:
                raise CapabilityError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                await items.aclose()

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, f"{self.executor} executor")

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "executor": self.executor,
            "processes": self.processes if self.executor == "process" else None,
            "max_concurrency": self.max_concurrency,
            "inline_budget_ms": self.inline_budget * 1000,
            "deployed": sorted(self._limiters),
            "inline": sorted(self._inline),
            "sent_back": dict(self._sent_back),  # slug -> times sent back to threads
        }

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ threads

    async def _in_thread(self, target: Target, inputs: dict[str, Any]) -> Any:
        runnable = self._runnables[target.slug]
        loop = asyncio.get_running_loop()
        if target.slug in self._threads_only:
            try:
                return await loop.run_in_executor(self._threads, runnable, inputs)
            except YunnaoError:
                raise  # the capability's own validation (422) or an invalid output
            except Exception as exc:
                raise CapabilityError(f"{type(exc).__name__}: {exc}") from exc
        took, failure, output = await loop.run_in_executor(self._threads, _timed, runnable, inputs)
        self._learn(target.slug, took)
        if failure is not None:
            _raise(failure)
        return output

    def _learn(self, slug: str, took: float) -> None:
        """Count a call that ran in a worker thread towards the inline fast path."""
        if slug in self._threads_only or slug not in self._limiters:
            return
        if took > self.inline_budget:
            self._quick[slug] = 0
            return
        quick = self._quick.get(slug, 0) + 1
        self._quick[slug] = quick
        if quick >= self._needed(slug) and slug not in self._inline:
            self._inline[slug] = 0.0
            self._quick[slug] = 0
            log.info("%s runs on the event loop: its last %d calls each took under %g ms",
                     slug, quick, self.inline_budget * 1000)  # fmt: skip

    def _needed(self, slug: str) -> int:
        """Quick calls in a row before ``slug`` runs on the event loop (again)."""
        return min(INLINE_MOST, INLINE_AFTER * INLINE_BACKOFF ** self._sent_back.get(slug, 0))

    def _on_loop(self, target: Target, inputs: dict[str, Any]) -> Any:
        """Run a call on the event loop (the fast path of short calls)."""
        slug = target.slug
        took, failure, output = _timed(self._runnables[slug], inputs)
        if took <= self.inline_budget:
            strikes = self._inline[slug]
            if strikes:
                self._inline[slug] = max(0.0, strikes - INLINE_FORGIVE)
        else:
            strikes = self._inline[slug] + 1
            self._inline[slug] = strikes
            if took > INLINE_STALL * self.inline_budget or strikes >= INLINE_STRIKES:
                del self._inline[slug]
                self._sent_back[slug] = self._sent_back.get(slug, 0) + 1
                self._quick[slug] = 0
                log.warning(
                    "%s took %.1f ms on the event loop, over the inline budget of %g ms "
                    "(%d times lately): its calls run in worker threads from now on, "
                    "until %d in a row are quick again",
                    target.id, took * 1000, self.inline_budget * 1000, int(strikes),
                    self._needed(slug),
                )  # fmt: skip
        if failure is not None:
            _raise(failure)
        return output

    def _recycle_threads(self) -> None:
        """A call overran its timeout and still holds a worker thread (Python cannot
        stop it): new calls get a fresh pool, the old one's threads end with their calls."""
        old, self._threads = self._threads, self._new_threads()
        old.shutdown(wait=False)

    def _new_threads(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.threads, thread_name_prefix="yunnao-inprocess")

    def _load(self, target: Target) -> Runnable:
        if target.model_uri:
            _check_own_model(target)
            if self.context.load_model is None:
                raise NotDeployable(f"{target.id}: this node cannot load MLflow models")
            try:
                return self.context.load_model(target.model_uri)
            except NotDeployable as exc:  # an uploaded package's model, refused
                raise NotDeployable(f"{target.id}: {exc.detail}") from None
        cap = self._plugin(target)
        if cap is not None:
            return from_capability(cap)
        raise NotDeployable(
            f"{target.id} has no MLflow model and no plugin of its namespace loaded here "
            "provides it, so it cannot run in process"
        )

    def _plugin(self, target: Target) -> Capability | None:
        """The loaded plugin capability a version without a model runs: one of the same
        name and version whose plugin is the version's own department. Another
        department's plugin never runs under a namespace its author does not own."""
        cap = self.context.capabilities.get(target.name)
        if cap is None or cap.version != target.version:
            return None
        if plugin_namespace(self.context.node_id, cap) != target.namespace:
            return None
        return cap

    # ------------------------------------------------------------ processes

    def _source(self, target: Target) -> tuple[str, str]:
        """What a worker process loads: a downloaded model directory, or a plugin entry."""
        if target.model_uri:
            _check_own_model(target)
            if self.context.tracking_uri is None:
                raise NotDeployable(f"{target.id}: this node has no MLflow to load it from")
            from .loading import download_model

            local = download_model(
                target.model_uri, self.context.tracking_uri, self.context.registry_uri
            )
            refuse_uploaded(target.id, uploaded_of(local), "in the node's process")
            return "model", local
        cap = self._plugin(target)
        if cap is not None:
            return "entry", cap.entry
        raise NotDeployable(
            f"{target.id} has no MLflow model and no plugin of its namespace loaded here"
        )

    def _get_pool(self) -> Pool:
        if self._pool is None:
            # spawn, not fork: the node has threads (and an event loop) that fork would copy.
            self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
        return self._pool

    def _recycle_pool(self, why: str) -> None:
        if self._pool is not None:
            log.warning("replacing the in-process worker pool: %s", why)
            self._pool.terminate()
            self._pool = None

    async def _in_process(self, target: Target, inputs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(value: Any, failed: bool = False) -> None:
            if not done.done():
                if failed:
                    done.set_exception(value)
                else:
                    done.set_result(value)

        pool = self._get_pool()
        pool.apply_async(
            _run_in_worker,
            (self._sources[target.slug], inputs),
            callback=lambda v: loop.call_soon_threadsafe(settle, v),
            error_callback=lambda e: loop.call_soon_threadsafe(settle, e, True),
        )
        try:
            kind, *rest = await _until_pool_dies(done, pool, lambda: self._pool)
        except _PoolGone:
            raise RuntimeDown(
                f"the worker pool running {target.id} was replaced (another call timed out)",
                retry_after=1,
            ) from None
        if kind == "ok":
            return rest[0]
        error_kind, detail, errors = rest
        if error_kind == "validation":
            raise ValidationFailed(detail, errors=[FieldError(**e) for e in errors])
        raise CapabilityError(detail)


def _check_own_model(target: Target) -> None:
    """Defence in depth: whatever a version's row says, the only model run for it is a
    version of ``namespace.name`` in this node's own MLflow."""
    assert target.model_uri is not None
    if own_model_version(target.namespace, target.name, target.model_uri) is None:
        raise NotDeployable(
            f"{target.id}: its model_uri {target.model_uri!r} is not a version of this "
            f"node's own model {target.namespace}.{target.name}, so it is not loaded"
        )


def _timed(runnable: Runnable, inputs: dict[str, Any]) -> tuple[float, Exception | None, Any]:
    """Run ``runnable``: the seconds it took, what it raised (or None), its output."""
    started = time.perf_counter()
    try:
        output = runnable(inputs)
    except Exception as exc:
        return time.perf_counter() - started, exc, None
    return time.perf_counter() - started, None, output


def _raise(failure: Exception) -> None:
    if isinstance(failure, YunnaoError):
        raise failure  # the capability's own validation (422) or an invalid output
    raise CapabilityError(f"{type(failure).__name__}: {failure}") from failure


class _PoolGone(Exception):
    pass


async def _until_pool_dies(done: asyncio.Future[Any], pool: Pool, current: Any) -> Any:
    """Await ``done``, but give up when ``pool`` has been replaced (its tasks are lost)."""
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout=0.5)
        except TimeoutError:
            if current() is not pool:
                raise _PoolGone() from None


# Worker-process side: one Runnable per source, loaded on first use.
_WORKER_CACHE: dict[tuple[str, str], Runnable] = {}


def _run_in_worker(source: tuple[str, str], inputs: dict[str, Any]) -> tuple[Any, ...]:
    """Run in a pool process. Errors come back as data: exceptions with keyword state
    (field errors) do not survive pickling."""
    try:
        runnable = _WORKER_CACHE.get(source)
        if runnable is None:
            kind, ref = source
            if kind == "model":
                runnable = load_runnable(ref)
            else:
                from yunnao.registry.pyfunc import find_capability

                runnable = from_capability(find_capability(ref))
            _WORKER_CACHE[source] = runnable
        return ("ok", runnable(inputs))
    except ValidationFailed as exc:
        return ("error", "validation", exc.detail, [e.as_dict() for e in exc.errors])
    except Exception as exc:
        return ("error", "exception", f"{type(exc).__name__}: {exc}", [])
