"""The browser page: ``index.html`` at ``/`` and its files under ``/static``, served by the Ingress itself.

Plain HTML, CSS and JavaScript shipped in the package (``serve_app/static``): no build step and nothing
fetched from the network at run time. The page calls the same HTTP API as any client.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATH = "/"
STATIC_PATH = "/static"
CONTENT_POLICY = ("default-src 'self'; media-src * blob:; frame-src https://www.youtube-nocookie.com; "
                  "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
"""The page runs only its own files; media may come from a transcript's source, the player from YouTube."""


def is_page_path(path: str) -> bool:
    """Whether ``path`` is the page or one of its static files (open to all, like ``/healthz``)."""
    return path == PAGE_PATH or path.startswith(STATIC_PATH + "/")


async def page() -> FileResponse:
    """The page itself, with a content policy that keeps it to its own scripts."""
    return FileResponse(STATIC_DIR / "index.html",
                        headers={"Content-Security-Policy": CONTENT_POLICY, "Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files under ``/static`` on ``app``."""
    app.add_api_route(PAGE_PATH, page, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
