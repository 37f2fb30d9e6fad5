"""``yunnao pipeline``: capabilities made of other capabilities, declared in a YAML file.

    namespace: sd.qd.urban
    name: junction-report
    version: 1.0.0
    title: 路口画面综合报告
    summary: People (by the district's detector), crowd level and view quality of a frame
    classification: public
    steps:
      - id: people
        call: sd.qd.shinan.urban/people-detect
        input: {frame: $input.frame}
        timeout: 20
      - id: crowd
        call: sd.qd.urban/crowd-level
        input: {frame: $input.frame}
    output: {people: $people.count, level: $crowd.level}

The node checks the steps when the version is published (each exists, each gets what it
requires, the types chain) and derives the pipeline's input and output schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from .common import Remote, console, print_json, remote_options

META = ("title", "summary", "description", "summary_en", "description_en", "kind", "domain",
        "tags", "classification", "owner", "contact", "license", "examples", "status")  # fmt: skip


def _declaration(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} is not a YAML mapping", param_hint="FILE")
    for key in ("name", "version", "title", "steps", "output"):
        if key not in data:
            raise click.BadParameter(f"{path} has no {key!r}", param_hint="FILE")
    return data


@click.group("pipeline")
def pipeline() -> None:
    """Pipelines: a capability made of other capabilities (steps), run by the gateway."""


@pipeline.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--namespace", help="Publish into this namespace (default: the file's, or the profile's)"
)
@remote_options
def publish(file: Path, namespace: str | None, remote: Remote, as_json: bool) -> None:
    """Publish the pipeline declared in FILE (YAML) as a new version.

    \b
    Example:
        yunnao pipeline publish junction-report.yaml
    """
    data = _declaration(file)
    ns = namespace or data.get("namespace") or remote.namespace
    if not ns:
        raise click.UsageError(
            "name the namespace: --namespace, the file's `namespace`, or a profile's"
        )
    body: dict[str, Any] = {k: data[k] for k in META if k in data}
    body["version"] = str(data["version"])
    body["runtime"] = {
        "type": "pipeline",
        "config": {"steps": data["steps"], "output": data["output"]},
    }
    made = remote.request("POST", f"/v1/capabilities/{ns}/{data['name']}/versions", json=body)
    if as_json:
        print_json(made)
        return
    props = (made.get("input_schema") or {}).get("properties") or {}
    console.print(f"published {ns}/{data['name']}@{made['version']}: {len(data['steps'])} steps, "
                  f"input {', '.join(props) or '(none)'}", highlight=False)  # fmt: skip


@pipeline.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Read FILE and say whether it is a pipeline declaration (the node checks the steps
    themselves when it is published)."""
    data = _declaration(file)
    console.print(f"{data['name']}@{data['version']}: {len(data['steps'])} steps, "
                  f"output {', '.join(data['output'])}", highlight=False)  # fmt: skip
