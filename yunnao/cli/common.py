"""What every command group of the ``yunnao`` command line shares: the consoles, the
options that locate a node's local state or name a node to talk to, node settings from
those options, HTTP requests to a node (as the caller, or as its admin with a token
signed by the local node key) and small parsers. Command groups import this module;
it never imports them."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click
import httpx
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"


def node_settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from yunnao.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # pydantic prefixes a validator's own message with "Value error, ".
        msgs = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise click.UsageError(msgs) from None


def node_options(fn: Any, *, store: bool = True) -> Any:
    """Options that locate a node's local state (its key and, with ``store``, its store)."""
    for opt in reversed(
        [
            click.option(
                "--node-id",
                envvar="YUNNAO_NODE_ID",
                help="This node's dotted id, e.g. sd.qd.shinan  [env YUNNAO_NODE_ID; "
                "default: local]",
            ),
            click.option(
                "--data-dir",
                envvar="YUNNAO_DATA_DIR",
                type=click.Path(file_okay=False),
                help="Directory for embedded state: SQLite store, node key  "
                "[env YUNNAO_DATA_DIR; default: ./var]",
            ),
            click.option(
                "--database-url",
                envvar="YUNNAO_DATABASE_URL",
                help="SQLAlchemy URL of the registry store, e.g. "
                "postgresql+psycopg://user@host/db  [env YUNNAO_DATABASE_URL; default: "
                "SQLite in the data dir]",
            ),
        ][: 3 if store else 2]
    ):
        fn = opt(fn)
    return fn


def client_options(fn: Any) -> Any:
    """Options for commands that talk to a node over HTTP."""
    for opt in reversed(
        [
            click.option(
                "--url",
                envvar="YUNNAO_URL",
                default=DEFAULT_URL,
                show_default=True,
                help="Base URL of the node  [env YUNNAO_URL]",
            ),
            click.option(
                "--token",
                envvar="YUNNAO_TOKEN",
                help="Bearer token (see `yunnao token create`)  [env YUNNAO_TOKEN]",
            ),
            click.option(
                "--json",
                "as_json",
                is_flag=True,
                help="Print the node's JSON response, for scripts",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def request_json(
    url: str, token: str | None, method: str, path: str, *, timeout: float = 30, **kwargs: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            resp = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach node at {url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            prob = resp.json()
            detail = f"{prob.get('title', 'error')}: {prob.get('detail', '')}"
            for e in prob.get("errors", []):
                detail += f"\n  {e.get('field')}: {e.get('message')}"
        except ValueError:
            detail = resp.text[:500]
        raise click.ClickException(f"{resp.status_code} {detail}")
    return resp.json() if resp.content else None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def split_ref(ref: str) -> tuple[str, str]:
    path, at, version = ref.partition("@")
    if path.count("/") != 1 or (at and not version):
        raise click.BadParameter(
            "expected NAMESPACE/NAME, NAMESPACE/NAME@VERSION or NAMESPACE/NAME@ALIAS",
            param_hint="REF",
        )
    return path, version


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string: -i name=李雷


def parse_ttl(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise click.BadParameter(
            f"{text!r}: use a positive number with s, m, h or d, e.g. 12h", param_hint="--ttl"
        )
    return timedelta(seconds=int(number) * units[unit])


def mlflow_option(fn: Any) -> Any:
    return click.option(
        "--mlflow-uri",
        envvar="YUNNAO_MLFLOW_TRACKING_URI",
        help="MLflow tracking server or database URI  [env YUNNAO_MLFLOW_TRACKING_URI; "
        "default: embedded MLflow under the data dir]",
    )(fn)


def load_plugins(targets: tuple[str, ...], *, entry_points: bool = True) -> Any:
    from yunnao.plugins.loader import Plugins

    loaded = Plugins()
    if entry_points:
        loaded.load_entry_points()
    for target in targets:
        try:
            loaded.load_target(target)
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    return loaded


def admin_token(token: str | None, node_id: str | None, data_dir: str | None, url: str) -> str:
    """The given token, or a 10-minute admin token signed with the local node key."""
    if token:
        return token
    from yunnao.registry.identity import tokens

    settings = node_settings(node_id=node_id, data_dir=data_dir)
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
        return request_json(self.url, bearer, method, path, **kwargs)


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
