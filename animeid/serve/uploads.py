"""Uploads: the body-size guard, reading uploaded pictures, the names and paths requests carry."""
from __future__ import annotations

import io
import os
import unicodedata
from pathlib import Path
from typing import Any, Callable

from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse

from ..images import IMAGE_EXTS
from .state import _CSP, _MB

_DRAIN_MAX = 32 * _MB    # after refusing an oversized body, at most this many more bytes are read (and dropped)


class _UploadTooLarge(HTTPException):
    pass


class _Guard:
    """ASGI middleware: security headers on every response, and a JSON 413 for a request body over
    ``limit_for(path)`` bytes.

    The limit is enforced while the body is read: a declared ``Content-Length`` over it is refused
    before any of the body reaches the app, otherwise bytes are counted as they arrive and the
    request is refused as soon as the count passes the limit (chunked uploads included). Before
    answering, up to :data:`_DRAIN_MAX` more bytes of the refused body are read and dropped, so a
    client that sends its whole body before reading (most do) gets the 413 instead of a reset
    connection; a client that waits for ``100 Continue`` is answered at once.
    """

    def __init__(self, app, limit_for: Callable[[str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for
        self.extra = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", _CSP.encode()),
                      (b"referrer-policy", b"no-referrer")]

    @staticmethod
    async def _drain(receive, budget: int) -> None:
        while budget > 0:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            budget -= len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self.limit_for(scope.get("path", ""))
        detail = f"{what} is larger than the upload limit of {limit / _MB:g} MB"
        started = False

        async def guarded_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg = {**msg, "headers": list(msg.get("headers", [])) + [h for h in self.extra if h[0] not in have]}
            await send(msg)

        headers = dict(scope.get("headers", []))
        try:
            declared = int(headers[b"content-length"]) if b"content-length" in headers else None
        except ValueError:
            declared = None
        if declared is not None and declared > limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, min(declared, _DRAIN_MAX))
            resp = JSONResponse({"detail": f"{detail} ({declared / _MB:.1f} MB declared)"}, status_code=413,
                                headers={"Connection": "close"})
            return await resp(scope, receive, guarded_send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    stopped = seen
                    if msg.get("more_body", False):
                        await self._drain(receive, _DRAIN_MAX)
                    raise _UploadTooLarge(413, f"{detail} (stopped reading at {stopped / _MB:.1f} MB)")
            return msg

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _UploadTooLarge as e:     # raised where no handler caught it (e.g. before routing)
            if started:
                raise
            await JSONResponse({"detail": e.detail}, status_code=413, headers={"Connection": "close"})(
                scope, receive, guarded_send)


def _display(name: str | None, fallback: str) -> str:
    """An upload's file name for messages: control characters dropped, at most 120 characters."""
    if not name:
        return fallback
    s = "".join(c for c in unicodedata.normalize("NFC", name) if c.isprintable())
    return (s[:117] + "...") if len(s) > 120 else (s or fallback)


class _Upload(io.BytesIO):
    """An upload's bytes, named by its label in Pillow's messages (not ``<_io.BytesIO object at 0x...>``)."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __repr__(self) -> str:
        return repr(self.label)


def _read_upload(up: UploadFile, label: str) -> _Upload:
    data = up.file.read()
    if not data:
        raise HTTPException(400, f"{label}: empty file (0 bytes), not a picture")
    return _Upload(data, label)


def _check_name(name: str, *, enroll: bool = False) -> str:
    """A character name from a request, by animeid's one rule (:func:`animeid.names.check_character_name`),
    with the workspace's reserved folder names (and, to enrol or forget, ``unknown``) refused; 400 otherwise."""
    from ..dataset import _RESERVED
    from ..names import check_character_name
    from ..openset import UNKNOWN

    try:
        return check_character_name(name, reserved={*_RESERVED, UNKNOWN} if enroll else _RESERVED)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


def _inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, or 403 when it is not a file inside ``root`` (``root`` is resolved)."""
    if not rel or "\x00" in rel or os.path.isabs(rel):
        raise HTTPException(403, f"refused path {rel!r}: not a relative path inside the workspace")
    p = (root / rel).resolve()
    if not p.is_relative_to(root) or p == root:
        raise HTTPException(403, f"refused path {rel!r}: it lies outside the workspace")
    if p.suffix.lower() not in IMAGE_EXTS:
        raise HTTPException(403, f"refused path {rel!r}: not a picture")
    return p



async def form_or_json(request: Any) -> dict:
    """A request body sent as JSON (an object) or as a form (urlencoded or multipart), as a dict; a
    form field given several times becomes a list. Bad JSON is a 422, as FastAPI's own parsing says it."""
    import json

    from fastapi.exceptions import RequestValidationError

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("application/json", "application/x-www-form-urlencoded", "multipart/form-data")):
        raise HTTPException(415, f"send the fields as JSON or as a form (application/json, "
                                 f"application/x-www-form-urlencoded or multipart/form-data), not {ctype or 'nothing'}")
    if ctype.startswith("application/json"):
        raw = await request.body()
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error",
                                           "ctx": {"error": str(e)}}]) from None
        if not isinstance(data, dict):
            raise RequestValidationError([{"type": "dict_type", "loc": ("body",),
                                           "msg": "Input should be a JSON object"}])
        return data
    form = await request.form()
    return {k: (v if len(v := form.getlist(k)) > 1 else v[0]) for k in form.keys()}
