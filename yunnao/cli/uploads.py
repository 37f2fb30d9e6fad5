"""Publishing by upload, the client side (shared by ``yunnao publish`` and ``yunnao
publish-jobs``): build a project folder into a wheel, stream the archive to the node
with a progress bar, follow the publish job line by line, and print what it published
or the problem that stopped it. ``yunnao publish`` goes this way when it names a node
(``--url``, ``YUNNAO_URL``, ``--profile``, ``YUNNAO_PROFILE`` or a saved ``default``
profile) and ``--local`` is not given; otherwise it publishes into the local store as
the node's operator does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from .common import (
    DEFAULT_PROFILE,
    Remote,
    console,
    err_console,
    print_json,
    profile_option,
    read_profiles,
    request_json,
    resolve_remote,
    send,
)

OCTET = "application/octet-stream"
ARCHIVES = (".whl", ".tar.gz", ".bento")
CHUNK = 256 * 1024
DONE = ("succeeded", "failed")


# ---------------------------------------------------------------- building the archive


def _build_requirements_installed(project: Path) -> bool:
    """Whether this environment has every build requirement of the project, so pip can
    build it without fetching anything (``--no-build-isolation``)."""
    from packaging.requirements import InvalidRequirement, Requirement

    requires: list[str] = ["setuptools>=40.8.0", "wheel"]  # pip's default without a table
    pyproject = project / "pyproject.toml"
    if pyproject.exists():
        try:
            data = tomllib.loads(pyproject.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise click.BadParameter(f"{pyproject}: {exc}", param_hint="TARGET") from None
        requires = data.get("build-system", {}).get("requires", requires)
    for text in requires:
        try:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate():
                continue
            have = importlib.metadata.version(req.name)
        except (InvalidRequirement, importlib.metadata.PackageNotFoundError):
            return False
        if not req.specifier.contains(have, prereleases=True):
            return False
    return True


def build_wheel(project: Path, dest: Path) -> Path:
    """``pip wheel --no-deps`` of the project folder into ``dest``; offline when this
    environment has the build backend (the usual setuptools case)."""
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input",
            "--disable-pip-version-check", "-w", str(dest), str(project)]  # fmt: skip
    if _build_requirements_installed(project):
        argv.insert(4, "--no-build-isolation")
    with err_console.status(f"building a wheel of {project}"):
        done = subprocess.run(argv, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise click.ClickException(f"building a wheel of {project} failed:\n{tail}")
    err_console.print(f"built {wheels[0].name}")
    return wheels[0]


def archive_of(target: str, workdir: Path) -> Path:
    """The archive to upload: TARGET itself (a wheel, an sdist or a Bento from ``bentoml
    export``), or a wheel built from TARGET (a project folder)."""
    path = Path(target)
    if path.is_file() and path.name.endswith(ARCHIVES):
        return path
    if path.is_dir() and ((path / "pyproject.toml").exists() or (path / "setup.py").exists()):
        return build_wheel(path.resolve(), workdir)
    raise click.BadParameter(
        f"{target!r}: to publish at a node, give a project folder (with pyproject.toml or "
        "setup.py), a .whl, a .tar.gz or a .bento (or publish into the local store with "
        "--local)",
        param_hint="TARGET",
    )


# ---------------------------------------------------------------- upload and job


def upload(remote: Remote, namespace: str, archive: Path) -> dict[str, Any]:
    """Stream ``archive`` to the node with a progress bar; the queued publish job."""
    size = archive.stat().st_size
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(f"uploading {archive.name}", total=size)

        def chunks() -> Iterator[bytes]:
            with archive.open("rb") as f:
                while chunk := f.read(CHUNK):
                    progress.advance(task, len(chunk))
                    yield chunk

        resp = send(
            remote.url,
            remote.token,
            "POST",
            f"/v1/namespaces/{namespace}/packages",
            params={"filename": archive.name},
            content=chunks(),
            headers={"Content-Type": OCTET, "Content-Length": str(size)},
            timeout=120,
        )
    return resp.json()


def print_log(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        at = str(line.get("at", ""))[11:19]
        err_console.print(
            f"[dim]{at}[/dim] {escape(str(line.get('step', ''))):<11} "
            + escape(str(line.get("message", ""))),
            soft_wrap=True,
            highlight=False,
        )


def follow(
    remote: Remote, job: dict[str, Any], *, quiet: bool = False, timeout: float = 900
) -> dict[str, Any]:
    """Poll the job until it is done, printing each new log line as it arrives (none
    with ``quiet``); the finished job."""
    seen = 0
    delay = 0.25
    deadline = time.monotonic() + timeout
    while True:
        if not quiet:
            print_log(job["log"][seen:])
        seen = len(job["log"])
        if job["status"] in DONE:
            return job
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"publish job {job['id']} is still {job['status']} after {timeout:.0f}s; "
                f"follow it with `yunnao publish-jobs show {job['id']} --follow`"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
        job = request_json(remote.url, remote.token, "GET", f"/v1/publish-jobs/{job['id']}")


def print_problem(problem: dict[str, Any]) -> None:
    """Title and detail, then each field with its message (an import error's message
    carries the author's traceback: printed whole, indented)."""
    status = problem.get("status", "")
    err_console.print(
        f"[red]✗[/red] {status} "
        + escape(f"{problem.get('title', 'error')}: {problem.get('detail', '')}"),
        soft_wrap=True,
        highlight=False,
    )
    for e in problem.get("errors", []):
        first, *rest = str(e.get("message", "")).splitlines() or [""]
        err_console.print(f"    [bold]{escape(str(e.get('field')))}[/bold]: {escape(first)}",
                          soft_wrap=True, highlight=False)  # fmt: skip
        for line in rest:
            err_console.print(f"        {line}", soft_wrap=True, highlight=False, markup=False)


def report(job: dict[str, Any], *, as_json: bool) -> int:
    """Print the finished job; the exit status (1 when it failed)."""
    if as_json:
        print_json(job)
    elif job["status"] == "succeeded":
        for r in job.get("result") or []:
            aliases = f" (aliases: {', '.join(r['aliases'])})" if r.get("aliases") else ""
            console.print(f"[green]✓[/green] {r['capability']} → {r.get('model_uri')}{aliases}",
                          soft_wrap=True, highlight=False)  # fmt: skip
    elif job["status"] == "failed":
        print_problem(job.get("error") or {})
    else:
        err_console.print(f"publish job {job['id']} is {job['status']}")
    return 1 if job["status"] == "failed" else 0


# ---------------------------------------------------------------- yunnao publish, remotely


def publish_remote(
    target: str,
    *,
    remote: Remote,
    namespace: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Build if needed, upload, follow; the exit status."""
    namespace = namespace or remote.namespace
    if not namespace:
        raise click.UsageError(
            f"publishing at {remote.url} needs the namespace to publish into: give "
            "--namespace (or save one in the profile: yunnao login --namespace NS)"
        )
    with tempfile.TemporaryDirectory(prefix="yunnao-publish-") as tmp:
        archive = archive_of(target, Path(tmp))
        job = upload(remote, namespace, archive)
    if not wait:
        if as_json:
            print_json(job)
        else:
            err_console.print(f"publish job {job['id']} queued; follow it with "
                              f"`yunnao publish-jobs show {job['id']} --follow`")  # fmt: skip
        return 0
    return report(follow(remote, job, quiet=as_json, timeout=timeout), as_json=as_json)


LOCAL_ONLY = ("names_", "status", "aliases", "no_alias", "bentoml_service", "working_dir",
              "version", "classification", "service_url", "node_id", "data_dir",
              "database_url", "mlflow_uri")  # fmt: skip


def remote_publish(fn: Any) -> Any:
    """Add the remote options to ``yunnao publish`` and take the command over when it
    names a node; otherwise the local command runs as before."""

    @functools.wraps(fn)
    def command(
        target: str,
        *,
        url: str | None,
        token: str | None,
        profile: str | None,
        wait: bool,
        wait_timeout: float,
        local: bool,
        **kwargs: Any,
    ) -> Any:
        named = url or profile or DEFAULT_PROFILE in read_profiles()
        if local or not named:
            if local and (url or profile):
                raise click.UsageError("--local publishes into this machine's store: "
                                       "drop --url and --profile")  # fmt: skip
            return fn(target, **kwargs)
        ctx = click.get_current_context()
        given = [
            p.opts[0]
            for p in ctx.command.params
            if p.name in LOCAL_ONLY
            and ctx.get_parameter_source(p.name) is ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: only for publishing into this machine's store (add "
                "--local); a package uploaded to a node brings its versions and settings"
            )
        remote = resolve_remote(url, token, profile)
        code = publish_remote(
            target,
            remote=remote,
            namespace=kwargs["namespace"],
            wait=wait,
            timeout=wait_timeout,
            as_json=kwargs["as_json"],
        )
        sys.exit(code)

    options = [
        click.option("--url", envvar="YUNNAO_URL",
                     help="Publish at this node, by upload  [env YUNNAO_URL]"),
        click.option("--token", envvar="YUNNAO_TOKEN",
                     help="With a node: an author token of the namespace  [env YUNNAO_TOKEN]"),
        profile_option,
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="With a node: follow the publish job to its end"),
        click.option("--wait-timeout", type=float, default=900, show_default=True,
                     metavar="SECONDS", help="With a node: how long to follow the job"),
        click.option("--local", is_flag=True,
                     help="Publish into this machine's store even with a saved profile"),
    ]  # fmt: skip
    for opt in reversed(options):
        command = opt(command)
    return command
