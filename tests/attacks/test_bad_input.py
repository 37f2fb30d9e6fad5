"""Item 8: bad input is a 4xx problem document, never a 500.

One real ``yunnao serve`` process with the example plugins published (``scene-stats``
is a tensor capability, so also a V2 model) and a real OpenID Connect provider as its
identity provider. Each malformed body, and a provider token whose ``alg`` does not fit
its key, is sent for real; each answer is a 4xx problem+json naming what was wrong, with
no traceback, and nothing changed (the entry is not there, the node still answers).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.conftest import assert_problem
from tests.realservers.oidc import OidcProvider
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

NODE = "sd.qd.badinput"
URBAN = f"{NODE}.urban"  # the vision example's department here
INFER = f"/v2/models/{URBAN}.scene-stats/infer"
INVOKE = f"/v1/invoke/{URBAN}/scene-stats"
JSON = {"Content-Type": "application/json"}
DEEP = "[" * 100_000 + "]" * 100_000
LONG_INT = "7" * 5000  # more digits than Python converts to an int (4300)
FRAME = [[0.2, 0.4, 0.6]] * 3
FLAT = [v for row in FRAME for v in row]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, OidcProvider]]:
    root = tmp_path_factory.mktemp("bad-input")
    idp = OidcProvider(root / "oidc").start()
    site = Site(
        NODE,
        YunnaoProcess(
            root / NODE,
            "--node-id",
            NODE,
            "--publish-plugins",
            env={"YUNNAO_OIDC_ISSUER": idp.issuer, "YUNNAO_OIDC_AUDIENCE": "yunnao"},
        ),
    )
    try:
        site.proc.start(timeout=180)
        yield site, idp
    finally:
        site.proc.stop()
        idp.stop()


def _refused(resp: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx problem document (one of ``statuses``), without a traceback."""
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    body = assert_problem(resp, resp.status_code)
    assert "Traceback" not in resp.text and "internal-error" not in body["type"]
    return body


def _still_serves(site: Site) -> None:
    """The node still answers a good call the way it did before."""
    frame = {"name": "image", "datatype": "FP32", "shape": [3, 3], "data": FLAT}
    ok = httpx.post(site.url + INFER, json={"inputs": [frame]}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert {o["name"] for o in ok.json()["outputs"]} >= {"brightness", "contrast"}


def _post(site: Site, path: str, content: str, **headers: str) -> httpx.Response:
    return httpx.post(site.url + path, content=content, headers={**JSON, **headers}, timeout=60)


# ---------------------------------------------------------------- JSON the parser chokes on


def test_deeply_nested_json_is_a_400_everywhere(node: tuple[Site, OidcProvider]) -> None:
    site, _ = node
    admin = site.auth("admin")
    publish = _post(site, f"/v1/capabilities/{NODE}.deep/nested/versions", DEEP, **admin)
    assert "deep" in _refused(publish, 400)["detail"]
    wrapped = '{"version": "1.0.0", "title": "t", "examples": [{"input": ' + DEEP + "}]}"
    assert (
        "deep"
        in _refused(
            _post(site, f"/v1/capabilities/{NODE}.deep/nested/versions", wrapped, **admin), 400
        )["detail"]
    )
    assert "deep" in _refused(_post(site, INVOKE, '{"input": ' + DEEP + "}"), 400)["detail"]
    assert "deep" in _refused(_post(site, INFER, '{"inputs": ' + DEEP + "}"), 400)["detail"]
    # Nothing was published; the node still serves.
    resp = site.get(f"{NODE}.deep/nested", headers=admin)
    assert resp.status_code == 404, resp.text
    _still_serves(site)


def test_an_integer_longer_than_python_converts_is_a_400(
    node: tuple[Site, OidcProvider],
) -> None:
    site, _ = node
    admin = site.auth("admin")
    path = f"/v1/capabilities/{NODE}.digits/long/versions"
    body = '{"version": "1.0.0", "title": "t", "examples": [{"input": ' + LONG_INT + "}]}"
    assert "digits" in _refused(_post(site, path, body, **admin), 400)["detail"]
    assert "digits" in _refused(_post(site, INVOKE, '{"input": ' + LONG_INT + "}"), 400)["detail"]
    v2 = '{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [%s]}]}'
    assert "digits" in _refused(_post(site, INFER, v2 % LONG_INT), 400)["detail"]
    assert site.get(f"{NODE}.digits/long", headers=admin).status_code == 404
    _still_serves(site)


def test_the_try_it_form_takes_deep_json_as_invalid_input(node: tuple[Site, OidcProvider]) -> None:
    site, _ = node
    resp = httpx.post(
        f"{site.url}/c/{URBAN}/scene-stats/try",
        data={"image": DEEP},
        headers={"HX-Request": "true"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:500]  # a fragment showing the call's status
    assert 'data-status="422"' in resp.text and "input.image" in resp.text
    assert "Traceback" not in resp.text


# ---------------------------------------------------------------- malformed V2 bodies


def _tensor(**changes: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "FP32", "shape": [3, 3], "data": FLAT, **changes}


# (what, body, the field the problem must name)
MALFORMED_V2 = [
    # A shape too large for numpy, with no data: it "holds" no elements either.
    ("huge shape", {"inputs": [_tensor(shape=[2**33, 2**33], data=[])]}, "inputs[0].shape"),
    ("no-element huge shape", {"inputs": [_tensor(shape=[0, 2**70], data=[])]}, "inputs[0].shape"),
    ("booleans as sizes", {"inputs": [_tensor(shape=[True, True], data=[0.5])]}, "inputs[0].shape"),
    ("input name not a string", {"inputs": [_tensor(name=["image"])]}, "inputs[0].name"),
    ("parameters not an object", {"inputs": [_tensor()], "parameters": [1]}, "parameters"),
    (
        "tensor parameters not an object",
        {"inputs": [_tensor(parameters="binary")]},
        "inputs[0].parameters",
    ),
    ("outputs not objects", {"inputs": [_tensor()], "outputs": [1]}, "outputs[0]"),
    (
        "output parameters not an object",
        {"inputs": [_tensor()], "outputs": [{"name": "brightness", "parameters": [1]}]},
        "outputs[0].parameters",
    ),
]


@pytest.mark.parametrize(("what", "body", "field"), MALFORMED_V2, ids=[m[0] for m in MALFORMED_V2])
def test_a_malformed_v2_infer_body_is_a_4xx_naming_the_input(
    node: tuple[Site, OidcProvider], what: str, body: dict[str, Any], field: str
) -> None:
    site, _ = node
    resp = httpx.post(site.url + INFER, json=body, timeout=60)
    problem = _refused(resp, 400, 422)
    assert field in {e["field"] for e in problem.get("errors", [])}, problem
    assert problem["error"], problem  # V2 clients read `error`
    _still_serves(site)


def test_data_its_datatype_cannot_hold_is_a_4xx_naming_the_data(
    node: tuple[Site, OidcProvider],
) -> None:
    site, _ = node
    huge = 10**400  # an integer no float holds (FP32 image, FP64 threshold)
    image = _tensor(data=[huge] * 9)
    threshold = {"name": "edge_threshold", "datatype": "FP64", "shape": [1], "data": [huge]}
    for body, where in [
        ({"inputs": [image]}, "inputs[0]"),
        ({"inputs": [_tensor(), threshold]}, "inputs[1]"),
    ]:
        problem = _refused(httpx.post(site.url + INFER, json=body, timeout=60), 400, 422)
        assert f"{where}.data" in {e["field"] for e in problem.get("errors", [])}, problem
    for data in (["a"] * 9, [[0.1, 0.2], [0.3]], {"x": 1}):  # strings, ragged, an object
        resp = httpx.post(site.url + INFER, json={"inputs": [_tensor(data=data)]}, timeout=60)
        assert "inputs[0]" in _refused(resp, 400, 422)["detail"]
    _still_serves(site)


# ---------------------------------------------------------------- a token with a wrong alg


def _with_alg(token: str, alg: str) -> str:
    """``token`` with its header's ``alg`` changed (the key id kept)."""
    head, payload, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["alg"] = alg
    raw = json.dumps(header, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + f".{payload}.{signature}"


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_a_token_whose_alg_does_not_fit_its_key_is_a_401_and_audited(
    node: tuple[Site, OidcProvider], alg: str
) -> None:
    site, idp = node
    good = idp.token("eve", role="admin", node=NODE)
    assert httpx.get(
        f"{site.url}/v1/capabilities", headers={"Authorization": f"Bearer {good}"}, timeout=30
    ).status_code == 200  # fmt: skip
    forged = _with_alg(good, alg)  # the provider's keys are RSA
    resp = httpx.post(
        f"{site.url}/v1/capabilities/{NODE}.alg/forged/versions",
        json={"version": "1.0.0", "title": "t"},
        headers={"Authorization": f"Bearer {forged}"},
        timeout=30,
    )
    problem = _refused(resp, 401)
    assert alg in problem["detail"], problem
    request_id = resp.headers["x-request-id"]

    def audited() -> Any:
        page = httpx.get(
            f"{site.url}/v1/audit",
            params={"action": "authenticate", "limit": 200},
            headers=site.auth("auditor"),
            timeout=30,
        )
        assert page.status_code == 200, page.text
        return next((e for e in page.json()["items"] if e["request_id"] == request_id), None)

    event = until(audited, timeout=30, message="the refused token is in the audit log")
    assert event["status"] == 401 and event["outcome"] == "denied"
    assert site.get(f"{NODE}.alg/forged", headers=site.auth("admin")).status_code == 404
