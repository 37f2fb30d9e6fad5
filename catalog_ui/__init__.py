"""The web catalog and operator pages: server-rendered (Starlette + Jinja2), with a
little vendored htmx for the "try it" form; no build step.

Pages ask the same policy module as the API (:mod:`yunnao.registry.access`), so a
signed-in person sees exactly what their token may discover. Text comes from message
catalogs (:mod:`.i18n`), zh-CN by default with an English switch.
"""

from starlette.routing import BaseRoute

from . import (
    access_pages,
    assessment_pages,
    authoring,
    compare,
    naming,
    overview,
    pages,
    reconcile_pages,
    review_pages,
    tryit_stream,
)

ACTIONS = {
    **pages.ACTIONS,
    **authoring.ACTIONS,
    **naming.ACTIONS,
    **access_pages.ACTIONS,
    **review_pages.ACTIONS,
    **tryit_stream.ACTIONS,
    reconcile_pages.repair: "uiCascadeRepair",
}


def routes() -> list[BaseRoute]:
    """The catalog's pages, the author's (:mod:`.authoring`) and the operator's form
    for names (:mod:`.naming`)."""
    return [
        *authoring.routes(),
        *naming.routes(),
        *access_pages.routes(),
        *overview.routes(),
        *assessment_pages.routes(),
        *compare.routes(),
        *reconcile_pages.routes(),
        *review_pages.routes(),
        *tryit_stream.routes(),
        *pages.routes(),
    ]


__all__ = ["ACTIONS", "routes"]
