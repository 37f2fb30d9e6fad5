"""A TCP proxy on loopback that can cut connections mid-response, to test what a
client does when the network drops a connection halfway through a batch."""

from __future__ import annotations

import asyncio
import threading

from . import free_port


class FlakyProxy:
    """Forwards 127.0.0.1:<port> to ``target_port``. While ``drops`` is above zero, each
    new connection is cut after ``cut_after`` bytes of the server's answer."""

    def __init__(self, target_port: int, *, cut_after: int = 2000) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_after = cut_after
        self.drops = 0
        self.cut = 0  # connections cut so far
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FlakyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        limit = None
        if self.drops > 0:
            self.drops -= 1
            limit = self.cut_after

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, cap: int | None
        ) -> None:
            sent = 0
            try:
                while data := await src.read(65536):
                    if cap is not None and sent + len(data) > cap:
                        dst.write(data[: cap - sent])
                        await dst.drain()
                        self.cut += 1
                        break
                    sent += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, limit))
