"""The gateway's lean HTTP/1.1 client: pooling, chunked bodies, and broken connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from zhisuan.gateway._ends import worker_headers, worker_request
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._wire import Pool, WireError, post_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_reuses_connections_and_reads_chunked_streams() -> None:
    connections = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        while True:
            try:
                body = await read_request(reader)
            except asyncio.IncompleteReadError:
                writer.close()
                return
            if body == b"stream":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for part in (b"data: 1\n\n", b"data: 2\n\n"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-a: b\r\n\r\npong")
            await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        pool = Pool()
        for _ in range(3):
            resp = await pool.post("127.0.0.1", port, "/x", b"ping", {"x-req": "1"})
            assert (resp.status, resp.headers[b"x-a"], await resp.read()) == (201, b"b", b"pong")
            resp.close()
        resp = await pool.post("127.0.0.1", port, "/s", b"stream", {})
        parts = []
        while part := await resp.chunk():
            parts.append(part)
        assert b"".join(parts) == b"data: 1\n\ndata: 2\n\n"
        resp.close()
        assert connections[0] == 1  # one keep-alive connection served all four
        pool.close()
        await asyncio.sleep(0.05)  # the handler sees the close and ends
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_pooled_connection_the_server_closed_is_replaced() -> None:
    served = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # like a worker's keep-alive timeout, right after the answer

    async def main() -> None:
        server, port = await serve(handler)
        pool = Pool()
        for _ in range(3):
            resp = await pool.post("127.0.0.1", port, "/x", b"{}", {})
            assert await resp.read() == b"ok"
            resp.close()
            await asyncio.sleep(0.05)
        assert len(served) == 3
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_the_idle_connections_of_a_worker_that_stopped_leave_the_pool() -> None:
    writers: dict[int, list[asyncio.StreamWriter]] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.setdefault(writer.get_extra_info("sockname")[1], []).append(writer)
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def main() -> None:
        (stopping, gone), (staying, kept) = await serve(handler), await serve(handler)
        pool = Pool()
        answers = [pool.post("127.0.0.1", port, "/x", b"{}", {}) for port in (gone, gone, kept)]
        for resp in await asyncio.gather(*answers):  # two at once: two connections to one
            assert await resp.read() == b"ok"
            resp.close()
        idle = pool._idle
        assert [len(idle[("127.0.0.1", port)]) for port in (gone, kept)] == [2, 1]
        stopping.close()
        for writer in writers[gone]:  # the worker stops: its connections close
            writer.close()
        await stopping.wait_closed()
        await asyncio.sleep(0.1)
        assert ("127.0.0.1", gone) not in idle  # nothing is kept for it
        conn = pool.idle("127.0.0.1", kept)  # the other worker's is still there
        assert conn is not None and not conn.lost
        pool.release(conn)  # not used: closed
        pool.close()
        await asyncio.sleep(0.05)  # the handler sees the close and ends
        staying.close()
        await staying.wait_closed()

    asyncio.run(main())


def test_a_connection_lost_mid_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        pool = Pool()
        resp = await pool.post("127.0.0.1", port, "/x", b"{}", {})
        with pytest.raises(WireError):
            await resp.read()
        resp.close()
        with pytest.raises(OSError):
            await pool.post("127.0.0.1", 1, "/x", b"{}", {})  # nothing listens there
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_whole_waits_for_the_body_and_a_loss_mid_body_reaches_the_reader() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            if body == b"cut":
                writer.write(b"half")
                await writer.drain()
                writer.close()
                return
            writer.write(b"complete")
            await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        pool = Pool()
        resp = await pool.post("127.0.0.1", port, "/x", b"ok", {}, whole=True)
        assert resp._conn.complete  # returned once, with the body in
        assert await resp.read() == b"complete"
        resp.close()
        resp = await pool.post("127.0.0.1", port, "/x", b"cut", {}, whole=True)
        assert resp.status == 200  # the answer had begun: no retry elsewhere
        with pytest.raises(WireError):
            await resp.read()
        resp.close()
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_the_express_lanes_request_carries_what_every_request_to_a_worker_does() -> None:
    ex = Exchange(request_id="req-1", endpoint="chat.completions", model="m")
    ex.context["line"] = "team"  # as admission puts it (the principal's)
    body = b'{"model": "m"}'
    fast = worker_request("127.0.0.1", 8001, "/v1/chat/completions", body, ex)
    plain = post_request("127.0.0.1", 8001, "/v1/chat/completions", body, worker_headers(ex))

    def parts(request: bytes) -> tuple[bytes, set[bytes], bytes]:
        head, _, rest = request.partition(b"\r\n\r\n")
        first, *fields = head.split(b"\r\n")
        return first, {f.lower() for f in fields}, rest

    assert parts(fast) == parts(plain)
    assert b"x-zhisuan-tenant: team" in parts(fast)[1]
