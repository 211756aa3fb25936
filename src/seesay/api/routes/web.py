"""The web page (``/``) and its static files (``/web/…``), outside the OpenAPI document.

The page (:mod:`seesay.web`: plain HTML, CSS and ES modules, no build step) talks only to the
public API, as any client would. ``/web/examples.json`` lists the bundled demo pictures, served
under ``/web/examples/``, for the page's gallery. Served unless the ``web_page`` setting is off.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from seesay.demo.examples import EXAMPLES, examples_dir

# Everything the page loads comes from this server: a script or picture from elsewhere is refused.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"}


def web_dir() -> Path:
    """The folder holding index.html, app.js and style.css."""
    return Path(str(resources.files("seesay"))) / "web"


router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(web_dir() / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/web/examples.json")
async def examples() -> JSONResponse:
    """The gallery: each bundled picture's name and address."""
    return JSONResponse([{"name": name, "url": f"/web/examples/{name}.png"} for name in EXAMPLES],
                        headers=_HEADERS)


def mount_static(app: FastAPI) -> None:
    """Serve the page's files under ``/web/`` and the demo pictures under ``/web/examples/``."""
    app.mount("/web/examples", StaticFiles(directory=examples_dir()), name="web-examples")
    app.mount("/web", StaticFiles(directory=web_dir()), name="web")
