"""A small HTTP proxy on loopback that injects faults between a connector and its peer.

The plan decides, per request (counted from 1), what goes wrong: the connection dropped
before the peer sees the request, dropped or stalled after the peer has done it (the
client cannot know), a 429 with Retry-After, or a 500 after the peer has done it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class Fault(StrEnum):
    NONE = "none"
    DROP_BEFORE = "drop-before"  # connection closed, the peer never saw the request
    DROP_AFTER = "drop-after"  # the peer did it, the answer is lost
    STALL_AFTER = "stall-after"  # the peer did it, the answer comes after the client gave up
    RATE_LIMITED = "429"  # 429 with Retry-After, the peer never saw the request
    ERROR_AFTER = "500-after"  # the peer did it, the client gets a 500
    REJECT = "400"  # a permanent refusal


Plan = Callable[[int, str, str], Fault]  # (request number, method, path) → fault


class FaultProxy:
    def __init__(self, upstream: str, plan: Plan, stall_seconds: float) -> None:
        self.upstream = upstream
        self.plan = plan
        self.stall_seconds = stall_seconds
        self.count = 0
        self.faults: list[tuple[int, str, str, Fault]] = []
        self.refusals: list[tuple[str, str, int, bytes]] = []  # the peer's own 4xx/5xx
        self.lock = threading.Lock()

    def next(self, method: str, path: str) -> Fault:
        with self.lock:
            self.count += 1
            fault = self.plan(self.count, method, path)
            if fault is not Fault.NONE:
                self.faults.append((self.count, method, path, fault))
            return fault


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, body: bytes) -> httpx.Response:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}
            }
            return httpx.request(
                self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=30
            )

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""  # never left on the connection
            fault = proxy.next(self.command, self.path)
            error = b'{"error": {"message": "injected", "type": "api_error"}}'
            json_type = {"Content-Type": "application/json"}
            if fault is Fault.DROP_BEFORE:
                self.close_connection = True
                return
            if fault is Fault.RATE_LIMITED:
                self._answer(429, error, {**json_type, "Retry-After": "0"})
                return
            if fault is Fault.REJECT:
                self._answer(400, b'{"error": {"message": "injected refusal"}}', json_type)
                return
            answer = self._forward(body)
            if answer.status_code >= 400:
                proxy.refusals.append((self.command, self.path, answer.status_code, answer.content))
            if fault is Fault.DROP_AFTER:
                self.close_connection = True
                return
            if fault is Fault.STALL_AFTER:
                time.sleep(proxy.stall_seconds)
                self.close_connection = True
                return
            if fault is Fault.ERROR_AFTER:
                self._answer(500, error, json_type)
                return
            self._answer(answer.status_code, answer.content, json_type)

        do_GET = do_POST = do_DELETE = _handle

    return Handler


@contextmanager
def fault_proxy(upstream: str, plan: Plan, stall_seconds: float = 2.0) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, plan, stall_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
