"""The pages: ``/`` (recognise), ``/characters``, ``/label``, ``/docs`` and their static files, served
from an allow-list of file names in ``animeid/web`` (no build step, no CDN); and the page a browser
gets for a URL that does not exist (API clients keep getting JSON)."""
from __future__ import annotations

import html

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from .state import _MEDIA, _State, get_state

router = APIRouter(include_in_schema=False)


def _file(st: _State, name: str, what: str) -> Response:
    p = st.statics.get(name)
    if p is None:
        raise HTTPException(404, what)
    return FileResponse(p, media_type=_MEDIA[p.suffix], headers={"Cache-Control": "no-cache"})


def _page(st: _State, name: str) -> Response:
    return _file(st, name, f"page {name} is not installed (animeid/web is missing)")


@router.get("/")
def index(st: _State = Depends(get_state)):
    return _page(st, "index.html")


@router.get("/label")
def label_page(st: _State = Depends(get_state)):
    return _page(st, "label.html")


@router.get("/characters")
def characters_page(st: _State = Depends(get_state)):
    return _page(st, "characters.html")


@router.get("/docs")
def docs_page(st: _State = Depends(get_state)):
    return _page(st, "docs.html")


@router.get("/static/{name}")
def static(name: str, st: _State = Depends(get_state)):
    return _file(st, name, f"no static file {name!r}")


def wants_page(request: Request) -> bool:
    """A browser asking for a page (GET, HTML accepted, not an API or static path), not an API client."""
    path = request.url.path
    return (request.method == "GET" and "text/html" in request.headers.get("accept", "")
            and not path.startswith(("/api/", "/static/", "/openapi.json", "/health")))


def not_found_page(request: Request, detail: str) -> HTMLResponse:
    """The page a browser gets for a URL that does not exist: what was asked for and the way back."""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>animeid: not found</title><link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css"></head>
<body><header class="bar"><a class="brand" href="/"><img src="/static/icon.svg" alt="" width="28" height="28">animeid</a>
<nav><a href="/">Recognise</a><a href="/characters">Characters</a><a href="/docs">API</a></nav></header>
<main><h1>Not found</h1><p class="status error">{html.escape(detail)}: <code>{html.escape(request.url.path)}</code></p>
<p>Go to <a href="/">the recognise page</a>, <a href="/characters">the characters</a> or
<a href="/docs">the API</a>.</p></main></body></html>"""
    return HTMLResponse(body, status_code=404)
