"""The noise service answers under a real ``bentoml serve``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).parent / "bentoml")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bentoml serve service:NoiseService`` on a free loopback port."""
    root = tmp_path_factory.mktemp("noise")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BENTOML_HOME": str(root / "home"), "BENTOML_DO_NOT_TRACK": "True"}
    args = [BENTOML, "serve", "service:NoiseService", "--host", "127.0.0.1", "--port", str(port)]
    log = root / "bentoml.log"
    with open(log, "wb") as out:
        # Its own session: stopping the group stops BentoML's worker processes too.
        proc = subprocess.Popen(
            args, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def post(url: str, api: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/{api}", json=body, timeout=30)


def test_a_steady_level_is_its_own_average(url: str) -> None:
    level = post(url, "noise_level", {"readings": [62.0] * 10}).json()
    assert level == {
        "count": 10,
        "leq": 62.0,
        "l10": 62.0,
        "l50": 62.0,
        "l90": 62.0,
        "lmax": 62.0,
        "lmin": 62.0,
    }


def test_loud_moments_dominate_the_energy_average(url: str) -> None:
    level = post(url, "noise_level", {"readings": [50.0] * 9 + [80.0]}).json()
    assert level["leq"] == 70.0  # one reading at 80 carries most of the energy
    assert level["l50"] == 50.0 and level["lmax"] == 80.0 and level["l10"] > level["l90"]


def test_a_residential_night_over_its_limit_is_not_compliant(url: str) -> None:
    verdict = post(url, "classify_zone", {"zone": "1", "day_db": 54.0, "night_db": 48.5}).json()
    assert verdict["compliant"] is False
    assert verdict["day"] == {"limit": 55.0, "measured": 54.0, "over_by": 0.0}
    assert verdict["night"]["limit"] == 45.0 and verdict["night"]["over_by"] == 3.5
    road = post(url, "classify_zone", {"zone": "4a", "day_db": 68.0, "night_db": 55.0}).json()
    assert road["compliant"] is True


def test_bad_readings_are_refused_with_the_field(url: str) -> None:
    resp = post(url, "noise_level", {"readings": []})
    assert resp.status_code == 400 and "readings" in resp.text
    resp = post(url, "classify_zone", {"zone": "9", "day_db": 50, "night_db": 40})
    assert resp.status_code == 400 and "zone" in resp.text
