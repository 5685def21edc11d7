"""``python -m zhisuan.engines.worker``: one model replica behind an OpenAI HTTP API.

Started and supervised by a cluster backend (``zhisuan.cluster.local``)::

    python -m zhisuan.engines.worker --engine transformers --model-name tiny \\
        --model-path /models/tiny --device cpu --host 127.0.0.1 --port 8101 \\
        --options '{"max_batch_size": 8}'

The server listens at once; ``GET /health`` answers 503 ``loading`` until the engine is
loaded, then 200. If loading fails the process logs one line ``error: …`` last and exits
with status 1 (2 for bad arguments). SIGTERM/SIGINT stop it gracefully. With ``--fd N`` it
serves a listening socket it inherited instead of binding ``--port`` itself: the supervisor
binds the port and holds it from the start, so no other process can take it in between.

argparse rather than Typer keeps start-up light; only the selected engine is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from zhisuan._heap import settle_heap
from zhisuan.cluster import cores
from zhisuan.engines.options import completion_cap
from zhisuan.engines.worker._app import create_app
from zhisuan.engines.worker._registry import ENGINES, load_engine

logger = logging.getLogger("zhisuan.engines.worker")

GRACEFUL_SHUTDOWN_S = 3
KEEP_ALIVE_S = 75  # the gateway pools connections for up to 50 s (gateway/_wire.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the worker's command line.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The parsed namespace; ``options`` is already a dict.
    """
    parser = argparse.ArgumentParser(
        prog="python -m zhisuan.engines.worker",
        description="Serve one model replica over the OpenAI API on loopback.",
    )
    parser.add_argument(
        "--engine",
        required=True,
        help=f"engine kind: {', '.join(ENGINES)} (or package.module:load)",
    )
    parser.add_argument("--model-name", required=True, help="public model name")
    parser.add_argument("--model-path", type=Path, default=None, help="weights (dir or GGUF)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on this inherited socket, already bound to --host:--port and listening",
    )
    parser.add_argument("--options", default="{}", help="engine options as a JSON object")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        parser.error(f"--options is not valid JSON: {exc}")
    if not isinstance(options, dict):
        parser.error("--options must be a JSON object")
    args.options = options
    return args


def _loaded() -> None:
    """Once the engine is loaded, before it serves: move to the worker's own cores (it may
    have loaded on every core, :mod:`zhisuan.cluster.cores`), settle the heap."""
    cores.settle()
    settle_heap()


def main(argv: list[str] | None = None) -> int:
    """Run the worker until it is stopped.

    Args:
        argv: command-line arguments (see :func:`parse_args`).

    Returns:
        The process exit status: 0 after a clean stop, 1 if the engine failed to load.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def loader() -> Any:
        return load_engine(
            args.engine,
            args.model_path,
            model_name=args.model_name,
            device=args.device,
            options=args.options,
        )

    def on_load_failed(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(
        loader,
        model_name=args.model_name,
        engine_kind=args.engine,
        on_load_failed=on_load_failed,
        on_loaded=_loaded,
        completion_cap=completion_cap(args.options),
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
        server_header=False,  # answers go to the gateway, which parses every header
        date_header=False,
    )
    server = uvicorn.Server(config)
    server.run(sockets=None if args.fd is None else [socket.socket(fileno=args.fd)])
    if failure:
        # the supervisor shows the last line of the log: keep it the reason
        logger.error("error: cannot load model %s: %s", args.model_name, failure[0])
        return 1
    if not server.started:
        logger.error("error: could not listen on %s:%s", args.host, args.port)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
