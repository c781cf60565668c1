"""The playground: `GET /` serves a page that runs prompts through the server's own streaming API with per-step
trajectory events and draws them live with the package's trajectory renderer (the `--trace` one). Plain files in
`redraft/serving/static` and `redraft/decoding/static`: no build step, no CDN. Kept out of the OpenAPI schema."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter()
# name -> (package, media type): only these files are served
_STATIC = {"trajectory.js": ("redraft.decoding", "text/javascript"),
           "trajectory.css": ("redraft.decoding", "text/css"),
           "playground.js": ("redraft.serving", "text/javascript"),
           "playground.css": ("redraft.serving", "text/css")}
# the page loads only its own files; model text is inserted as text, never as markup
_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _read(package: str, name: str) -> str:
    return (resources.files(package) / "static" / name).read_text(encoding="utf-8")


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_read("redraft.serving", "playground.html"), headers=_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name not in _STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    package, media = _STATIC[name]
    return Response(_read(package, name), media_type=media, headers=_HEADERS)
