"""``yunnao demo``: a city and two districts on one machine, linked by the cascade.

It starts three real ``yunnao serve`` processes on embedded defaults, each with its own
data dir (SQLite store, embedded MLflow, node key) under ``--dir``:

- ``sd.qd`` (the city) with plugins off, on ``--port``;
- ``sd.qd.shinan`` and ``sd.qd.laoshan`` (districts) on the next two ports, each
  publishing the installed example plugins on start (``serve --publish-plugins``).

Then it links them with the commands an operator would type (``yunnao cascade
add-child`` at the city, ``add-parent --follow`` at each district), run in-process so
that each signs its admin token with the node's own key, waits until the city lists
every capability its districts publish, calls one through the city, prints where to
look and what to try, and keeps the nodes running until Ctrl-C or SIGTERM.

The nodes' processes (plan, start, watch, stop) are :mod:`yunnao.demo_nodes`'s; this
module is the command: it links them, checks the cascade and prints the walkthrough.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from yunnao.demo_nodes import (
    DEPARTMENTS,
    TITLES_EN,
    DemoFailed,
    DemoNode,
    check_ports,
    plan_nodes,
    remove_state,
    start_nodes,
    stop_nodes,
    watch_nodes,
)

from .cascade import cascade
from .common import admin_token


class _Stop(BaseException):
    """SIGTERM: stop like on Ctrl-C."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text="[green]✓[/green]"),
        TextColumn("{task.description}"),
        TextColumn("[dim]{task.fields[note]}[/dim]"),
        TimeElapsedColumn(),
        console=console,
    )


def _name(nodes: list[DemoNode], progress: Progress) -> None:
    """Give the nodes their English titles and the districts' departments their titles
    (市南区交通运输局 / Shinan District Transport Bureau), as each node's operator would
    with ``yunnao node set`` and ``yunnao namespace set``; the cascade carries them up."""
    task = progress.add_task("naming the nodes and their departments", total=1, note="")
    named = 0
    with httpx.Client(trust_env=False, timeout=10) as client:
        for node in nodes:
            token = admin_token(None, node.node_id, str(node.data_dir), node.url)
            auth = {"Authorization": f"Bearer {token}"}
            resp = client.patch(
                f"{node.url}/v1/node",
                json={"title_zh": node.title, "title_en": TITLES_EN.get(node.node_id, "")},
                headers=auth,
            )
            if resp.status_code != 200:
                raise DemoFailed(node, f"setting its titles answered {resp.status_code}")
            listed = client.get(f"{node.url}/v1/namespaces", headers=auth)
            for ns in listed.json().get("items", []) if listed.status_code == 200 else []:
                dept = DEPARTMENTS.get(ns["id"].rsplit(".", 1)[-1])
                if dept is None or ns["node_id"] != node.node_id:
                    continue
                english = f"{TITLES_EN.get(node.node_id, node.node_id)} {dept[1]}"
                resp = client.patch(
                    f"{node.url}/v1/namespaces/{ns['id']}",
                    json={"title_zh": node.title + dept[0], "title_en": english},
                    headers=auth,
                )
                if resp.status_code != 200:
                    raise DemoFailed(node, f"naming {ns['id']} answered {resp.status_code}")
                named += 1
    progress.update(task, completed=1, note=f"{len(nodes)} nodes, {named} departments")


def _narrow(districts: list[DemoNode], progress: Progress) -> None:
    """Let only its own department call each district's internal ``air-anomaly`` (the
    rest of the city still finds it), so that a city user has something to ask access
    for (权限申请) in the walkthrough."""
    task = progress.add_task("air-anomaly: callable by its department only", total=1, note="")
    with httpx.Client(trust_env=False, timeout=10) as client:
        for d in districts:
            token = admin_token(None, d.node_id, str(d.data_dir), d.url)
            department = f"{d.node_id}.env"
            url = f"{d.url}/v1/capabilities/{department}/air-anomaly"
            auth = {"Authorization": f"Bearer {token}"}
            found = client.get(url, headers=auth)
            if found.status_code == 404:  # the example is not installed
                continue
            # Keep the rest of its rules (grants of an earlier run included).
            rules = {**found.json().get("access", {}), "invoke": {"departments": [department]}}
            resp = client.patch(url, json={"access": rules}, headers=auth)
            if resp.status_code != 200:
                raise DemoFailed(d, f"narrowing air-anomaly answered {resp.status_code}")
    progress.update(task, completed=1, note="others ask for access")


def _cascade_cli(node: DemoNode, *args: str) -> dict[str, Any]:
    """Run ``yunnao cascade ARGS --json`` at ``node`` in-process, as its operator would
    on the node's machine (the command signs its admin token with the key in the data
    dir), and return what it prints."""
    argv = [*args, "--url", node.url, "--node-id", node.node_id, "--data-dir", str(node.data_dir)]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            cascade.main([*argv, "--json"], prog_name="yunnao cascade", standalone_mode=False)
    except click.ClickException as exc:
        raise DemoFailed(node, f"yunnao cascade {' '.join(args)}: {exc.format_message()}") from None
    return json.loads(printed.getvalue())


def _link(city: DemoNode, districts: list[DemoNode], progress: Progress) -> None:
    """The city pulls each district; each district accepts the city as its parent and
    follows it (so it sees the city's catalog: its own and its sibling's entries).
    Linking again on a later start only refreshes the URLs; checkpoints are kept."""
    steps = []
    for d in districts:
        pull = ("add-child", d.node_id, "--child-url", d.url)
        follow = ("add-parent", city.node_id, "--parent-url", city.url, "--follow")
        steps.append((f"{city.node_id} pulls {d.node_id}", city, pull))
        steps.append((f"{d.node_id} follows its parent {city.node_id}", d, follow))
    for description, node, args in steps:
        task = progress.add_task(description, total=1, note=f"cascade {args[0]}")
        peer = _cascade_cli(node, *args)
        # The key's fingerprint, as `yunnao cascade node` shows it on the other side.
        note = f"cascade {args[0]}, key {peer['public_key'][:8]}…"
        progress.update(task, completed=1, note=note)


def _catalog(client: httpx.Client, at: DemoNode, origin: str) -> dict[str, str | None]:
    """``id -> latest version`` of the capabilities from ``origin`` that ``at``'s admin
    sees, less restricted ones (they never leave their node)."""
    token = admin_token(None, at.node_id, str(at.data_dir), at.url)
    found: dict[str, str | None] = {}
    page = 1
    while True:
        resp = client.get(
            f"{at.url}/v1/capabilities",
            params={"node": origin, "per_page": 100, "page": page},
            headers={"Authorization": f"Bearer {token}"},
        )
        resp.raise_for_status()
        data = resp.json()
        for item in data["items"]:
            if item["classification"] != "restricted":
                found[item["id"]] = item["latest_version"]
        if page * data["per_page"] >= data["total"]:
            return found
        page += 1


def _wait_for_city(
    city: DemoNode, districts: list[DemoNode], progress: Progress, timeout: float
) -> dict[str, int]:
    """Wait until the city lists every shared capability of each district, at the
    district's latest versions; returns the count per district."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        wanted: dict[DemoNode, set[tuple[str, str | None]]] = {}
        for d in districts:
            try:
                wanted[d] = set(_catalog(client, d, d.node_id).items())
            except httpx.HTTPError as exc:
                raise DemoFailed(d, f"cannot list its catalog: {exc}") from None
            if not wanted[d]:
                raise DemoFailed(
                    d,
                    "published no capabilities: are the example plugins installed? "
                    "(`make demo` installs examples/*)",
                )
        tasks = {
            d: progress.add_task(
                f"{city.node_id} lists {d.node_id}'s capabilities",
                total=len(wanted[d]),
                note=f"0/{len(wanted[d])}",
            )
            for d in districts
        }
        deadline = time.monotonic() + timeout
        pending = list(districts)
        last_error = ""
        while pending:
            for d in list(pending):
                try:
                    have = set(_catalog(client, city, d.node_id).items())
                except httpx.HTTPError as exc:
                    last_error = f" (last error: {exc})"
                    continue
                done = len(wanted[d] & have)
                progress.update(tasks[d], completed=done, note=f"{done}/{len(wanted[d])}")
                if done == len(wanted[d]):
                    pending.remove(d)
            if pending and time.monotonic() > deadline:
                d = pending[0]
                raise DemoFailed(
                    city,
                    f"after {timeout:.0f} s it still lacks capabilities of {d.node_id}"
                    f"{last_error}; see `yunnao cascade status` at the city",
                )
            if pending:
                time.sleep(0.3)
    return {d.node_id: len(wanted[d]) for d in districts}


@dataclass(frozen=True)
class Example:
    """A public district capability and one of its published example inputs."""

    district: str
    ref: str
    input: Any


def _pick_example(city: DemoNode, districts: list[DemoNode]) -> Example | None:
    """The public capability of the first district (that has one) with the shortest
    published example input, as the city describes it to anyone."""
    with httpx.Client(base_url=city.url, trust_env=False, timeout=10) as client:
        for d in districts:
            items = client.get(
                "/v1/capabilities",
                params={"node": d.node_id, "classification": "public", "per_page": 100},
            ).json()["items"]
            candidates = []
            for item in sorted(items, key=lambda i: i["id"]):
                if not item["latest_version"]:
                    continue
                version = client.get(
                    f"/v1/capabilities/{item['id']}/versions/{item['latest_version']}"
                ).json()
                for example in version.get("examples", []):
                    size = len(json.dumps(example["input"]))
                    candidates.append((size, item["id"], example["input"]))
            if candidates:
                _, ref, example_input = min(candidates, key=lambda c: c[0])
                return Example(d.node_id, ref, example_input)
    return None


def _try_call(city: DemoNode, example: Example, progress: Progress) -> None:
    """Call the example through the city: it must be forwarded to its district."""
    task = progress.add_task(f"call at {city.node_id}: {example.ref}", total=1, note="")
    started = time.monotonic()
    try:
        resp = httpx.post(
            f"{city.url}/v1/invoke/{example.ref}",
            json={"input": example.input},
            timeout=60,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise DemoFailed(city, f"calling {example.ref}: {exc}") from None
    if resp.status_code != 200:
        raise DemoFailed(city, f"calling {example.ref} answered {resp.status_code}: {resp.text}")
    took = time.monotonic() - started
    progress.update(task, completed=1, note=f"200 in {took:.1f} s")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory if inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _yunnao_command() -> str:
    script = Path(sys.executable).parent / "yunnao"
    on_path = shutil.which("yunnao")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "yunnao"
    return _shown(script) if script.exists() else "yunnao"


def _summary(
    console: Console,
    city: DemoNode,
    nodes: list[DemoNode],
    counts: dict[str, int],
    example: Example | None,
) -> None:
    console.print()
    console.print("[bold]Yunnao city demo[/bold]: three nodes, linked")
    for node in nodes:
        # One line per fact, never cut: URLs must stay whole in a narrow terminal.
        console.print(f"\n  [bold]{node.node_id}[/bold] {node.title} ({node.role})")
        console.print(f"    web catalog  {node.url}/", soft_wrap=True)
        console.print(f"    API docs     {node.url}/openapi.json", soft_wrap=True)
        console.print(f"    log          {_shown(node.log_path)}", soft_wrap=True)
    listed = ", ".join(f"{n} of {d}" for d, n in counts.items())
    console.print(
        f"\nThe city lists its districts' capabilities ({listed}; anonymous callers see the "
        "public ones), and a call of one at the city runs in its district.\n"
    )
    yunnao = _yunnao_command()
    first = next(n for n in nodes if n.role == "district")
    commands = [
        (
            f"# {first.node_id}'s capabilities, found at the city",
            f"{yunnao} search --url {city.url} --node {first.node_id}",
        ),
    ]
    if example is not None:
        body = json.dumps({"input": example.input}, ensure_ascii=False, separators=(",", ":"))
        commands.append(
            (
                f"# call {example.ref} at the city: forwarded to {example.district}",
                f"curl -s -X POST {city.url}/v1/invoke/{example.ref} "
                f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
            )
        )
    commands.append(
        (
            "# the city's links to its districts and their sync state",
            f"{yunnao} cascade status --url {city.url} --node-id {city.node_id} "
            f"--data-dir {shlex.quote(_shown(city.data_dir))}",
        )
    )
    commands.append(
        (
            "# the federation overview (概览): sign in on the page (dev sign-in), it opens",
            f"{city.url}/signin",
        )
    )
    commands.append(
        (
            f"# ask for access (权限申请) to {first.node_id}.env/air-anomaly at the city; "
            f"its bureau decides at {first.url}/access-requests",
            f"{city.url}/c/{first.node_id}.env/air-anomaly",
        )
    )
    console.print("Try:")
    for comment, command in commands:
        console.print(f"  {comment}", style="dim", markup=False, soft_wrap=True)
        console.print(f"  {command}", markup=False, soft_wrap=True)
    console.print()
    console.print(
        f"demo ready: city {city.url}/ (Ctrl-C stops the three nodes)",
        style="bold",
        markup=False,
        soft_wrap=True,
    )


@click.command()
@click.option(
    "--dir",
    "directory",
    default="./var/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory with one subdirectory per node (store, MLflow, key, serve.log); "
    "kept between runs, so a second start is fast and keeps what you did",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the three nodes listen on",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65533),
    help="The city's port; the districts take the next two",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Delete the nodes' directories under --dir first: start from empty stores",
)
@click.option(
    "--timeout",
    default=180.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the nodes to be ready, and for the city to list the "
    "districts' capabilities",
)
def demo(directory: str, host: str, port: int, fresh: bool, timeout: float) -> None:
    """Run a city and two districts on this machine, linked into a cascade.

    \b
    Starts three `yunnao serve` processes on embedded defaults (SQLite, MLflow and a
    node key in each node's own directory under --dir, its log in serve.log there):
      sd.qd          the city, plugins off                  on --port
      sd.qd.shinan   a district, example plugins published  on --port + 1
      sd.qd.laoshan  a district, example plugins published  on --port + 2
    links them (the city pulls each district; each district follows the city), waits
    until the city lists the districts' capabilities, calls one through the city, and
    prints the nodes' URLs and commands to try. Ctrl-C (or SIGTERM) stops the nodes.
    YUNNAO_* settings in the environment are ignored.

    \b
    Examples:
      yunnao demo                          # city on http://127.0.0.1:8000/
      yunnao demo --port 9000 --fresh      # on 9000-9002, from empty stores
    """
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    # Each node runs on embedded defaults in its own directory, whatever the shell's
    # YUNNAO_* settings point at (a store, an MLflow server, a key file): the nodes
    # inherit this environment, and the cascade commands run here read it too.
    for name in [n for n in os.environ if n.startswith("YUNNAO_")]:
        del os.environ[name]
    root = Path(directory).resolve()
    nodes = plan_nodes(root, host, port)
    city, districts = nodes[0], nodes[1:]
    check_ports(nodes)
    if fresh:
        remove_state(nodes)
    previous = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _raise_stop)
    ready, code = False, 0
    try:
        with _progress(console) as progress:
            start_nodes(nodes, progress, timeout)
            _name(nodes, progress)
            _narrow(districts, progress)
            _link(city, districts, progress)
            counts = _wait_for_city(city, districts, progress, timeout)
            try:
                example = _pick_example(city, districts)
            except httpx.HTTPError as exc:
                raise DemoFailed(city, f"cannot read its catalog: {exc}") from None
            if example is not None:
                _try_call(city, example, progress)
        _summary(console, city, nodes, counts, example)
        ready = True
        watch_nodes(nodes)
    except (KeyboardInterrupt, _Stop):
        console.print()
        code = 0 if ready else 130
    except DemoFailed as exc:
        node = exc.node
        console.print(
            f"[red]✗[/red] {node.role} {node.node_id} ({node.url}) failed: {exc.message}",
            soft_wrap=True,
        )
        console.print(f"last lines of {_shown(node.log_path)}:", style="bold")
        console.print(node.log_tail() or "(empty)", markup=False, soft_wrap=True)
        console.print(
            "Fix the cause and run the demo again; --fresh starts from empty stores.",
            style="dim",
        )
        code = 1
    finally:
        # A second Ctrl-C must not leave nodes behind; stopping is bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop_nodes(console, nodes)
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
    sys.exit(code)
