"""Start localstripe (the real PyPI package) on 127.0.0.1 only, without its shared pickle.

localstripe's own CLI binds every interface and saves its state to a fixed
/tmp/localstripe.pickle after each change; two test runs would share it. This launcher
serves the same aiohttp application on loopback and keeps the state in memory only.
Gaps of localstripe that the Stripe connector needs are filled here, one small,
documented extension at a time, never by mocking the stripe SDK.

    python -m tests.peers.localstripe_launcher PORT
"""

from __future__ import annotations

import sys

from aiohttp import web
from localstripe import resources
from localstripe.server import app


def main() -> None:
    port = int(sys.argv[1])
    resources.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
