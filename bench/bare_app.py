"""Baseline (a) of bench/invoke.py: the least a Starlette JSON endpoint can do for the
same request — parse the JSON body, compute the greeting, answer JSON. Served by the
same uvicorn as ``yunnao serve``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def greet(request: Request) -> JSONResponse:
    data = await request.json()
    name = data["input"]["name"]
    return JSONResponse({"output": f"你好, {name}."})


app = Starlette(routes=[Route("/greet", greet, methods=["POST"])])
