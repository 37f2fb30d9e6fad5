"""Text for pages: descriptions from Markdown, search highlights, and copyable code."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from yunnao.registry import search

# CommonMark with raw HTML off: authors' Markdown cannot inject markup or script, and
# markdown-it refuses javascript:, vbscript:, file: and data: (but images) link targets.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable("table")


def markdown(text: str) -> Markup:
    return Markup(_md.render(text or ""))  # html is off: the output is safe


def highlight(text: str, query: str) -> Markup:
    """``text`` escaped, with the query's words marked (``<mark>``), case-insensitively."""
    words = sorted({t for t in search.tokens(query) if t.strip()}, key=len, reverse=True)
    if not words or not text:
        return escape(text)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    out, last = [], 0
    for m in pattern.finditer(text):
        out.append(escape(text[last : m.start()]))
        out.append(Markup("<mark>{}</mark>").format(m.group(0)))
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def snippets(
    base_url: str, namespace: str, name: str, example: Any, tensors: dict[str, Any] | None
) -> dict[str, str]:
    """Ready-to-copy calls of a capability: curl, Python (httpx) and, for a tensor
    capability, tritonclient over the V2 protocol."""
    url = f"{base_url}/v1/invoke/{namespace}/{name}"
    body = json.dumps({"input": example if example is not None else {}}, ensure_ascii=False)
    out = {
        "curl": (
            f"curl -X POST {shlex.quote(url)} \\\n"
            '  -H "Content-Type: application/json" \\\n'
            '  -H "Authorization: Bearer $YUNNAO_TOKEN" \\\n'
            f"  -d {shlex.quote(body)}"
        ),
        "python": (
            "import os\n\nimport httpx\n\n"
            f"answer = httpx.post(\n    {url!r},\n"
            f"    json={{'input': {example!r}}},\n"
            "    headers={'Authorization': f\"Bearer {os.environ['YUNNAO_TOKEN']}\"},\n"
            "    timeout=60,\n)\nanswer.raise_for_status()\nprint(answer.json()['output'])"
        ),
    }
    if tensors:
        host = base_url.split("://", 1)[-1]
        lines = [
            "import os",
            "",
            "import numpy as np",
            "import tritonclient.http as triton",
            "",
            f"client = triton.InferenceServerClient({host!r})",
            "inputs = []",
        ]
        given = example if isinstance(example, dict) else {}
        for tname, (dtype, _shape) in tensors.items():
            value = given.get(tname)
            np_type = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32",
                       "BOOL": "bool", "BYTES": "object"}.get(dtype, "float32")  # fmt: skip
            data = f"np.array({value!r}, dtype=np.{np_type})" if value is not None else "..."
            lines += [
                f"tensor = {data}",
                f"inputs.append(triton.InferInput({tname!r}, tensor.shape, {dtype!r}))",
                "inputs[-1].set_data_from_numpy(tensor)",
            ]
        lines += [
            "auth = {'Authorization': f\"Bearer {os.environ['YUNNAO_TOKEN']}\"}",
            f"result = client.infer({f'{namespace}.{name}'!r}, inputs, headers=auth)",
            "print(result.get_response())",
        ]
        out["tritonclient"] = "\n".join(lines)
    return out
