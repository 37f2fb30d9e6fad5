"""The one exception hierarchy of Yunnao.

Every error Yunnao raises on purpose derives from :class:`YunnaoError`. Each class
names the HTTP status it maps to and its problem type (a slug, one per class); the HTTP
layer turns any of them into an RFC 9457 ``application/problem+json`` response in one
handler (``registry/problems.py``), so routes never build error responses by hand. The
hierarchy lives here, in the lowest layer, so the author SDK, the registry, the runtimes
and the cascade all raise from one module. ``docs/api.md`` lists every problem type (a
test fails otherwise).

    YunnaoError                     500 internal-error
    ├── BadRequest                  400 bad-request
    ├── Unauthorized                401 unauthorized
    ├── Forbidden                   403 forbidden
    ├── NotFound                    404 not-found
    ├── MethodNotAllowed            405 method-not-allowed
    ├── Conflict                    409 conflict
    │   ├── IllegalTransition       409 illegal-transition
    │   ├── BreakingChange          409 breaking-change      (a minor version breaking callers)
    │   ├── IdempotencyInProgress   409 idempotency-key-in-progress
    │   └── CheckpointMoved         409 checkpoint-moved     (a cascade batch out of order)
    ├── NotDeployable               409 not-deployable       (a version its runtime cannot run)
    ├── Gone                        410 gone
    ├── PreconditionFailed          412 precondition-failed
    ├── PayloadTooLarge             413 payload-too-large
    ├── UnsupportedMediaType        415 unsupported-media-type
    ├── ValidationFailed            422 validation-failed
    │   └── IdempotencyKeyReused    422 idempotency-key-reused
    ├── SpecError                   422 invalid-capability   (an author's @capability)
    ├── TooManyRequests             429 too-many-requests
    ├── OutputInvalid               500 invalid-output       (the SDK's output check)
    ├── CapabilityError             500 capability-failed    (the capability or its server)
    ├── ModelStoreError             502 model-store-error    (MLflow)
    ├── Unavailable                 503 unavailable
    │   └── RuntimeDown             503 runtime-unavailable
    ├── InvocationTimeout           504 timeout
    ├── LoopDetected                508 loop-detected        (a forwarded call's loop)
    └── RemoteFailed                the origin's status and problem type, passed on

:class:`RemoteFailed` is the one class without a problem type of its own: it carries the
answer of the node a call was forwarded to, status and type included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldError:
    """One failed rule: ``field`` is a dotted/indexed path into the input ("tags[2]")."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Pydantic errors as (field path, message) pairs, e.g. ``tags[2]`` or, with a
    ``prefix``, ``input.readings[0].pm25``."""
    out = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        out.append(FieldError(path or "(body)", message))
    return out


class YunnaoError(Exception):
    """Root of the hierarchy. ``detail`` is safe to show to the caller."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors or [])
        # Further members of the problem document, e.g. the error id of a failed call.
        self.extra = dict(extra or {})


class BadRequest(YunnaoError):
    """The request cannot be parsed (malformed JSON, bad query string)."""

    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(YunnaoError):
    """No credentials where they are required, or credentials that do not verify."""

    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(YunnaoError):
    """The caller is known but may not do this."""

    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(YunnaoError):
    """No such entity (or the caller may not know it exists)."""

    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(YunnaoError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(YunnaoError):
    """The request clashes with stored state, e.g. a version published twice."""

    status, slug, title = 409, "conflict", "Conflict"


class IllegalTransition(Conflict):
    """A lifecycle move the state machine does not allow."""

    slug, title = "illegal-transition", "Illegal lifecycle transition"


class BreakingChange(Conflict):
    """A minor or patch version that would break callers of the version before it."""

    slug, title = "breaking-change", "Breaking change in a minor or patch version"


class IdempotencyInProgress(Conflict):
    """A request with the same Idempotency-Key is still running (``Retry-After``)."""

    slug, title = "idempotency-key-in-progress", "A request with this key is in progress"

    def __init__(self, detail: str, *, retry_after: int = 1, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class NotDeployable(YunnaoError):
    """The version cannot run on its runtime as bound (no model to load, unknown
    runtime type, a binding the runtime does not accept)."""

    status, slug, title = 409, "not-deployable", "Capability cannot be run"


class CheckpointMoved(Conflict):
    """A peer's batch does not start at this node's checkpoint for it: another process
    applied it, or the sender is replaying or skipping. Nothing of the batch was applied;
    ``checkpoint`` (also in the problem) says where to resend from."""

    slug, title = "checkpoint-moved", "Checkpoint moved"

    def __init__(self, peer: str, expected: int, actual: int) -> None:
        super().__init__(
            f"batch for {peer} starts after {expected} but this node has applied through "
            f"{actual}; resend from {actual}",
            extra={"checkpoint": actual},
        )
        self.checkpoint = actual


class Gone(YunnaoError):
    """The entity existed but has been withdrawn for good (a retired version)."""

    status, slug, title = 410, "gone", "Gone"


class PreconditionFailed(YunnaoError):
    """``If-Match`` named a representation that is no longer current."""

    status, slug, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLarge(YunnaoError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(YunnaoError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ValidationFailed(YunnaoError):
    """Well-formed input that breaks a rule; ``errors`` names each field and rule."""

    status, slug, title = 422, "validation-failed", "Validation failed"


class IdempotencyKeyReused(ValidationFailed):
    """The same Idempotency-Key came with another request."""

    slug, title = "idempotency-key-reused", "Idempotency key used with another request"


class SpecError(YunnaoError):
    """A capability cannot be described as written (bad name, missing type hint, a type
    pydantic cannot turn into JSON Schema). Raised when the decorator runs."""

    status, slug, title = 422, "invalid-capability", "Invalid capability"


class TooManyRequests(YunnaoError):
    """A rate limit or quota is spent; ``retry_after`` seconds until the next call fits
    (sent as ``Retry-After``)."""

    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class OutputInvalid(YunnaoError):
    """A capability returned something its own output type does not allow."""

    status, slug, title = 500, "invalid-output", "Capability returned invalid output"


class CapabilityError(YunnaoError):
    """The capability failed: it raised, its server answered with an error, or it answered
    outside its output schema. An adapter raises it with a ``detail`` for the operator's
    log; the gateway logs that and raises it again with a detail safe for callers, which
    quotes an ``error_id`` (in ``extra``) that finds the logged one."""

    status, slug, title = 500, "capability-failed", "Capability failed"


class ModelStoreError(YunnaoError):
    """MLflow refused or failed an operation."""

    status, slug, title = 502, "model-store-error", "Model store error"


class LoopDetected(YunnaoError):
    """A forwarded call would visit a node it has already visited (a binding loop
    between linked nodes): refused at once rather than bounced on."""

    status, slug, title = 508, "loop-detected", "Loop detected"


class Unavailable(YunnaoError):
    """A dependency (database, runtime) is down; the caller may retry, after
    ``retry_after`` seconds when that is known (sent as ``Retry-After``)."""

    status, slug, title = 503, "unavailable", "Service unavailable"
    retry_after: int | None = None


class RuntimeDown(Unavailable):
    """The runtime's server cannot be reached or is not serving; the caller may retry
    after ``retry_after`` seconds."""

    slug, title = "runtime-unavailable", "Runtime unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InvocationTimeout(YunnaoError):
    """The capability did not answer within the call's timeout."""

    status, slug, title = 504, "timeout", "Capability timed out"


class RemoteFailed(YunnaoError):
    """The origin answered a problem: passed on with the origin's status and detail."""

    def __init__(self, status: int, body: dict[str, Any], node: str) -> None:
        detail = str(body.get("detail") or body.get("title") or f"node {node} answered {status}")
        extra = {k: v for k, v in body.items() if k in ("error_id", "errors_at", "checkpoint")}
        super().__init__(detail, extra={**extra, "node": node})
        self.status = status
        self.slug = str(body.get("type", "")).rsplit("/", 1)[-1] or "remote-error"
        self.title = str(body.get("title") or "Error at the origin node")
        self.errors = []
        for err in body.get("errors") or []:
            if isinstance(err, dict) and "field" in err:
                self.errors.append(FieldError(str(err["field"]), str(err.get("message", ""))))
