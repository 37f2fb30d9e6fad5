"""A small OpenID Connect provider, run as its own process on loopback, for the
single-sign-on tests: discovery, a JWKS endpoint with rotating RSA keys, a token
endpoint that signs ID-style access tokens (client credentials), and the authorization
code flow with PKCE (a login form at ``/authorize`` where the test names the user and
the claims; only S256 challenges are taken, and each code is redeemed once).

It speaks the standard endpoints a node uses (``/.well-known/openid-configuration``,
``jwks_uri``, ``token_endpoint``); for tests it also takes the claims to put in a
token as form fields, and ``POST /rotate`` retires the signing key for a new one.

    python -m tests.realservers.oidc --port 8900
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from . import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the provider (child process)


def _app(port: int) -> Any:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.routing import Route

    issuer = f"http://127.0.0.1:{port}"
    keys: list[tuple[str, Any]] = []  # (kid, private key), newest last

    def new_key() -> None:
        keys.append((uuid.uuid4().hex[:12], rsa.generate_private_key(65537, 2048)))
        del keys[:-2]  # the JWKS keeps the previous key for tokens still in flight

    new_key()

    def jwk(kid: str, key: Any) -> dict[str, Any]:
        numbers = key.public_key().public_numbers()

        def b64(n: int) -> str:
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(numbers.n), "e": b64(numbers.e)}  # fmt: skip

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": issuer,
                "jwks_uri": f"{issuer}/jwks",
                "token_endpoint": f"{issuer}/token",
                "authorization_endpoint": f"{issuer}/authorize",
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk(kid, key) for kid, key in keys]})

    codes: dict[str, dict[str, Any]] = {}  # code -> the sign-in it stands for

    def sign(claims: dict[str, Any]) -> str:
        kid, key = keys[-1]
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    async def authorize(request: Request) -> Any:
        if request.method == "GET":
            q = request.query_params
            if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            hidden = "".join(
                f'<input type="hidden" name="{k}" value="{q[k]}">'
                for k in ("client_id", "redirect_uri", "state", "code_challenge")
            )
            return HTMLResponse(
                f'<form method="post">{hidden}'
                '<label>user <input name="username"></label>'
                '<label>role <input name="role"></label>'
                '<label>node <input name="node"></label>'
                '<label>department <input name="department"></label>'
                '<button type="submit">log in</button></form>'
            )
        form = dict(await request.form())
        code = uuid.uuid4().hex
        codes[code] = form
        target = f"{form['redirect_uri']}?code={code}&state={form['state']}"
        return RedirectResponse(target, status_code=302)

    def redeem(form: dict[str, Any]) -> JSONResponse:
        flow = codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", "")).encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if (
            flow is None
            or flow["redirect_uri"] != form.get("redirect_uri")
            or flow["client_id"] != form.get("client_id")
            or digest.decode() != flow["code_challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": issuer, "sub": flow["username"], "aud": "yunnao", "iat": now,
                  "exp": now + 3600, "jti": uuid.uuid4().hex}  # fmt: skip
        for name in ("role", "node", "department"):
            if flow.get(name):
                claims[name] = flow[name]
        id_token = sign({**claims, "aud": flow["client_id"]})
        return JSONResponse(
            {
                "access_token": sign(claims),
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )

    async def token(request: Request) -> JSONResponse:
        form = dict(await request.form())
        grant = form.pop("grant_type", None)
        if grant == "authorization_code":
            return redeem(form)
        if grant != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        now = int(time.time())
        lifetime = int(form.pop("expires_in", 300))
        claims: dict[str, Any] = {
            "iss": form.pop("iss", issuer),
            "sub": form.pop("client_id", "client"),
            "aud": form.pop("audience", "yunnao"),
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        for name, value in form.items():  # further claims, e.g. roles, node, department
            claims[name] = json.loads(value) if value[:1] in "[{" else value
        return JSONResponse(
            {"access_token": sign(claims), "token_type": "Bearer", "expires_in": lifetime}
        )

    async def rotate(request: Request) -> JSONResponse:
        new_key()
        return JSONResponse({"kid": keys[-1][0]})

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/token", token, methods=["POST"]),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/rotate", rotate, methods=["POST"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="a test OpenID Connect provider")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(_app(args.port), host="127.0.0.1", port=args.port, log_level="warning")


# ---------------------------------------------------------------- the launcher (tests)


class OidcProvider(ServerProcess):
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / f"oidc-{self.port}.log"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> OidcProvider:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.realservers.oidc", "--port", str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.issuer}/jwks", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"OIDC provider did not start:\n{self.output()}")

    def token(self, subject: str = "wang.li", **claims: Any) -> str:
        """A token from the token endpoint; ``claims`` go in it (lists and dicts as JSON)."""
        form = {"grant_type": "client_credentials", "client_id": subject}
        for name, value in claims.items():
            form[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
        resp = httpx.post(f"{self.issuer}/token", data=form, timeout=10)
        resp.raise_for_status()
        return resp.json()["access_token"]

    def rotate(self) -> None:
        httpx.post(f"{self.issuer}/rotate", timeout=10).raise_for_status()


if __name__ == "__main__":
    main()
