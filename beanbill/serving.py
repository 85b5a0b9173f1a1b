"""Serving an ASGI app in several worker processes on one port (`beanbill serve --workers`).

uvicorn's own ``workers`` mode binds the shared socket with protocol 0, and asyncio sets
``TCP_NODELAY`` only on accepted sockets whose protocol is TCP: without it every answer
after the first on a keep-alive connection waits for the client's delayed ACK (~40 ms on
Linux; measured: ``GET /health`` at 177/s with 2 workers against 1,047/s with one). The
socket is bound here as a TCP socket, then handed to uvicorn's supervisor unchanged.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

MAX_WORKERS = 16


class _TcpConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        bound = super().bind_socket()
        if bound.family not in (socket.AF_INET, socket.AF_INET6):
            return bound
        return socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())


def serve_in_workers(factory: str, host: str, port: int, workers: int) -> None:
    """Serve the app ``factory`` ("module:function", called in each worker) on host:port."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers is between 1 and {MAX_WORKERS}")
    config = _TcpConfig(factory, factory=True, host=host, port=port, workers=workers,
                        log_level="warning", access_log=False)  # fmt: skip
    Multiprocess(config, sockets=[config.bind_socket()]).run()
