"""An author uploads a built Bento (``bentoml build`` + ``bentoml export`` of
examples/bento) to a real ``yunnao serve`` node with nothing but its URL and a token: the
job publishes each API, and calls are answered by the Bento served inside the sandbox.
A Bento whose service does not import is refused and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.end_to_end.test_upload import author_upload, token_for
from tests.realservers.yunnao_node import YunnaoProcess
from tests.registry.test_bento_upload import make_bento
from tests.registry.test_packages import index  # noqa: F401
from yunnao.registry.packages import sandbox

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap is not installed"),
]

NS = "sd.qd.env"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bento"
BENTOML = str(Path(sys.executable).parent / "bentoml")


def export_example(dest: Path) -> Path:
    """``bentoml build --version 1.0.0`` and ``bentoml export`` of the example service,
    in a BentoML home of its own."""
    src = dest / "src"
    src.mkdir()
    shutil.copy(EXAMPLE / "service.py", src / "service.py")
    (src / "bentofile.yaml").write_text(
        'service: "service:NoiseService"\ninclude: ["service.py"]\n'
        'labels:\n  classification: public\npython:\n  packages: ["numpy"]\n'
    )
    env = {**os.environ, "BENTOML_HOME": str(dest / "home"), "BENTOML_DO_NOT_TRACK": "True"}
    run = {"cwd": src, "env": env, "capture_output": True, "text": True, "timeout": 300}
    built = subprocess.run([BENTOML, "build", "--version", "1.0.0", "."], **run)
    assert built.returncode == 0, built.stdout + built.stderr
    out = dest / "noise_service-1.0.0.bento"
    exported = subprocess.run([BENTOML, "export", "noise_service:1.0.0", str(out)], **run)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, index: str):  # noqa: F811
    cwd = tmp_path_factory.mktemp("bento-node")
    proc = YunnaoProcess(
        cwd, "--node-id", "sd.qd", env={"YUNNAO_PACKAGE_INDEX": index, "YUNNAO_PLUGINS": "false"}
    ).start()
    yield proc, cwd
    proc.stop()


def test_an_uploaded_bento_is_published_and_served_in_the_sandbox(node, tmp_path: Path) -> None:
    proc, cwd = node
    token = token_for(cwd, NS)
    # The author's command line, from a folder of its own, with only the URL and a token.
    bento = export_example(tmp_path)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "yunnao"), "publish", str(bento), "--url", proc.url,
         "--token", token, "--namespace", NS, "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("YUNNAO_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded", job
    assert sorted(r["capability"] for r in job["result"]) == [
        f"{NS}/classify-zone@1.0.0",
        f"{NS}/noise-level@1.0.0",
    ]
    headers = {"Authorization": f"Bearer {token}"}
    version = httpx.get(
        f"{proc.url}/v1/capabilities/{NS}/noise-level/versions/1.0.0", headers=headers
    ).json()
    assert version["runtime"]["type"] == "bentoml"
    assert set(version["runtime"]["config"]) == {"bento", "api"}
    answer = httpx.post(
        f"{proc.url}/v1/invoke/{NS}/noise-level",
        json={"input": {"readings": [58.5, 61.0, 72.4, 60.2]}},
        headers=headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"]["leq"] == 67.1
    verdict = httpx.post(
        f"{proc.url}/v1/invoke/{NS}/classify-zone",
        json={"input": {"zone": "1", "day_db": 54, "night_db": 48.5}},
        headers=headers,
        timeout=120,
    )
    assert verdict.status_code == 200 and verdict.json()["output"]["compliant"] is False
    # The service runs in the sandbox as a uid of its own, not as the node's user.
    ps = subprocess.run(["ps", "-ww", "-eo", "uid=,args="], capture_output=True, text=True).stdout
    workers = [
        line.split(None, 1)
        for line in ps.splitlines()
        if "_bentoml_impl.worker.service" in line and "python" in line.split()[1]
    ]
    assert workers and all(int(uid) >= sandbox.UID_BASE for uid, _ in workers), workers


def test_a_bento_whose_service_fails_to_import_leaves_nothing(node, tmp_path: Path) -> None:
    proc, cwd = node
    namespace = "sd.qd.brokenbento"
    token = token_for(cwd, namespace)
    broken = make_bento(
        tmp_path,
        filename="broken_service-2.0.0.bento",
        bento_yaml=(
            "service: service:Broken\nname: broken_service\nversion: 2.0.0\n"
            "services: []\nmodels: []\nspec: 2\n"
        ),
        requirements="numpy\n",
        service="raise ImportError('the model weights are missing')\n",
    )
    packages = cwd / "var" / "packages"
    code_before = sorted(p.name for p in (packages / "code").glob("*"))
    envs_before = sorted(p.name for p in (packages / "envs").glob("*"))
    job = author_upload(proc, token, broken, namespace)
    assert job["status"] == "failed", job
    assert job["error"]["status"] == 422, job["error"]
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(
        f"{proc.url}/v1/capabilities", params={"namespace": namespace}, headers=headers
    )
    assert listed.json()["total"] == 0
    assert sorted(p.name for p in (packages / "code").glob("*")) == code_before
    assert sorted(p.name for p in (packages / "envs").glob("*")) == envs_before
    assert not list((packages / "uploads").glob("*"))
