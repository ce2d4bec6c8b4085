"""The web app: a page and a JSON API over the library (``animeid serve MODEL [--workspace WS]``).

    >>> app = create_app("characters.animeid", "ws")          # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP

Structure
---------
* :func:`create_app` builds a FastAPI app from routers by area, as FastAPI projects do:
  :mod:`~animeid.serve.pages` (the pages and static files), :mod:`~animeid.serve.recognition`
  (characters, recognise, enrol, forget, health), :mod:`~animeid.serve.videos` (timeline jobs) and
  :mod:`~animeid.serve.workspace` (the label page's API). What they share is in one place,
  :mod:`~animeid.serve.state` (settings, the model, the workspace, the jobs), reached with
  ``Depends(get_state)``; request and response models are in :mod:`~animeid.serve.schemas`, upload
  handling in :mod:`~animeid.serve.uploads`, background jobs in :mod:`~animeid.serve.jobs`.
  Nothing is global, so tests and benchmarks make as many apps as they like. The model is loaded
  once, lazily and thread-safely; the workspace is opened per request (an SQLite connection
  belongs to one thread).
* Routes are plain ``def`` functions: FastAPI runs them in its thread pool, so requests are
  served concurrently. No lock is held around inference (ONNX Runtime sessions are thread-safe;
  the face detector serialises its own C calls).
* ``POST /api/v1/timeline`` stores the upload in a private temporary folder and queues a job
  (:class:`_Jobs`, one worker thread): ``GET /api/v1/jobs/{id}`` reports progress and the result;
  the file is deleted when the job ends, the folder when the app shuts down.
* Pages and their scripts are static files in ``animeid/web`` (no build step, no CDN), served
  from an allow-list of file names. The API docs page (``/docs``) renders ``/openapi.json``
  with a local script, so it works without internet.

Limits and errors
-----------------
Every error is JSON ``{"detail": "..."}`` naming the problem (a browser asking for a page that
does not exist gets an HTML page saying so, with links back): 400 for an unreadable picture or
video or a bad character name; 403 for a manifest path outside the workspace; 404 for an unknown
job, face or route (and every workspace route when the app has no workspace); 413 when the
request body is over the upload limit -- counted while it is read, so a huge upload is refused
after ``max_upload_mb`` bytes, not after it has been stored -- or too many pictures are sent;
422 for a missing or invalid field or parameter (a value an option's rule refuses, see
:mod:`animeid.options`: the same message the CLI gives, e.g. ``top: must be a whole number from 1
to 50, got 0``); 429 when too many videos wait; 501 for enrolment (or forgetting) with a model
that cannot do it (:class:`~animeid.errors.CannotEnrollError`).
Pictures go through :func:`animeid.images.load_image` with ``max_pixels`` (checked before
decoding: decompression bombs, huge dimensions). Upload file names are only ever echoed back,
never used as paths; face crops are served by manifest id, from inside the workspace only.

Enrolment (``POST /api/v1/enroll``, ``POST /api/v1/forget``) changes the model in the server's
memory; with ``save_enrollments`` (``animeid serve --save-enrollments``) each change is also written
to the model file, atomically and before the next change starts, and the answer's ``saved`` says
whether it was.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import AnimeidError, CannotEnrollError, ConfigError, InputError

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - the [serve] extra is not installed
    raise ImportError("the web app needs FastAPI: pip install 'animeid[serve]' "
                      "(fastapi, uvicorn, python-multipart)") from e

from . import pages, recognition, videos
from . import workspace as workspace_routes
from .jobs import _Jobs
from .state import MAX_SERVE_PIXELS, WEB_DIR, Settings, _State
from .uploads import _Guard

__all__ = ["create_app", "serve_in_thread", "encode_multipart", "WEB_DIR", "MAX_SERVE_PIXELS"]


def create_app(model_path: str | os.PathLike, workspace: str | os.PathLike | None = None, *,
               max_upload_mb: float = 20, max_video_mb: float = 500, max_pixels: int = MAX_SERVE_PIXELS,
               max_images: int = 16, max_video_frames: int = 3000, page_faces: int = 120,
               tmp_dir: str | os.PathLike | None = None, preload: bool = False,
               save_enrollments: bool = False, detector: str | None = None,
               save_enrolments: bool | None = None) -> FastAPI:
    """The animeid web app for the model file ``model_path`` (and a workspace for the label page).

    Parameters
    ----------
    model_path : path
        The ``.animeid`` model file the app recognises with.
    workspace : path, optional
        A workspace whose unlabeled faces the label page shows (and names).
    max_upload_mb, max_video_mb : float, default 20, 500
        Largest request body in MB for pictures and for videos, enforced while the body is read.
    max_pixels : int, default MAX_SERVE_PIXELS
        Largest picture decoded, in pixels (width x height).
    max_images : int, default 16
        Pictures in one request.
    max_video_frames : int, default 3000
        Frames sampled from one video (the rest is cut; the result says ``truncated``).
    page_faces : int, default 120
        Faces per page of the label page.
    tmp_dir : path, optional
        Where the private folder for video uploads is made (default: the system's).
    preload : bool, default False
        Load the model now (its errors surface here) instead of at the first request.
    save_enrollments : bool, default False
        Write the model file (atomically) after each enrolment or forget through the API, so that
        it survives a restart; by default such changes live in the server's memory only.
    detector : str or path, optional
        The face detector: a name or a detector file (None: animeid's default).
    save_enrolments : bool, optional
        The older spelling of ``save_enrollments`` (still accepted).

    Returns
    -------
    fastapi.FastAPI
        The app (run it with uvicorn; ``app.state.animeid`` holds its shared state).

    Raises
    ------
    ConfigError
        A bad option (named), before anything is opened.
    ModelFileError
        A missing model file, one in a folder that cannot be written (with ``save_enrollments``),
        or (with ``preload``) one that cannot be read.
    DatasetError
        ``workspace`` is not a workspace.

    Examples
    --------
    >>> import uvicorn
    >>> from animeid.serve import create_app
    >>> app = create_app("characters.animeid", "ws", save_enrollments=True, preload=True)
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    from .. import options as o
    from .._util import check_file
    from ..errors import ModelFileError

    if save_enrolments is not None:               # the older spelling of save_enrollments
        if save_enrollments and not save_enrolments:
            raise TypeError("create_app: save_enrollments=True and save_enrolments=False (its older spelling) "
                            "disagree; give one of them")
        save_enrollments = save_enrollments or bool(save_enrolments)

    for k, v, rule in (("max_upload_mb", max_upload_mb, o.MEGABYTES), ("max_video_mb", max_video_mb, o.MEGABYTES),
                       ("max_pixels", max_pixels, o.whole(1)), ("max_images", max_images, o.whole(1)),
                       ("max_video_frames", max_video_frames, o.whole(1)), ("page_faces", page_faces, o.whole(1)),
                       ("detector", detector, o.detector())):
        rule.check(k, v)                          # ConfigError naming the option, before anything is opened
    mp = check_file(model_path, "an animeid model file", ModelFileError, missing="no such model file")
    if save_enrollments and not os.access(mp.resolve().parent, os.W_OK):
        raise ModelFileError("cannot save enrolments: the model file's folder is not writable", mp)
    ws_root: Path | None = None
    if workspace is not None:
        from ..dataset import Workspace

        Workspace(workspace).close()              # DatasetError when it is not one
        ws_root = Path(workspace).resolve()
    settings = Settings(max_upload_mb, max_video_mb, max_pixels, max_images, max_video_frames, page_faces,
                        bool(save_enrollments), detector)
    state = _State(mp, ws_root, os.fspath(tmp_dir) if tmp_dir is not None else None, settings)
    if preload:
        state.recognizer  # noqa: B018 - load now
    state.jobs = _Jobs(lambda job, progress: videos.run_timeline(state, job, progress))

    @asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            state.jobs.shutdown()
            state.cleanup()

    app = FastAPI(
        title="animeid", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url="/openapi.json",
        description="Recognise anime characters by their faces. Errors are JSON `{\"detail\": \"...\"}`. "
                    "Pictures: multipart field `image` (several allowed). The page is at `/`, "
                    "the characters page (enrol and forget) at `/characters`, the label page at `/label` "
                    "(with a workspace).")
    app.state.animeid = state
    app.state.jobs = state.jobs

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith("/api/v1/timeline"):
            return settings.video_limit, "the video upload"
        return settings.upload_limit, "the upload"

    app.add_middleware(_Guard, limit_for=limit_for)
    _add_error_handlers(app)
    for router in (pages.router, recognition.router, videos.router, workspace_routes.router):
        app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Errors are always ``{"detail": "..."}`` (a browser asking for a missing page gets a page)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404 and pages.wants_page(request):
            return pages.not_found_page(request, str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(AnimeidError)
    async def animeid_error(_request: Request, exc: AnimeidError):
        return JSONResponse({"detail": exc.message if isinstance(exc, InputError) else str(exc)}, status_code=400)

    @app.exception_handler(ConfigError)      # a bad option: the rule's message (animeid.options), as the CLI says it
    async def config_error(_request: Request, exc: ConfigError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(CannotEnrollError)
    async def cannot_enroll(_request: Request, exc: CannotEnrollError):
        return JSONResponse({"detail": exc.message}, status_code=501)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
            where = ".".join(loc) or "request"
            if err.get("type") == "json_invalid":
                why = (err.get("ctx") or {}).get("error", "decode error")
                parts.append(f"the request body is not valid JSON ({why})")
            elif err.get("type") == "missing":
                src = (err.get("loc") or ("",))[0]
                ctype = request.headers.get("content-type", "")
                body_kind = ("JSON field" if ctype.startswith("application/json") else
                             "form field" if ctype.startswith("application/x-www-form-urlencoded") else
                             "multipart/form-data field")
                kind = body_kind if src == "body" else "query parameter" if src == "query" else "field"
                parts.append(f"missing {kind} {where!r}")
            else:
                parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request",
                             "errors": json.loads(json.dumps(exc.errors(), default=str))}, status_code=422)


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread and yield its base URL (``http://127.0.0.1:PORT``).

    ``port=0`` takes a free port (the socket is bound here, so there is no race). The server is
    stopped, its lifespan shut down, when the ``with`` block ends. For tests, benchmarks, notebooks.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="animeid-uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def encode_multipart(parts: Sequence[tuple[str, str | None, bytes | str, str | None]]) -> tuple[bytes, str]:
    """``multipart/form-data`` for ``(field, filename or None, data, content type or None)`` parts, with
    the standard library only: ``(body, content_type_header)``. File names are sent as given."""
    boundary = "animeid-" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, filename, data, ctype in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode("utf-8", "surrogateescape"))
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n")
        out.write(data.encode() if isinstance(data, str) else data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _version() -> str:
    from .. import __version__

    return __version__
