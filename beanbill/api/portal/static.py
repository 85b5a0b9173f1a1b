"""The portal's static files (its script, its style, the vendored chart library).

Served from the package itself, so the portal needs no CDN and works offline. Only the
files listed here are served (no path from a request ever reaches the file system), with
a long cache: their content changes only with the package.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, Response

from beanbill.api.problems import NotFound

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    "chart.umd.min.js": "text/javascript",
    "portal.js": "text/javascript",
    "portal.css": "text/css",
    "chart.js-LICENSE.md": "text/plain",
    "VENDORED.json": "application/json",
}
CACHE = "public, max-age=3600"


def static_response(name: str) -> Response:
    """One listed static file; any other name is "not found"."""
    media_type = MEDIA_TYPES.get(name)
    if media_type is None:
        raise NotFound("no such file")
    headers = {"Cache-Control": CACHE, "X-Content-Type-Options": "nosniff"}
    return FileResponse(STATIC / name, media_type=media_type, headers=headers)
