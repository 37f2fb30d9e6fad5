"""The one exception hierarchy of Yunnao.

Every error Yunnao raises on purpose derives from :class:`YunnaoError`. Each class
names the HTTP status it maps to and a short problem type slug; the HTTP layer turns
any of them into an RFC 9457 ``application/problem+json`` response in one handler,
so routes never build error responses by hand. The hierarchy lives here, in the
lowest layer, so plugins, the registry, runtimes and the cascade all share it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class TooManyRequests(YunnaoError):
    """A rate limit or quota is spent; ``retry_after`` seconds until the next call fits
    (sent as ``Retry-After``)."""

    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class LoopDetected(YunnaoError):
    """A forwarded call would visit a node it has already visited (a binding loop
    between linked nodes): refused at once rather than bounced on."""

    status, slug, title = 508, "loop-detected", "Loop detected"


class Unavailable(YunnaoError):
    """A dependency (database, runtime) is down; the caller may retry, after
    ``retry_after`` seconds when that is known (sent as ``Retry-After``)."""

    status, slug, title = 503, "unavailable", "Service unavailable"
    retry_after: int | None = None
