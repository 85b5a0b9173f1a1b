"""Loopback ports for the local peers (Stripe, SMTP, PostgreSQL, Tryton, Prism) and servers.

The demo, the tests and the benchmarks each start servers on 127.0.0.1; one way to pick a
port for all of them, so parallel runs never share a peer or a webhook server.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port free now: the system picks an unused one, the probe lets it go.

    Another process may take it before the caller binds it; the window is short, and
    every caller starts its server at once.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])
