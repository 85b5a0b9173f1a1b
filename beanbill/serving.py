"""Serving an ASGI app in several worker processes on one port (`beanbill serve --workers`).

uvicorn's own ``workers`` mode binds the shared socket with protocol 0, and asyncio sets
``TCP_NODELAY`` only on accepted sockets whose protocol is TCP: without it every answer
after the first on a keep-alive connection waits for the client's delayed ACK (~40 ms on
Linux; measured: ``GET /health`` at 177/s with 2 workers against 1,047/s with one). The
socket is bound here as a TCP socket, then handed to uvicorn unchanged; binding it here
also makes a port in use one clear error (exit 2) before anything starts.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from beanbill.rating.errors import BeanbillError

MAX_WORKERS = 16
BACKLOG = 2048  # uvicorn's default


class ServeError(BeanbillError):
    """The server could not listen or start; the message says what to check."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (``IPPROTO_TCP``, for ``TCP_NODELAY`` on what it
    accepts), shared by the worker processes; a clear error when it cannot be had."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        bound = socket.socket(family, kind, protocol)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error}") from None
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind(address)
        bound.listen(BACKLOG)
    except OSError as error:
        bound.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    bound.set_inheritable(True)  # the worker processes serve it
    return bound


def settle_heap() -> None:
    """Take every object alive now (the modules, the app, its models and documents: about
    260,000 objects) out of the garbage collector's reach for good (``gc.freeze``).

    A request that builds thousands of objects (the usage drill-down's days) now and then
    sets off a full collection, which walked all of them: the drill-down's p99 was 170-185
    ms for a p50 of 34 ms, and 52-66 ms once they were frozen (bench/bench_api.py). What a
    request builds afterwards is collected as before; only what was built at startup,
    which lives as long as the server, is left out.
    """
    gc.collect()
    gc.freeze()


def serve_one(app: Any, bound: socket.socket) -> None:
    """Serve ``app`` in this process on ``bound`` until stopped by a signal."""
    settle_heap()
    host, port = bound.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.run(sockets=[bound])
    if not server.started:
        raise ServeError("the server did not start: see the message above")


def serve_in_workers(factory: str, bound: socket.socket, workers: int) -> None:
    """Serve the app ``factory`` ("module:function", called in each worker) on ``bound``
    until stopped by a signal."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers is between 1 and {MAX_WORKERS}")
    host, port = bound.getsockname()[:2]
    config = uvicorn.Config(factory, factory=True, host=host, port=port, workers=workers,
                            log_level="warning", access_log=False)  # fmt: skip
    supervisor = Multiprocess(config, sockets=[bound])
    supervisor.run()
    # uvicorn's supervisor stops, and returns, when a worker fails before serving (the
    # app, the socket): that is a failure of the command, not a stop.
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise ServeError("a server worker failed to start: see its message above")
