"""`yunnao demo`: one command starts a city and two districts as real processes, links
them, and stops them all on Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.realservers import free_port
from tests.realservers.yunnao_node import YUNNAO

pytestmark = pytest.mark.slow

CITY, DISTRICTS = "sd.qd", ("sd.qd.shinan", "sd.qd.laoshan")


def three_free_ports() -> int:
    """A port free now whose next two are free too (the demo takes all three)."""
    for _ in range(50):
        base = free_port()
        if base + 2 > 65535:
            continue
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no three consecutive free ports")


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve_processes(under: Path) -> dict[int, str]:
    """Command lines, by pid, of the running `yunnao serve` processes whose data dir is
    under ``under``, whoever their parent is now."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        text = " ".join(a.decode(errors="replace") for a in args)
        if b"serve" in args[:6] and str(under) in text:
            found[int(cmdline.parent.name)] = text
    return found


def test_demo_links_a_city_and_two_districts_and_stops_them_on_ctrl_c(tmp_path: Path) -> None:
    port = three_free_ports()
    city, districts = (
        f"http://127.0.0.1:{port}",
        {d: f"http://127.0.0.1:{port + i}" for i, d in enumerate(DISTRICTS, start=1)},
    )
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        [YUNNAO, "demo", "--dir", str(demo_dir), "--port", str(port), "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C works as in a terminal even when the suite runs where SIGINT is ignored
        # (a background job of a script): an ignored signal stays ignored across exec.
        preexec_fn=_interruptible,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while not any("demo ready" in line for line in output):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            assert line is not None, "no 'demo ready' line:\n" + "".join(output)
            output.append(line)
        printed = "".join(output)
        assert f"demo ready: city {city}/" in printed
        for url in (city, *districts.values()):
            assert f"{url}/openapi.json" in printed
        assert f"curl -s -X POST {city}/v1/invoke/" in printed
        assert f"{city}/signin" in printed and "air-anomaly" in printed

        # The city lists what each district published, as theirs.
        for district, url in districts.items():
            own = httpx.get(f"{url}/v1/capabilities", params={"node": district}).json()
            at_city = httpx.get(f"{city}/v1/capabilities", params={"node": district}).json()
            assert own["total"] >= 2
            assert {i["id"] for i in at_city["items"]} == {i["id"] for i in own["items"]}
            assert {i["origin_node"] for i in at_city["items"]} == {district}

        # The districts named themselves and their departments; the city shows the names.
        page = httpx.get(f"{city}/", params={"node": DISTRICTS[0]}).text
        assert "市南区" in page and "市南区交通运输局" in page, page[:2000]
        # Signed in, the city's staff land on the overview, which names both districts.
        with httpx.Client(base_url=city, timeout=10, follow_redirects=True) as staff:
            landed = staff.post("/signin", data={"subject": "王芳", "role": "operator"})
            assert landed.url.path == "/overview", landed.url
            assert "市南区" in landed.text and "崂山区" in landed.text

        # A public district capability called at the city answers as at the district.
        shinan = districts[DISTRICTS[0]]
        ref = f"{DISTRICTS[0]}.traffic/flow-forecast"
        detail = httpx.get(f"{city}/v1/capabilities/{ref}").json()
        assert detail["classification"] == "public"
        version = httpx.get(
            f"{city}/v1/capabilities/{ref}/versions/{detail['latest_version']}"
        ).json()
        body = {"input": version["examples"][0]["input"]}
        direct = httpx.post(f"{shinan}/v1/invoke/{ref}", json=body, timeout=60)
        forwarded = httpx.post(f"{city}/v1/invoke/{ref}", json=body, timeout=60)
        assert direct.status_code == 200, direct.text
        assert forwarded.status_code == 200, forwarded.text
        assert forwarded.json()["output"] == direct.json()["output"]
        # And from the city's web catalog: its page, and "try it" (the form htmx posts).
        page = httpx.get(f"{city}/c/{ref}")
        assert page.status_code == 200 and 'id="try-form"' in page.text
        form = {k: json.dumps(v) for k, v in body["input"].items()}
        tried = httpx.post(f"{city}/c/{ref}/try", data=form, headers={"HX-Request": "true"})
        assert tried.status_code == 200 and 'data-status="200"' in tried.text, tried.text

        # Each node has its own data dir and log under --dir.
        for node in (CITY, *DISTRICTS):
            assert (demo_dir / node / "node_key.pem").exists()
            assert (demo_dir / node / "serve.log").stat().st_size > 0
        assert len(serve_processes(demo_dir)) == 3

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(output)
    finally:
        if proc.poll() is None:  # a failed assertion: stop the demo as a user would
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        left = serve_processes(demo_dir)
        for pid in left:  # never leave nodes running (and busy) for the tests after
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == {}
