"""A webhook receiver as an application team would run it: its own process, verifying
each delivery's Standard Webhooks signature with the subscription's secret, and writing
what it accepted (and what it refused) as JSON lines.

    python -m tests.realservers.webhook_receiver PORT SECRET OUT.jsonl

A delivery with a bad or missing signature, or an old timestamp, is answered 400 and
written with ``"verified": false``; a good one 204 and ``"verified": true``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from . import free_port


def serve(port: int, secret: str, out: Path) -> None:
    verifier = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = verifier.verify(body, headers)
                verified, status = True, 204
            except WebhookVerificationError as exc:
                payload, verified, status = {"error": str(exc)}, False, 400
            line = {"id": headers.get("webhook-id"), "verified": verified, **payload}
            with out.open("a") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.send_response(status)
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)  # readiness
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Receiver:
    """The receiver as a child process of the test."""

    def __init__(self, secret: str, out: Path, port: int | None = None) -> None:
        self.secret, self.out = secret, out
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/yunnao"

    def start(self) -> Receiver:
        args = [sys.executable, "-m", "tests.realservers.webhook_receiver", str(self.port),
                self.secret, str(self.out)]  # fmt: skip
        self.proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the webhook receiver did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def received(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
