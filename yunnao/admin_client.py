"""Talking to a node as its admin from the command line: over HTTP, with the given
token, or, on the node's own machine, a short admin token signed with its node key."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click

from .cli import _request, _settings, client_options, node_options


def admin_token(token: str | None, node_id: str | None, data_dir: str | None, url: str) -> str:
    """The given token, or a 10-minute admin token signed with the local node key."""
    if token:
        return token
    from yunnao.registry import tokens

    settings = _settings(node_id=node_id, data_dir=data_dir)
    if not settings.key_path.exists():
        raise click.UsageError(
            f"no --token given and no node key at {settings.key_path}: run this on the node's "
            f"machine (with its --data-dir and --node-id), or pass an admin token of {url}"
        )
    key = tokens.load_or_create_key(settings.key_path)
    return tokens.issue(
        key,
        node_id=settings.node_id,
        subject="yunnao-cli",
        role="admin",
        scopes=[settings.node_id],
        ttl=timedelta(minutes=10),
    )


@dataclass(frozen=True)
class NodeClient:
    """The node a command talks to, and how."""

    url: str
    token: str | None
    node_id: str | None
    data_dir: str | None
    as_json: bool

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        bearer = admin_token(self.token, self.node_id, self.data_dir, self.url)
        return _request(self.url, bearer, method, path, **kwargs)


def admin_options(fn: Any) -> Any:
    """The node and client options, handed to the command as one ``node`` argument."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        node_id: str | None,
        data_dir: str | None,
        url: str,
        token: str | None,
        as_json: bool,
        **kwargs: Any,
    ) -> Any:
        return fn(*args, node=NodeClient(url, token, node_id, data_dir, as_json), **kwargs)

    return node_options(client_options(command), store=False)
