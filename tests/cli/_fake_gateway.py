"""A stand-in for the running gateway on the port the CLI reads (``ZHISUAN_PORT``): a
handler class answers the admin calls a command makes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    """A handler that answers JSON, and keeps the test output quiet."""

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@contextmanager
def fake_gateway(handler: type[JsonHandler]) -> Iterator[None]:
    """Serve ``handler`` on ``ZHISUAN_PORT`` until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["ZHISUAN_PORT"])), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
