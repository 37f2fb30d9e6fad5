"""``yunnao versions``, ``deprecate``, ``retire``, ``edit`` and ``publish-jobs``: what a
model author does to their capabilities, over HTTP from any machine (``--url`` and
``--token``, or a profile saved by ``yunnao login``). Publishing itself is ``yunnao
publish`` (:mod:`~yunnao.cli.catalog`, by upload through :mod:`~yunnao.cli.uploads`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from .common import Remote, console, print_json, remote_options, send, split_ref
from .uploads import follow, print_log, report


def _ref(ref: str, *, version: bool) -> tuple[str, str]:
    path, ver = split_ref(ref)
    if version and not ver:
        raise click.BadParameter("name the version: NAMESPACE/NAME@VERSION", param_hint="REF")
    if not version and ver:
        raise click.BadParameter("expected NAMESPACE/NAME, without @VERSION", param_hint="REF")
    return path, ver


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@remote_options
def versions(ref: str, remote: Remote, as_json: bool) -> None:
    """List a capability's versions, newest first, with their status and runtime.

    \b
    Example:
        yunnao versions sd.qd.env/noise-check --profile work
    """
    path, _ = _ref(ref, version=False)
    data = remote.request("GET", f"/v1/capabilities/{path}/versions")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{path}, versions: {len(data['items'])}", title_justify="left")
    for column in ("version", "status", "runtime", "published", "model"):
        table.add_column(column, no_wrap=column == "version")
    for v in data["items"]:
        published = (v.get("published_at") or "")[:19].replace("T", " ")
        table.add_row(
            v["version"], v["status"], v["runtime"]["type"], published, v.get("model_uri") or ""
        )
    console.print(table)


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.argument("old", metavar="FROM")
@click.argument("new", metavar="TO")
@remote_options
def compare(ref: str, old: str, new: str, remote: Remote, as_json: bool) -> None:
    """Compare two versions' schemas and examples; name what breaks callers of FROM.

    A minor or patch version that breaks callers of the version before it in its major
    is refused at publish; this shows why. Exits 1 when TO breaks callers of FROM.

    \b
    Example:
        yunnao compare sd.qd.env/noise-check 1.0.0 1.1.0
    """
    path, _ = _ref(ref, version=False)
    data = remote.request(
        "GET", f"/v1/capabilities/{path}/compare", params={"from": old, "to": new}
    )
    if as_json:
        print_json(data)
    else:
        if data["compatible"]:
            console.print(f"[green]compatible[/green]: a caller of {old} works with {new}")
        else:
            allowed = "" if data["checked_on_publish"] else f" (allowed: {new} is a new major)"
            console.print(f"[red]{len(data['breaks'])} breaking changes[/red]{allowed}:")
            for b in data["breaks"]:
                console.print(f"  {b['field']}: {b['message']}", highlight=False)
        table = Table(title=f"{path}: {old} → {new}", title_justify="left")
        for column in ("field", "change", old, new, "breaking"):
            table.add_column(column)
        for c in data["changes"]:
            table.add_row(
                c["field"], c["kind"], _shown(c["old"]), _shown(c["new"]),
                "yes" if c["breaking"] else "",
            )  # fmt: skip
        console.print(table if data["changes"] else "no differences in schemas or examples")
    if not data["compatible"]:
        sys.exit(1)


def _shown(value: object) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False)


def _transition(remote: Remote, ref: str, status: str, as_json: bool) -> None:
    path, version = _ref(ref, version=True)
    data = remote.request(
        "POST", f"/v1/capabilities/{path}/versions/{version}/lifecycle", json={"status": status}
    )
    if as_json:
        print_json(data)
    else:
        console.print(f"{data['id']} is now [bold]{data['status']}[/bold]", highlight=False)


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME@VERSION")
@remote_options
def deprecate(ref: str, remote: Remote, as_json: bool) -> None:
    """Deprecate a version: it stays callable and listed, marked for replacement.

    \b
    Example:
        yunnao deprecate sd.qd.env/noise-check@1.0.0
    """
    _transition(remote, ref, "deprecated", as_json)


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME@VERSION")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation")
@remote_options
def retire(ref: str, yes: bool, remote: Remote, as_json: bool) -> None:
    """Retire a version: it is no longer callable; a retired version does not come back.

    \b
    Example:
        yunnao retire sd.qd.env/noise-check@1.0.0 --yes
    """
    _ref(ref, version=True)
    if not yes:
        click.confirm(f"Retire {ref} at {remote.url}? Callers of it will be refused", abort=True)
    _transition(remote, ref, "retired", as_json)


EDITABLE = ("title", "summary", "description", "summary-en", "description-en", "kind", "domain",
            "classification", "owner", "contact", "license")  # fmt: skip


@click.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("--title", help="Display title")
@click.option("--summary", help="One-line summary")
@click.option("--description", help="Markdown description (see also --description-file)")
@click.option("--summary-en", help="The summary in English, for English pages")
@click.option("--description-en", help="The description in English (Markdown)")
@click.option(
    "--description-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the Markdown description from this file (- for stdin)",
)
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable; replaces all the tags)")
@click.option("--kind", type=click.Choice(["algorithm", "model"]))
@click.option("--domain", type=click.Choice(["governance", "livelihood", "economy", "other"]))
@click.option("--classification", type=click.Choice(["public", "internal", "restricted"]))
@click.option("--owner", help="Owning department or person")
@click.option("--contact", help="Whom to ask about it")
@click.option("--license", "license_", help="License of the capability")
@remote_options
def edit(
    ref: str,
    description_file: Any,
    tags: tuple[str, ...],
    license_: str | None,
    remote: Remote,
    as_json: bool,
    **fields: str | None,
) -> None:
    """Change a capability's metadata; what is not given stays as it is. The change is
    made only if nobody changed the capability since it was read (If-Match).

    \b
    Example:
        yunnao edit sd.qd.env/noise-check --title "噪声检测" --tag noise --tag env
    """
    path, _ = _ref(ref, version=False)
    patch: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if description_file is not None:
        if "description" in patch:
            raise click.UsageError("give --description or --description-file, not both")
        patch["description"] = description_file.read()
    if tags:
        patch["tags"] = list(tags)
    if license_ is not None:
        patch["license"] = license_
    if not patch:
        raise click.UsageError(
            "nothing to change: give at least one of --" + ", --".join(EDITABLE) + ", --tag"
        )
    target = f"/v1/capabilities/{path}"
    etag = send(remote.url, remote.token, "GET", target).headers.get("etag")
    try:
        resp = send(
            remote.url,
            remote.token,
            "PATCH",
            target,
            json=patch,
            headers={"If-Match": etag} if etag else {},
        )
    except click.ClickException as exc:
        if exc.message.startswith("412 "):
            raise click.ClickException(
                f"{path} changed while it was being edited; run the command again"
            ) from None
        raise
    data = resp.json()
    if as_json:
        print_json(data)
    else:
        console.print(f"updated {data['id']}: {', '.join(sorted(patch))}", highlight=False)


@click.group("publish-jobs")
def publish_jobs() -> None:
    """The publish jobs of uploaded packages: their state and their log."""


@publish_jobs.command("list")
@click.argument("namespace", required=False)
@remote_options
def jobs_list(namespace: str | None, remote: Remote, as_json: bool) -> None:
    """A namespace's latest publish jobs, newest first (NAMESPACE defaults to the
    profile's).

    \b
    Example:
        yunnao publish-jobs list sd.qd.env
    """
    namespace = namespace or remote.namespace
    if not namespace:
        raise click.UsageError("name the NAMESPACE (or save one: yunnao login --namespace NS)")
    data = remote.request("GET", f"/v1/namespaces/{namespace}/publish-jobs")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{namespace}, publish jobs: {len(data['jobs'])}", title_justify="left")
    for column in ("id", "status", "file", "created"):
        table.add_column(column, no_wrap=column == "id")
    for job in data["jobs"]:
        created = job["created_at"][:19].replace("T", " ")
        table.add_row(job["id"], job["status"], job["filename"], created)
    console.print(table)


@publish_jobs.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--follow", "-f", "follow_job", is_flag=True, help="Follow a running job to its end")
@remote_options
def jobs_show(job_id: str, follow_job: bool, remote: Remote, as_json: bool) -> None:
    """A publish job: its log, then what it published or the problem that stopped it.
    Exits 1 if the job failed.

    \b
    Example:
        yunnao publish-jobs show 3f2a… --follow
    """
    job = remote.request("GET", f"/v1/publish-jobs/{job_id}")
    if follow_job:
        job = follow(remote, job, quiet=as_json)
    elif not as_json:
        print_log(job["log"])
    sys.exit(report(job, as_json=as_json))
