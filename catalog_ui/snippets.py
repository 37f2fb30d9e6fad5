"""Ready-to-copy calls of a capability that work as copied: curl, Python (httpx) and,
where the V2 protocol can carry both its inputs and its outputs, tritonclient.

An entry anyone may call (the policy lets an anonymous caller invoke it) gets snippets
without a token. Any other entry's snippets read the token from ``YUNNAO_TOKEN``, say in
a comment how to get one, and the Python ones stop with that hint (not a ``KeyError``)
when the variable is unset; curl refuses to run with the same hint.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from yunnao.registry import access
from yunnao.registry.access import Action, Identity
from yunnao.registry.schemas import Capability

from .forms import resolve

TOKEN_VAR = "YUNNAO_TOKEN"
# Where a token comes from: the node's operator mints one, or an admin creates an API key.
TOKEN_HINT = (
    "a token of this node: ask its operator for an API key (yunnao key create) "
    "or a token (yunnao token create --role consumer)"
)
_NP_TYPES = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32",
             "BOOL": "bool", "BYTES": "object"}  # fmt: skip


def anyone_may_call(cap: Capability, node_id: str) -> bool:
    """Whether an anonymous caller may invoke ``cap`` (asked of the policy module, the
    rule the gateway applies)."""
    entry = access.Entry(
        cap.namespace,
        cap.classification,
        cap.status,
        access.access_rules(cap.access),
        local=cap.origin_node == node_id,
    )
    return access.decide(Identity(), Action.INVOKE, entry).allowed


def sample_input(schema: dict[str, Any]) -> dict[str, Any]:
    """An input to show where a version has no example: its required fields, each with
    its default, first choice or a placeholder of its type within its limits."""
    root = resolve(schema, schema)
    out: dict[str, Any] = {}
    for name in root.get("required") or []:
        prop = resolve((root.get("properties") or {}).get(name) or {}, schema)
        out[name] = _placeholder(prop)
    return out


def _placeholder(prop: dict[str, Any]) -> Any:
    if "default" in prop:
        return prop["default"]
    if prop.get("enum"):
        return prop["enum"][0]
    kind = prop.get("type")
    if kind in ("number", "integer"):
        low = prop.get("minimum", prop.get("exclusiveMinimum", 0))
        value = max(low, 0) if prop.get("maximum", 1) >= 0 else prop["maximum"]
        if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
            value = prop["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "..."


def _python_token() -> list[str]:
    return [
        f"# {TOKEN_VAR}: {TOKEN_HINT}",
        f"token = os.environ.get({TOKEN_VAR!r})",
        "if not token:",
        f"    sys.exit('Set {TOKEN_VAR} to {TOKEN_HINT}')",
        "headers = {'Authorization': f'Bearer {token}'}",
    ]


def snippets(
    base_url: str,
    namespace: str,
    name: str,
    example: Any,
    tensors: dict[str, Any] | None,
    *,
    anonymous: bool,
    files: dict[str, dict[str, Any]] | None = None,
    stream: bool = False,
) -> dict[str, str]:
    """The snippets for ``namespace/name``: ``example`` is an input to show, ``tensors``
    the V2 inputs (None where V2 cannot call it: no tritonclient snippet), ``anonymous``
    whether the entry may be called without a token, ``files`` its image and file
    fields (then the calls upload files from disk, as multipart/form-data)."""
    url = f"{base_url}/v1/invoke/{namespace}/{name}"
    if stream:
        return _streamed(url, example if isinstance(example, dict) else {}, files or {},
                         anonymous)  # fmt: skip
    if files:
        out = _uploads(url, example if isinstance(example, dict) else {}, files, anonymous)
        if tensors:
            out["tritonclient"] = _triton(base_url, namespace, name, example, tensors, anonymous,
                                          files=files)  # fmt: skip
        return out
    body = json.dumps({"input": example if example is not None else {}}, ensure_ascii=False)
    curl = [f"curl -X POST {shlex.quote(url)} \\", '  -H "Content-Type: application/json" \\']
    if anonymous:
        python = ["import httpx", ""]
        call_headers = ""
    else:
        # Unset, the shell stops before curl runs, with the hint (no 401 to puzzle over).
        curl = [
            f"# {TOKEN_VAR}: {TOKEN_HINT}",
            *curl,
            f'  -H "Authorization: Bearer ${{{TOKEN_VAR}:?set {TOKEN_VAR} to {TOKEN_HINT}}}" \\',
        ]
        python = ["import os", "import sys", "", "import httpx", "", *_python_token(), ""]
        call_headers = "    headers=headers,\n"
    curl.append(f"  -d {shlex.quote(body)}")
    out = {
        "curl": "\n".join(curl),
        "python": "\n".join(python)
        + (
            f"\nanswer = httpx.post(\n    {url!r},\n"
            f"    json={{'input': {example!r}}},\n"
            f"{call_headers}"
            "    timeout=60,\n)\nanswer.raise_for_status()\nprint(answer.json()['output'])"
        ),
    }
    if tensors:
        out["tritonclient"] = _triton(base_url, namespace, name, example, tensors, anonymous)
    return out


def file_name(field: str, described: dict[str, Any]) -> str:
    """A file name to show for an upload field: ``frame.jpg``, ``report.bin``."""
    formats = described.get("formats") or []
    ext = {"jpeg": "jpg"}.get(formats[0], formats[0]) if formats else "bin"
    return f"{field}.{ext}"


def _uploads(
    url: str, example: dict[str, Any], files: dict[str, dict[str, Any]], anonymous: bool
) -> dict[str, str]:
    """curl and Python uploading the files from disk, the other fields as form values."""
    values = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
              for k, v in example.items() if k not in files}  # fmt: skip
    curl = [f"curl -X POST {shlex.quote(url)} \\"]
    python = ["import httpx", ""]
    call_headers = ""
    if not anonymous:
        curl = [
            f"# {TOKEN_VAR}: {TOKEN_HINT}",
            *curl,
            f'  -H "Authorization: Bearer ${{{TOKEN_VAR}:?set {TOKEN_VAR} to {TOKEN_HINT}}}" \\',
        ]
        python = ["import os", "import sys", "", "import httpx", "", *_python_token(), ""]
        call_headers = "    headers=headers,\n"
    parts = [f"-F {shlex.quote(f'{n}=@{file_name(n, d)}')}" for n, d in files.items()]
    parts += [f"-F {shlex.quote(f'{k}={v}')}" for k, v in values.items()]
    curl += [f"  {p} \\" for p in parts[:-1]] + [f"  {parts[-1]}"]
    opened = ", ".join(f"{n!r}: open({file_name(n, d)!r}, 'rb')" for n, d in files.items())
    data = f"    data={values!r},\n" if values else ""
    python.append(
        f"answer = httpx.post(\n    {url!r},\n    files={{{opened}}},\n{data}{call_headers}"
        "    timeout=60,\n)\nanswer.raise_for_status()\nprint(answer.json()['output'])"
    )
    return {"curl": "\n".join(curl), "python": "\n".join(python)}


def _streamed(
    url: str, example: dict[str, Any], files: dict[str, dict[str, Any]], anonymous: bool
) -> dict[str, str]:
    """curl and Python reading a streaming capability's items as they come."""
    out = (_uploads(url, example, files, anonymous) if files else
           snippets(url.rsplit("/v1/invoke/", 1)[0], *url.rsplit("/v1/invoke/", 1)[1].split("/"),
                    example, None, anonymous=anonymous))  # fmt: skip
    curl = out["curl"].splitlines()
    at = next(i for i, line in enumerate(curl) if line.startswith("curl "))
    curl.insert(at + 1, "  -N -H 'Accept: text/event-stream' \\")
    python = (
        out["python"]
        .replace("answer = httpx.post(\n", "with httpx.stream(\n    'POST',\n")
        .replace(
            "    timeout=60,\n)\nanswer.raise_for_status()\nprint(answer.json()['output'])",
            "    headers={**headers, 'Accept': 'text/event-stream'},\n    timeout=300,\n"
            ") as answer:\n    for line in answer.iter_lines():  # event: item / data: {...}\n"
            "        print(line)",
        )
    )
    if anonymous:
        python = python.replace("**headers, ", "")
    else:
        python = python.replace("    headers=headers,\n    headers=", "    headers=")
    return {"curl": "\n".join(curl), "python": python}


def _triton(
    base_url: str,
    namespace: str,
    name: str,
    example: Any,
    tensors: dict[str, Any],
    anonymous: bool,
    files: dict[str, dict[str, Any]] | None = None,
) -> str:
    host = base_url.split("://", 1)[-1]
    lines = [] if anonymous else ["import os", "import sys", ""]
    lines += [
        "import numpy as np",
        "import tritonclient.http as triton",
        "",
    ]
    if not anonymous:
        lines += [*_python_token(), ""]
    lines += [f"client = triton.InferenceServerClient({host!r})", "inputs = []"]
    given = example if isinstance(example, dict) else {}
    for tname, (dtype, _shape) in tensors.items():
        if files and tname in files:  # the file's own bytes, as binary data
            lines += [
                f"tensor = np.array([open({file_name(tname, files[tname])!r}, 'rb').read()], "
                "dtype=object)",
                f"inputs.append(triton.InferInput({tname!r}, [1], 'BYTES'))",
                "inputs[-1].set_data_from_numpy(tensor, binary_data=True)",
            ]
            continue
        value = given.get(tname)
        np_type = _NP_TYPES.get(dtype, "float32")
        data = f"np.array({value!r}, dtype=np.{np_type})" if value is not None else "..."
        if value is not None and not isinstance(value, list):
            data = f"np.array([{value!r}], dtype=np.{np_type})"  # a scalar: one element
        lines += [
            f"tensor = {data}",
            f"inputs.append(triton.InferInput({tname!r}, tensor.shape, {dtype!r}))",
            "inputs[-1].set_data_from_numpy(tensor)",
        ]
    model = f"{namespace}.{name}"
    lines.append(
        f"result = client.infer({model!r}, inputs)"
        if anonymous
        else f"result = client.infer({model!r}, inputs, headers=headers)"
    )
    lines.append("print(result.get_response())")
    return "\n".join(lines)
