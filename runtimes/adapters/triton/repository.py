"""Wrapper entries in Triton's model repository (written by the node process): the
``config.pbtxt``, the generated ``model.py`` that runs the capability with
:class:`~yunnao.runtimes.adapters.triton.stub.StubModel`, the downloaded pyfunc model,
and the marker saying what the entry was written for."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yunnao.plugins.errors import NotDeployable

from ..base import Target
from .server import stub_site_dirs
from .stub import INPUT_JSON, OUTPUT_JSON

VERSION = "1"  # the one version directory of a wrapper entry
CAPABILITY_DIR = "capability"  # the downloaded pyfunc model, inside the version directory
MARKER = "yunnao.json"  # what a wrapper entry was written for


_MODEL_PY = '''\
"""Written by Yunnao for {target_id}: the capability, run by Triton's Python backend."""

import os
import site
import sys

# The stub runs the system Python and ignores PYTHONPATH: an uploaded package's
# environment, then the node's site-packages go first, .pth files included (an editable
# install of yunnao is found through one).
_system_path = list(sys.path)
for _dir in {env_dirs!r} + {site_dirs!r}:
    site.addsitedir(_dir)
sys.path[:] = [p for p in sys.path if p not in _system_path] + _system_path

from yunnao.runtimes.adapters.triton.stub import StubModel  # noqa: E402


class TritonPythonModel(StubModel):
    model_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), {capability_dir!r})
    allow_uploaded = {allow_uploaded!r}
'''


def _int_at_least(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NotDeployable(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _gpu_ids(config: Mapping[str, Any], target: Target) -> list[int] | None:
    """The GPU ids of ``KIND_GPU`` instances ([] for every GPU), or None for ``KIND_CPU``."""
    kind = config.get("kind")
    if kind not in (None, "cpu", "gpu"):
        raise NotDeployable(f'{target.id}: triton binding `kind` is "cpu" or "gpu", not {kind!r}')
    gpus = config.get("gpus", 0)
    if isinstance(gpus, list):
        ids = [_int_at_least(g, f"{target.id}: a GPU id in `gpus`", minimum=0) for g in gpus]
    else:
        ids = list(range(_int_at_least(gpus, f"{target.id}: `gpus`", minimum=0)))
    if kind == "cpu" and ids:
        raise NotDeployable(f'{target.id}: binding asks for GPUs {ids} with kind "cpu"')
    if ids or kind == "gpu":
        return ids
    return None


def wrapper_config(target: Target) -> str:
    """The ``config.pbtxt`` of ``target``'s wrapper entry."""
    count = _int_at_least(target.config.get("instances", 1), f"{target.id}: `instances`", minimum=1)
    gpus = _gpu_ids(target.config, target)
    group = [f"    count: {count}", f"    kind: {'KIND_CPU' if gpus is None else 'KIND_GPU'}"]
    if gpus:
        group.append(f"    gpus: [ {', '.join(map(str, gpus))} ]")
    tensor = '  {{\n    name: "{}"\n    data_type: TYPE_UINT8\n    dims: [ -1 ]\n  }}'
    return "\n".join(
        [
            f'name: "{target.slug}"',
            'backend: "python"',
            "max_batch_size: 0",
            f"input [\n{tensor.format(INPUT_JSON)}\n]",
            f"output [\n{tensor.format(OUTPUT_JSON)}\n]",
            "instance_group [\n  {\n" + "\n".join(group) + "\n  }\n]",
            "",
        ]
    )


def _marker(target: Target) -> dict[str, Any]:
    return {
        "target": target.id,
        "model_uri": target.model_uri,
        "content_hash": target.content_hash,
        "binding": json.loads(json.dumps(dict(target.config), sort_keys=True, default=str)),
    }


def entry_is_current(repository: Path, target: Target) -> bool:
    """Whether ``repository`` holds ``target``'s wrapper entry as it would be written now."""
    try:
        return json.loads((repository / target.slug / MARKER).read_text()) == _marker(target)
    except (OSError, ValueError):
        return False


def write_wrapper_entry(
    repository: Path,
    target: Target,
    model_files: Path,
    *,
    env_dirs: Sequence[str] = (),
    allow_uploaded: bool = False,
) -> Path:
    """Write ``target``'s wrapper entry into ``repository`` from its downloaded pyfunc model
    files: ``config.pbtxt`` and ``1/model.py`` with the files in ``1/capability``. The
    entry appears whole (built aside, then renamed into place); its directory.
    ``env_dirs``: an uploaded package's environment (its site-packages), put on the
    stub's path ahead of the node's; ``allow_uploaded``: the stub may load such a model
    (its binding is ``trusted``)."""
    config = wrapper_config(target)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.slug}.", dir=repository))
    final = repository / target.slug
    try:
        version = staging / VERSION
        shutil.copytree(model_files, version / CAPABILITY_DIR)
        (version / "model.py").write_text(
            _MODEL_PY.format(
                target_id=target.id,
                env_dirs=list(env_dirs),
                site_dirs=stub_site_dirs(),
                capability_dir=CAPABILITY_DIR,
                allow_uploaded=bool(allow_uploaded),
            ),
            encoding="utf-8",
        )
        (staging / "config.pbtxt").write_text(config, encoding="utf-8")
        (staging / MARKER).write_text(json.dumps(_marker(target)), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
