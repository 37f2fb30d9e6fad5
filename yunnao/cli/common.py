"""What every command group of the ``yunnao`` command line shares: the consoles, the
options that locate a node's local state or name a node to talk to, node settings from
those options, HTTP requests to a node (as the caller, or as its admin with a token
signed by the local node key), the saved profiles of ``yunnao login`` and small parsers.
Command groups import this module; it never imports them.

A client command finds its node and token in this order: ``--url``/``--token``, then
``YUNNAO_URL``/``YUNNAO_TOKEN``, then the profile (``--profile``/``YUNNAO_PROFILE``, else
the one named ``default`` if saved), then ``http://127.0.0.1:8000`` with no token. A
profile's token goes only to its own URL: with ``--url`` of another node it is not sent.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
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
    """Options for commands that talk to a node over HTTP. The command gets ``url`` and
    ``token`` resolved from the options, the environment and the profile."""

    @functools.wraps(fn)
    def command(*args: Any, url: str | None, token: str | None, profile: str | None,
                **kwargs: Any) -> Any:  # fmt: skip
        remote = resolve_remote(url, token, profile)
        return fn(*args, url=remote.url, token=remote.token, **kwargs)

    return _remote_options(command)


def remote_options(fn: Any) -> Any:
    """Like :func:`client_options`, but the command gets one ``remote`` argument (a
    :class:`Remote`, which also knows the profile's namespace) and ``as_json``."""

    @functools.wraps(fn)
    def command(*args: Any, url: str | None, token: str | None, profile: str | None,
                **kwargs: Any) -> Any:  # fmt: skip
        return fn(*args, remote=resolve_remote(url, token, profile), **kwargs)

    return _remote_options(command)


def _remote_options(fn: Any) -> Any:
    for opt in reversed(
        [
            click.option(
                "--url",
                envvar="YUNNAO_URL",
                help=f"Base URL of the node  [env YUNNAO_URL; default: the profile's, "
                f"else {DEFAULT_URL}]",
            ),
            click.option(
                "--token",
                envvar="YUNNAO_TOKEN",
                help="Bearer token (see `yunnao token create`)  [env YUNNAO_TOKEN; "
                "default: the profile's]",
            ),
            profile_option,
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


profile_option = click.option(
    "--profile",
    envvar="YUNNAO_PROFILE",
    metavar="NAME",
    help="Saved profile to use (see `yunnao login`)  [env YUNNAO_PROFILE; default: "
    "the profile `default`, if saved]",
)


# ---------------------------------------------------------------- profiles (yunnao login)

PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Profile:
    """A node and a token saved by ``yunnao login``."""

    url: str
    token: str
    namespace: str | None = None


def config_dir() -> Path:
    """``$YUNNAO_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/yunnao``, else ``~/.config/yunnao``."""
    if os.environ.get("YUNNAO_CONFIG_DIR"):
        return Path(os.environ["YUNNAO_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "yunnao"


def profiles_path() -> Path:
    return config_dir() / "profiles.toml"


def read_profiles() -> dict[str, Profile]:
    path = profiles_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    if path.stat().st_mode & 0o077:
        err_console.print(f"[yellow]warning[/yellow]: {path} holds tokens and others may read "
                          f"it: chmod 600 {path}", soft_wrap=True)  # fmt: skip
    try:
        data = tomllib.loads(text)
        return {
            name: Profile(str(t["url"]), str(t["token"]), t.get("namespace") or None)
            for name, t in data.items()
            if isinstance(t, dict)
        }
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise click.ClickException(f"{path} is not a profiles file: {exc}") from None


def write_profiles(profiles: dict[str, Profile]) -> Path:
    """Replace the profiles file (mode 0600, in a directory of mode 0700); no profiles
    remove it."""
    path = profiles_path()
    if not profiles:
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    lines = ["# yunnao profiles, written by `yunnao login`: bearer tokens, keep it private\n"]
    for name, p in sorted(profiles.items()):
        lines.append(f"\n[{name}]\n")  # names are bare keys (PROFILE_NAME)
        fields = {"url": p.url, "token": p.token, "namespace": p.namespace}
        # A JSON string (ASCII, \uXXXX escapes) is a TOML basic string.
        lines += [f"{k} = {json.dumps(v)}\n" for k, v in fields.items() if v]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(lines))
    os.replace(tmp, path)
    return path


def profile_named(name: str) -> Profile:
    profiles = read_profiles()
    if name not in profiles:
        saved = ", ".join(sorted(profiles)) or "none"
        raise click.UsageError(
            f"no profile {name!r} (saved: {saved}); save one with "
            f"`yunnao login --url URL --profile {name}`"
        )
    return profiles[name]


@dataclass(frozen=True)
class Remote:
    """The node a client command talks to, its token and the profile's namespace."""

    url: str
    token: str | None
    namespace: str | None = None
    profile: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return request_json(self.url, self.token, method, path, **kwargs)


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve_remote(url: str | None, token: str | None, profile: str | None) -> Remote:
    """Option or environment first, then the profile (named, else ``default`` if saved),
    then :data:`DEFAULT_URL`. A profile's token is sent only to the profile's URL."""
    name = profile or DEFAULT_PROFILE
    saved = profile_named(name) if profile else read_profiles().get(DEFAULT_PROFILE)
    if saved is None:
        return Remote(url or DEFAULT_URL, token)
    if url and not _same_url(url, saved.url):
        if profile:
            raise click.UsageError(
                f"profile {name!r} is for {saved.url}, not {url}: drop --url or --profile"
            )
        return Remote(url, token)  # another node: none of the default profile
    return Remote(url or saved.url, token or saved.token, saved.namespace, name)


def send(
    url: str, token: str | None, method: str, path: str, *, timeout: float = 30, **kwargs: Any
) -> httpx.Response:
    """One request to the node; a problem answer (4xx, 5xx) raises ClickException."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            resp = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach node at {url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            detail = problem_text(resp.json())
        except (ValueError, AttributeError):
            detail = resp.text[:500]
        raise click.ClickException(f"{resp.status_code} {detail}")
    return resp


def problem_text(prob: dict[str, Any]) -> str:
    """A problem document as lines: title and detail, then each field error."""
    detail = f"{prob.get('title', 'error')}: {prob.get('detail', '')}"
    for e in prob.get("errors", []):
        detail += f"\n  {e.get('field')}: {e.get('message')}"
    return detail


def request_json(
    url: str, token: str | None, method: str, path: str, *, timeout: float = 30, **kwargs: Any
) -> Any:
    resp = send(url, token, method, path, timeout=timeout, **kwargs)
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
        # url and token come resolved by client_options (option, env, profile).
        return fn(*args, node=NodeClient(url, token, node_id, data_dir, as_json), **kwargs)

    return node_options(client_options(command), store=False)
