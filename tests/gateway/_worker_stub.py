"""A worker socket for the gateway's unit tests: answers, closes, breaks, stalls or hangs on a
POST."""

from __future__ import annotations

import asyncio
import json


class Worker:
    """A worker socket: ``mode`` says how it treats the next POST."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.posts = 0  # requests received
        self.heads: list[bytes] = []  # the heads of the POSTs received
        self.gone = asyncio.Event()
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        server = self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)  # the handlers see their connections close

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if head.startswith(b"POST "):
                self.posts += 1
                self.heads.append(head)
            if head.startswith(b"GET /zhisuan/requests/"):
                count = json.dumps({"completion_tokens": 2}).encode()
                self._write(writer, 200, count, b"content-type: application/json\r\n")
            elif self.mode in ("close", "close once"):
                self.mode = "answer" if self.mode == "close once" else self.mode
                writer.close()
                return
            elif self.mode == "break":  # dies mid-answer: a head and part of the body
                writer.write(b'HTTP/1.1 200 X\r\ncontent-length: 100\r\n\r\n{"usage"')
                await writer.drain()
                writer.close()
                return
            elif self.mode == "stall":  # a stream's head and first event, then nothing
                event = b'data: {"choices": []}\n\n'
                head = b"HTTP/1.1 200 X\r\ncontent-type: text/event-stream\r\n"
                writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                await reader.read()  # until the gateway closes the connection
                self.gone.set()
                writer.close()
                return
            elif self.mode == "hang":
                await reader.read()  # until the gateway closes the connection
                self.gone.set()
                writer.close()
                return
            else:
                extra = b"x-zhisuan-usage: 3 5\r\nserver-timing: worker;dur=1.5\r\n"
                self._write(writer, 200, b'{"usage":{}}', extra)
            await writer.drain()

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, body: bytes, extra: bytes) -> None:
        head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%b\r\n" % (status, len(body), extra)
        writer.write(head + body)
