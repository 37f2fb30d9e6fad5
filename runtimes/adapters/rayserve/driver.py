"""The Ray driver process (``python -c DRIVER_MAIN FD``, started by ``connection.py``):
it connects to the cluster, holds the deployment handles, makes every Ray Serve call
(the blocking ones in threads), answers the node's requests one task each, and exits
when the cluster's GCS stops answering. It logs to ``<data_dir>/rayserve/driver.log``
through the root logger."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread

from .deployment import CapabilityReplica
from .protocol import HEALTH_WAIT, frame, reachable, receive

# The driver process gives up on a cluster whose GCS port refused this many probes in a
# row, PROBE_INTERVAL seconds apart (one refusal may be a GCS busy accepting).
PROBE_INTERVAL, PROBE_MISSES = 0.5, 2
# A replica that is busy or restarting is back sooner than a whole cluster.
REPLICA_RETRY_AFTER = 1


class _Failure(Exception):
    def __init__(self, kind: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


async def _retrying_pickle_race(make: Any) -> Any:
    """Call ``make`` (sync, or returning an awaitable), again after a moment when it hits
    Ray Serve 2.60's race on cloudpickle's process-wide "pickle by value" registry: it
    registers and unregisters its request-router module around every deployment config
    it builds, so two built at once (a deploy and a new handle's first call) make one
    fail with ``ValueError: <module ...> is not registered for pickle by value``."""
    for attempt in range(5):
        try:
            result = make()
            return await result if inspect.isawaitable(result) else result
        except ValueError as exc:
            if "pickle by value" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _DriverProcess:
    """The Ray driver: answers the node's requests, one task per request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writer: asyncio.StreamWriter | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.handles: dict[str, Any] = {}
        self.submitting = asyncio.Lock()
        self.connected = False
        self.watchdog: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        while True:
            try:
                message = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the node went away
            rid, op = message.pop("id"), message.pop("op")
            if op == "cancel":
                task = self.tasks.get(rid)
                if task is not None:
                    task.cancel()
                continue
            task = asyncio.get_running_loop().create_task(self._answer(rid, op, message))
            self.tasks[rid] = task
            if op == "close":
                await task
                return
        if self.connected:
            await self._disconnect()

    async def _answer(self, rid: int, op: str, fields: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": rid}
        try:
            reply["result"] = await getattr(self, f"op_{op}")(**fields)
        except asyncio.CancelledError:
            return  # the node stopped waiting; it expects no answer
        except _Failure as exc:
            reply.update(error=exc.kind, detail=exc.detail)
            if exc.retry_after is not None:
                reply["retry_after"] = exc.retry_after
        except Exception as exc:
            logging.exception("request %s failed", op)
            reply.update(error="internal", detail=f"{type(exc).__name__}: {exc}")
        finally:
            self.tasks.pop(rid, None)
        with contextlib.suppress(ConnectionError):  # the node is gone: nobody to tell
            await self._send(reply)

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(frame(message))
        await self.writer.drain()

    async def _disconnect(self) -> None:
        import ray

        # ray.shutdown() stops a cluster this process started; for one given by address
        # it only disconnects, and the applications stay.
        await anyio.to_thread.run_sync(ray.shutdown)

    # -------------------------------------------------------- requests

    async def op_connect(
        self,
        address: str | None,
        namespace: str,
        num_cpus: float,
        http_host: str,
        http_port: int | None,
    ) -> dict[str, Any]:
        def connect() -> dict[str, Any]:
            import ray
            from ray import serve
            from ray.serve.context import _get_global_client

            quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                ray.init(address=address, namespace=namespace, **quiet)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, namespace=namespace, **quiet)
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
            if http_port:
                serve.start(http_options={"host": http_host, "port": http_port})
            else:
                serve.start(proxy_location="Disabled")
            proxy_url = None
            if http_port:
                # Serve's HTTP options are fixed by whoever started Serve on the cluster.
                http = _get_global_client().http_config
                host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
                proxy_url = f"http://{host}:{http.port}"
            return {"gcs_address": ray.get_runtime_context().gcs_address, "proxy_url": proxy_url}

        try:
            info = await anyio.to_thread.run_sync(connect)
        except Exception as exc:
            detail = f"connecting to Ray failed: {type(exc).__name__}: {exc}"
            raise _Failure("down", detail) from None
        self.connected = True
        self.watchdog = asyncio.get_running_loop().create_task(self._watch(info["gcs_address"]))
        return info

    async def op_deploy(self, apps: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Bring ``apps`` to RUNNING: failure details by slug, None for success."""
        from ray import serve

        deadline = time.monotonic() + timeout
        results: dict[str, Any] = {}
        async with self.submitting:  # Serve applies submissions in order
            status = await anyio.to_thread.run_sync(serve.status)
            todo = []
            for app in apps:
                current = status.applications.get(app["slug"])
                ours = current is not None and app["deployment"] in current.deployments
                if ours and _enum_text(current.status) in ("RUNNING", "DEPLOYING"):
                    continue  # as bound already: leave its replicas alone
                try:
                    todo.append(await _retrying_pickle_race(lambda a=app: self._application(a)))
                except (TypeError, ValueError) as exc:  # Serve refused the options
                    results[app["slug"]] = f"{type(exc).__name__}: {exc}"
                self.handles.pop(app["slug"], None)
            if todo:
                await _retrying_pickle_race(
                    lambda: anyio.to_thread.run_sync(
                        lambda: serve.run_many(todo, wait_for_applications_running=False)
                    )
                )
        waiting = {app["slug"] for app in apps} - set(results)
        while waiting:
            status = await anyio.to_thread.run_sync(serve.status)
            for slug in sorted(waiting):
                current = status.applications.get(slug)
                state = _enum_text(current.status) if current else "MISSING"
                if state == "RUNNING":
                    results[slug] = None
                elif state in ("DEPLOY_FAILED", "MISSING") or time.monotonic() > deadline:
                    results[slug] = self._why(slug, state, current, timeout)
                    # Leave nothing half-deployed holding cluster resources.
                    await anyio.to_thread.run_sync(lambda s=slug: serve.delete(s, _blocking=False))
                else:
                    continue
                waiting.discard(slug)
            if waiting:
                await asyncio.sleep(0.25)
        return results

    @staticmethod
    def _why(slug: str, state: str, current: Any, timeout: float) -> str:
        messages = [current.message] if current is not None and current.message else []
        if current is not None:
            messages += [d.message for d in current.deployments.values() if d.message]
        if state == "DEPLOY_FAILED":
            prefix = "deploying failed"
        else:
            prefix = f"not RUNNING after {timeout:g} s ({state})"
        return "; ".join([prefix, *messages])

    @staticmethod
    def _application(app: Mapping[str, Any]) -> Any:
        from ray import serve

        deployment = serve.deployment(name=app["deployment"])(CapabilityReplica)
        bound = deployment.options(**app["options"]).bind(
            app["model"], app["tracking_uri"], app["registry_uri"], app.get("allow_uploaded", False)
        )
        return serve.RunTarget(bound, name=app["slug"], route_prefix=f"/{app['slug']}")

    async def op_undeploy(self, slug: str) -> None:
        from ray import serve

        self.handles.pop(slug, None)
        status = await anyio.to_thread.run_sync(serve.status)
        if slug in status.applications:
            await anyio.to_thread.run_sync(serve.delete, slug)

    async def op_invoke(self, slug: str, inputs: dict[str, Any]) -> Any:
        from ray.exceptions import RayError, RayTaskError
        from ray.serve.exceptions import BackPressureError, RayServeException

        handle = self.handles.get(slug)
        if handle is None:
            handle = await self._handle(slug)
        response = handle.run.remote(inputs)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise _Failure("capability", f"{type(cause).__name__}: {cause}") from None
        except BackPressureError as exc:
            raise _Failure("down", f"overloaded: {exc}", REPLICA_RETRY_AFTER) from None
        except (RayError, RayServeException) as exc:
            self.handles.pop(slug, None)
            raise _Failure("down", f"{type(exc).__name__}: {exc}", REPLICA_RETRY_AFTER) from None

    async def _handle(self, slug: str) -> Any:
        from ray import serve
        from ray.serve.exceptions import RayServeException

        try:
            handle = await anyio.to_thread.run_sync(serve.get_app_handle, slug)
        except RayServeException as exc:
            raise _Failure("down", f"no Serve application {slug}: {exc}") from None
        self.handles[slug] = handle
        return handle

    async def op_health(self) -> dict[str, Any]:
        status = await self._status()
        failing = [name for name, app in status.items() if app["status"] != "RUNNING"]
        detail = f"Serve runs {len(status)} applications"
        if failing:
            detail += f"; not RUNNING: {', '.join(sorted(failing))}"
        return {"ok": True, "detail": detail}

    async def op_status(self) -> dict[str, Any]:
        return await self._status()

    async def _status(self) -> dict[str, Any]:
        from ray import serve

        try:
            with anyio.fail_after(HEALTH_WAIT):
                status = await anyio.to_thread.run_sync(serve.status, abandon_on_cancel=True)
        except TimeoutError:
            raise _Failure("down", "Serve's controller did not answer") from None
        return {
            name: {
                "status": _enum_text(app.status),
                "message": app.message,
                "deployments": {
                    dname: {
                        "status": _enum_text(dep.status),
                        "message": dep.message,
                        "replicas": {_enum_text(k): n for k, n in dep.replica_states.items()},
                    }
                    for dname, dep in app.deployments.items()
                },
            }
            for name, app in status.applications.items()
        }

    async def op_close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.connected:
            await self._disconnect()

    async def _watch(self, gcs: str) -> None:
        """End this process when the cluster's GCS stops accepting connections: Ray
        would end it anyway, while calls would meanwhile wait on replicas that are gone."""
        misses = 0
        while misses < PROBE_MISSES:
            await asyncio.sleep(PROBE_INTERVAL)
            misses = 0 if await reachable(gcs) else misses + 1
        detail = f"the Ray cluster at {gcs} is unreachable"
        logging.error("%s; exiting", detail)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send({"event": "down", "detail": detail}), 1)
        os._exit(3)  # ray.shutdown() could hang on a dead cluster


def driver_main() -> None:
    """Entry point of the driver process: ``python -c ... FD`` with the socket's fd."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s rayserve-driver: %(message)s"
    )
    sock = socket.socket(fileno=int(sys.argv[1]))
    asyncio.run(_DriverProcess(sock).serve())
    # Ray's threads can keep the interpreter from exiting after a disconnect.
    os._exit(0)
