"""The runtimes' small HTTP/1.1 client (runtimes/adapters/http1.py): against a real
``bentoml serve`` (kept-alive calls), and against small asyncio servers on real sockets
that do what a server may do between calls: close an idle connection, answer chunked,
never answer. (Triton's calls go through it in tests/runtimes/test_runtime_triton.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.realservers import free_port
from tests.realservers.bentoml import BentoMLServer
from yunnao.runtimes.adapters.http1 import Http1Client, HttpConnectionError

SVC_DIR = Path(__file__).parents[1] / "data" / "bento_svc"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def _with_server(handler: Handler, scenario: Callable[[Http1Client], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Http1Client("127.0.0.1", port)
        try:
            await scenario(client)
        finally:
            await client.close()
            server.close()

    asyncio.run(main())


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoMLServer]:
    srv = BentoMLServer("service:Greeter", SVC_DIR, tmp_path_factory.mktemp("bentoml"))
    srv.start(timeout=60)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_calls_to_a_real_bentoml_service_reuse_one_connection(bento: BentoMLServer) -> None:
    async def main() -> None:
        client = Http1Client.for_url(bento.url)
        try:
            for name in ("李雷", "Han Meimei"):
                answer = await client.post(
                    "/greet",
                    json.dumps({"name": name}).encode(),
                    {"Content-Type": "application/json"},
                )
                assert answer.status == 200
                assert name in answer.body.decode()
                assert answer.headers.get("Content-Type", "").startswith(
                    ("application/json", "text/")
                )
            assert len(client._idle) == 1  # both calls on the same kept-alive connection
            missing = await client.post("/no-such-api", b"{}", {"Content-Type": "application/json"})
            assert missing.status == 404
        finally:
            await client.close()

    asyncio.run(main())


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # keep-alive promised, then closed (an idle timeout)

    async def scenario(client: Http1Client) -> None:
        for text in (b"one", b"two", b"three"):
            answer = await client.post("/echo", text)
            assert (answer.status, answer.body) == (200, text)
            await asyncio.sleep(0.05)  # the close reaches the client's side

    _with_server(once, scenario)
    assert len(connections) == 3


def test_chunked_answers_and_interim_answers_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Seen: a\r\nX-Seen: b\r\n\r\n"
                b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
            )
            await writer.drain()

    async def scenario(client: Http1Client) -> None:
        for _ in range(2):
            answer = await client.request("GET", "/")
            assert answer.body == b"hello, world"
            assert answer.headers["x-seen"] == "a, b"
        assert len(client._idle) == 1

    _with_server(chunked, scenario)


def test_a_cancelled_call_never_leaves_its_connection_for_the_next() -> None:
    calls = []

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            calls.append(body)
            if body == b"slow":
                await asyncio.sleep(0.5)  # answers late, on the connection given up
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def scenario(client: Http1Client) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.post("/", b"slow")
        answer = await client.post("/", b"fast")
        assert answer.body == b"fast"  # not the late answer to "slow"

    _with_server(slow_first, scenario)
    assert calls == [b"slow", b"fast"]


def test_an_unreachable_server_is_a_connection_error() -> None:
    async def main() -> None:
        client = Http1Client("127.0.0.1", free_port())
        with pytest.raises(HttpConnectionError, match="cannot connect") as caught:
            await client.post("/", b"{}")
        assert isinstance(caught.value, OSError)  # what the runtimes treat as unreachable

    asyncio.run(main())


def test_only_plain_http_addresses_are_taken() -> None:
    assert (Http1Client.for_url("http://127.0.0.1:3000").port, Http1Client.for_url("h:1").host) == (
        3000,
        "h",
    )
    for url in ("https://example.org:443", "http://127.0.0.1:3000/prefix"):
        with pytest.raises(ValueError):
            Http1Client.for_url(url)
