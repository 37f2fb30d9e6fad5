"""HTTP routes of the cascade: the feed linked nodes read, the ingest a child pushes to
(:mod:`.feed_api`), and the operator's peer management and status (:mod:`.peers_api`),
in the order the OpenAPI document lists them."""

from __future__ import annotations

from yunnao.registry.api import Endpoint

from . import feed_api, health_api, peers_api, review_api
from .state import Cascade

__all__ = ["ENDPOINTS", "Cascade"]

ENDPOINTS: tuple[Endpoint, ...] = (
    *feed_api.ENDPOINTS,
    *health_api.ENDPOINTS,
    *peers_api.ENDPOINTS,
    *review_api.ENDPOINTS,
)
