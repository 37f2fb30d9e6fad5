"""``yunnao login``, ``logout`` and ``profiles``: a node's URL and a token saved once
(like ``gh auth login``), so that client commands work from any machine without
``--url`` and ``--token``. Profiles live in ``profiles.toml`` of the configuration
directory (``$YUNNAO_CONFIG_DIR``, else ``~/.config/yunnao``), mode 0600; how commands
pick one is in :mod:`~yunnao.cli.common`."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from .common import (
    DEFAULT_PROFILE,
    PROFILE_NAME,
    Profile,
    console,
    err_console,
    print_json,
    profiles_path,
    read_profiles,
    request_json,
    write_profiles,
)


def _profile_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not PROFILE_NAME.match(value):
        raise click.BadParameter("letters, digits, - and _ (at most 64)")
    return value


name_option = click.option(
    "--profile",
    default=DEFAULT_PROFILE,
    show_default=True,
    metavar="NAME",
    callback=_profile_name,
    help="Name of the profile (commands use `default` unless --profile or YUNNAO_PROFILE "
    "names another)",
)


def _read_token() -> str:
    if sys.stdin.isatty():
        return click.prompt("Token", hide_input=True).strip()
    return sys.stdin.readline().strip()


@click.command()
@click.option("--url", required=True, help="Base URL of the node, e.g. https://node.example")
@click.option("--token", help="Bearer token  [default: read from stdin, or asked for, hidden]")
@click.option("--namespace", help="Default namespace of `yunnao publish` and `publish-jobs list`")
@name_option
def login(url: str, token: str | None, namespace: str | None, profile: str) -> None:
    """Check a token against a node and save both as a profile.

    The token is checked with a request that needs it (with --namespace: the
    namespace's publish jobs, so the token must be allowed to publish there).

    \b
    Examples:
        yunnao login --url https://node.example --namespace sd.qd.env   # asks for the token
        echo "$TOKEN" | yunnao login --url https://node.example --profile work
    """
    url = url.rstrip("/")
    token = token or _read_token()
    if not token:
        raise click.UsageError("no token given")
    if namespace:
        request_json(url, token, "GET", f"/v1/namespaces/{namespace}/publish-jobs")
    else:
        # Any valid token gets 200 here; a wrong one 401 (never downgraded to anonymous).
        request_json(url, token, "GET", "/v1/capabilities", params={"per_page": 1})
    profiles = read_profiles()
    profiles[profile] = Profile(url, token, namespace)
    path = write_profiles(profiles)
    scope = f", namespace {namespace}" if namespace else ""
    err_console.print(
        f"[green]✓[/green] logged in to {url}{scope}: profile {profile!r} saved in {path}",
        soft_wrap=True,
        highlight=False,
    )


@click.command()
@name_option
def logout(profile: str) -> None:
    """Forget a saved profile (its token stays valid at the node until it expires)."""
    profiles = read_profiles()
    if profiles.pop(profile, None) is None:
        raise click.ClickException(f"no profile {profile!r} in {profiles_path()}")
    write_profiles(profiles)
    err_console.print(f"profile {profile!r} removed", highlight=False)


def _mask(token: str) -> str:
    return "…" + token[-4:] if len(token) > 12 else "…"


@click.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON")
def profiles_list(as_json: bool) -> None:
    """List the saved profiles (tokens masked)."""
    profiles = read_profiles()
    rows = [
        {"profile": n, "url": p.url, "namespace": p.namespace, "token": _mask(p.token)}
        for n, p in sorted(profiles.items())
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print(f"no profiles in {profiles_path()}: save one with `yunnao login`")
        return
    table = Table(title=str(profiles_path()), title_justify="left")
    for column in ("profile", "url", "namespace", "token"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(row[c] or "-" for c in ("profile", "url", "namespace", "token")))
    console.print(table)
