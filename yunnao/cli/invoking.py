"""``yunnao invoke`` and ``yunnao runtime``: call a capability, bind a version to a
runtime, see the node's runtimes."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .common import (
    client_options,
    console,
    parse_value,
    print_json,
    request_json,
    split_ref,
)


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME[@VERSION|@ALIAS]")
@click.argument("input_json", metavar="[INPUT]", required=False)
@click.option(
    "-i",
    "--input",
    "fields",
    multiple=True,
    metavar="FIELD=VALUE",
    help="One input field (repeatable); VALUE is JSON, or a string if it is not JSON",
)
@click.option("--timeout", type=float, help="Seconds the node may take (default: the node's)")
@click.option("--async", "run_async", is_flag=True, help="Queue it as a job and print the job id")
@click.option("--wait", is_flag=True, help="With --async: wait for the job and print its result")
@client_options
def invoke(
    ref: str,
    input_json: str | None,
    fields: tuple[str, ...],
    timeout: float | None,
    run_async: bool,
    wait: bool,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Call a capability and print its output.

    INPUT is the input object as JSON, or - to read it from stdin; or give fields one
    by one with -i. Examples:

    \b
      yunnao invoke local.urban/scene-stats -i 'image=[[0.1,0.1,0.9],[0.1,0.1,0.9],[0.1,0.1,0.9]]'
      yunnao invoke local.traffic/flow-forecast@1.0.0 - < counts.json
      yunnao invoke local.env/air-anomaly@production --async --wait - < readings.json
    """
    path, version = split_ref(ref)
    data: Any = {}
    if input_json is not None:
        text = click.get_text_stream("stdin").read() if input_json == "-" else input_json
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="INPUT") from None
    for item in fields:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="-i")
        if not isinstance(data, dict):
            raise click.BadParameter("-i needs INPUT to be an object", param_hint="-i")
        data[key] = parse_value(value)
    body: dict[str, Any] = {"input": data}
    if timeout is not None:
        body["timeout"] = timeout
    target = f"/v1/invoke/{path}" + (f"@{version}" if version else "")
    wait_s = (timeout or 300) + 10
    if not run_async:
        answer = request_json(url, token, "POST", target, json=body, timeout=wait_s)
        print_json(answer if as_json else answer["output"])
        return
    job = request_json(url, token, "POST", target, json=body, headers={"Prefer": "respond-async"})
    if not wait:
        print_json(job) if as_json else click.echo(job["id"])
        return
    with console.status(f"job {job['id']} {job['status']}") as status:
        while job["status"] not in ("succeeded", "failed"):
            time.sleep(0.5)
            job = request_json(url, token, "GET", f"/v1/jobs/{job['id']}")
            status.update(f"job {job['id']} {job['status']}")
    if as_json:
        print_json(job)
    elif job["status"] == "succeeded":
        print_json(job["output"])
    else:
        error = job["error"]
        raise click.ClickException(f"{error['status']} {error['title']}: {error['detail']}")


@click.group()
def runtime() -> None:
    """See and change where capabilities run."""


@runtime.command("set")
@click.argument("ref", metavar="NAMESPACE/NAME@VERSION")
@click.argument("rtype", metavar="TYPE")
@click.option(
    "-c",
    "--config",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Binding option (repeatable), e.g. -c num_replicas=2; VALUE is JSON or a string",
)
@client_options
def runtime_set(
    ref: str, rtype: str, options: tuple[str, ...], url: str, token: str | None, as_json: bool
) -> None:
    """Bind a version to a runtime (inprocess, rayserve, bentoml, triton, ...) without
    republishing it. Needs an operator, author or admin token for its namespace."""
    path, version = split_ref(ref)
    if not version:
        raise click.BadParameter("name the version: NAMESPACE/NAME@VERSION", param_hint="REF")
    config = {}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-c")
        config[key] = parse_value(value)
    data = request_json(
        url,
        token,
        "PUT",
        f"/v1/capabilities/{path}/versions/{version}/runtime",
        json={"type": rtype, "config": config},
    )
    if as_json:
        print_json(data)
    else:
        console.print(f"{data['id']} now runs on [bold]{data['runtime']['type']}[/bold]")


@runtime.command("status")
@client_options
def runtime_status(url: str, token: str | None, as_json: bool) -> None:
    """The node's runtimes and their health."""
    data = request_json(url, token, "GET", "/v1/runtimes")
    if as_json:
        print_json(data)
        return
    for rtype in data["available"]:
        health = data["health"].get(rtype)
        state = "not started" if health is None else ("up" if health["ok"] else "DOWN")
        detail = f"  {health['detail']}" if health and health["detail"] else ""
        console.print(f"{rtype:<10} {state}{detail}")
