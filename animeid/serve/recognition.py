"""Recognition routes: the characters the model knows, recognising pictures, enrolling and forgetting
characters; and ``/health``."""
from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Callable, Literal, Optional, Sequence

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..errors import AnimeidError, CannotEnrollError, InputError
from ..images import load_image
from ..predict import PredictConfig, Recognizer, parse_unknown_threshold
from .schemas import RecognizeResponse, errors
from .state import _State, get_state
from .uploads import _check_name, _display, _read_upload, form_or_json

log = logging.getLogger("animeid")
router = APIRouter()


@router.get("/health", tags=["service"], summary="Liveness: the server answers (does not load the model)")
def health(st: _State = Depends(get_state)):
    s = st.settings
    return {"status": "ok", "model": st.model_path.name, "model_loaded": st.loaded,
            "workspace": st.workspace.name if st.workspace else None, "jobs": st.jobs.counts(),
            "limits": {"upload_mb": s.max_upload_mb, "video_mb": s.max_video_mb, "max_pixels": s.max_pixels,
                       "max_images": s.max_images, "max_video_frames": s.max_video_frames}}


@router.get("/api/v1/characters", tags=["recognition"], summary="The characters the model knows",
            description="`characters`: the names answered now (trained ones first, then enrolled ones). "
                        "`details`: one object per name, in the same order: `trained` (the model was trained "
                        "on it), `trained_faces` (its training faces, when the model says) and "
                        "`enrolled_pictures` (pictures enrolled through enrolment), `thumbnail` (the URL of a "
                        "small face picture, or null). `forgotten`: trained "
                        "characters forgotten since (enrolling pictures under such a name brings it back). "
                        "`saves_enrollments`: whether enrolments and forgets are written to the model file "
                        "(`--save-enrollments`) or kept in memory until the server stops (`saves_enrolments`: "
                        "the same, under its older spelling).")
def characters(st: _State = Depends(get_state)):
    rec = st.recognizer
    labels = list(rec.labels)
    openset = getattr(rec, "openset", None)        # one snapshot: enrol/forget replace it
    if openset is not None:
        trained = {c: int(n) for c, n in zip(openset.trained, openset.counts)}
        enrolled = Counter(openset.gallery_labels)
        forgotten = [c for c in openset.masked if c not in labels]
    else:
        trained = {c: None for c in getattr(getattr(rec, "bundle", None), "labels", labels)}
        enrolled, forgotten = Counter(), []
    from urllib.parse import quote

    details = [{"name": c, "trained": c in trained, "trained_faces": trained.get(c),
                "enrolled_pictures": int(enrolled.get(c, 0)),
                "thumbnail": (f"/api/v1/characters/{quote(c, safe='')}/thumbnail"
                              if getattr(rec, "thumbnail", lambda _: None)(c) is not None else None)}
               for c in labels]
    return {"characters": labels, "count": len(labels), "method": rec.method,
            # models made before the open-set layer existed cannot enrol or forget
            "can_enroll": callable(getattr(rec, "enroll", None)) and openset is not None,
            "can_forget": callable(getattr(rec, "forget", None)) and openset is not None,
            "details": details, "forgotten": forgotten, "saves_enrollments": bool(st.settings.save_enrollments),
            "saves_enrolments": bool(st.settings.save_enrollments),  # the older key, still answered
            "model": st.model_path.name}


@router.get("/api/v1/characters/{name}/thumbnail", tags=["recognition"], responses=errors(404),
            response_class=Response, summary="A small face picture of a character (PNG, 64x64)",
            description="A typical training face of a trained character, the first enrolled face of an enrolled "
                        "one. 404 when the model has none (models made before thumbnails) or no such character.")
def character_thumbnail(name: str, st: _State = Depends(get_state)):
    from ..thumbnails import png_bytes

    thumb = st.recognizer.thumbnail(name)
    if thumb is None:
        raise HTTPException(404, f"no thumbnail of {_display(name, '?')!r} in this model")
    return Response(png_bytes(thumb), media_type="image/png", headers={"Cache-Control": "no-cache"})


def load_uploads(st: _State, uploads: Sequence[UploadFile]) -> tuple[list[Any], list[str]]:
    """The uploaded pictures, decoded (413 for too many, 400 naming an unreadable one), and their names."""
    limit = st.settings.max_images
    if len(uploads) > limit:
        raise HTTPException(413, f"{len(uploads)} pictures in one request; the limit is {limit}")
    imgs, names = [], []
    for i, up in enumerate(uploads):
        name = _display(up.filename, f"image #{i + 1}")
        label = name if len(uploads) == 1 else f"image #{i + 1} ({name})"
        try:
            imgs.append(load_image(_read_upload(up, label), "RGB", max_pixels=st.settings.max_pixels))
        except InputError as e:
            raise HTTPException(400, f"{label}: {e.message}") from None
        names.append(name)
    return imgs, names


@router.post(
    "/api/v1/recognize", tags=["recognition"], response_model=RecognizeResponse, response_model_exclude_none=True,
    responses=errors(400, 413, 422),
    summary="Find the faces in pictures and name the characters",
    description="Send pictures (illustrations, screenshots or face crops) as multipart fields `image`. The answer "
                "always has `results`: one object per picture, in the order sent: `{\"filename\", \"width\", "
                "\"height\", \"faces\": [{\"box\": [x0, y0, x1, y1], \"name\", \"unknown\", \"candidates\": "
                "[{\"name\", \"p\"}], \"open_set\"}]}`. With one picture, that object's fields are also at the top "
                "level (as before `results` was added there). `name` is the verdict: a character, or `unknown` "
                "for a face of no known character (then `candidates` are the characters it is closest to). A "
                "picture in which no face is found gets `faces: []` and a separate `whole_picture` guess, the "
                "picture read as a face crop (`detect=auto`). An animated picture also gets `frame` (0-based) "
                "and `frames`: the frame in which the faces were found.")
def recognize(image: list[UploadFile] = File(..., description="one or more pictures"),
              top: int = Query(3, ge=1, le=50, description="candidates per face"),
              threshold: float | None = Query(None, ge=0.0, le=1.0, description="face detector score threshold, 0..1 "
                                              "(default: the detector's own calibrated one)"),
              detect: Literal["auto", "always", "never"] = Query(
                  "auto", description="auto: find faces, a face crop is taken whole; always: only faces "
                                      "found; never: the whole picture is one face"),
              flip: Literal["auto", "always", "never"] = Query(
                  "auto", description="a fine-tuned model's mirror-image averaging: auto: only faces whose answer "
                                      "is close (the verdicts of always, faster); always: every face; never: none"),
              unknown_threshold: Optional[str] = Query(
                  None, max_length=40, examples=["5%", "0.05", "off", "score:-14.8"],
                  description="when a face is answered `unknown`: the share of known faces refused on the "
                              "model's calibration data, `0.05` or `5%` (more: more faces unknown; from 0 up to "
                              "100 % excluded); `off`: never; `score:T`: a raw open-set score threshold. "
                              "Default: the model's calibrated threshold"),
              top_form: Optional[int] = Form(None, alias="top", ge=1, le=50,
                                             description="as the query parameter `top` (the form field wins)"),
              threshold_form: Optional[float] = Form(None, alias="threshold", ge=0.0, le=1.0,
                                                     description="as the query parameter `threshold`"),
              detect_form: Optional[Literal["auto", "always", "never"]] = Form(
                  None, alias="detect", description="as the query parameter `detect`"),
              flip_form: Optional[Literal["auto", "always", "never"]] = Form(
                  None, alias="flip", description="as the query parameter `flip`"),
              unknown_threshold_form: Optional[str] = Form(None, alias="unknown_threshold", max_length=40,
                                                           description="as the query parameter `unknown_threshold`"),
              st: _State = Depends(get_state)):
    # the options may come as query parameters or as form fields beside the pictures (as `every` does
    # for a timeline); a form field wins
    top = top_form if top_form is not None else top
    threshold = threshold_form if threshold_form is not None else threshold
    detect = detect_form if detect_form is not None else detect
    flip = flip_form if flip_form is not None else flip
    unknown_threshold = unknown_threshold_form if unknown_threshold_form is not None else unknown_threshold
    try:
        unk = parse_unknown_threshold(unknown_threshold)
        cfg = PredictConfig(top=top, threshold=threshold, detect=detect, flip=flip, detector=st.settings.detector,
                            **unk)
        st.recognizer._threshold(cfg, st.recognizer.openset)
    except (ValueError, AnimeidError) as e:
        raise HTTPException(422, f"unknown_threshold: {getattr(e, 'message', None) or e}") from None
    imgs, names = load_uploads(st, image)
    results = st.recognizer.predict_batch(imgs, cfg)
    out = [{"filename": n, **{k: v for k, v in r.items() if k != "path"}} for n, r in zip(names, results)]
    return {**out[0], "results": out} if len(out) == 1 else {"results": out}


@router.post("/api/v1/enroll", tags=["recognition"], responses=errors(400, 413, 422, 501),
             summary="Teach the model a new character from a few pictures (open-set models only)",
             description="Multipart: `name` and one or more `image` fields. Answers 501 when the loaded "
                         "model cannot enrol characters. Enrolment changes the model in this server's memory, "
                         "and in the model file when the server runs with `--save-enrollments`: `saved` says "
                         "whether it was written (`save_error` says why not, when a save failed).")
def enroll(name: str = Form(..., description="the character's name"),
           image: list[UploadFile] = File(..., description="pictures of the character's face"),
           face_crops: bool = Form(False, description="the pictures are face crops: each is used whole; by "
                                                      "default a picture in which no face is found is refused"),
           st: _State = Depends(get_state)):
    rec = st.recognizer
    fn = getattr(rec, "enroll", None)
    if not callable(fn):
        raise HTTPException(501, "this model cannot enrol new characters: this animeid's recogniser has no "
                                 "enroll(); retrain with `animeid train` on a dataset that includes the character")
    name = _check_name(name, enroll=True)
    imgs, _ = load_uploads(st, image)
    cfg = PredictConfig(detector=st.settings.detector)
    return change_model(st, rec, "enrol", name, lambda: fn(name, imgs, cfg, face_crops=face_crops),
                        {"images": len(imgs)})


_NAME_BODY = {"required": True, "content": {
    ct: {"schema": {"type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "maxLength": 200,
                                            "description": "the character's name"}}}}
    for ct in ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")}}


@router.post("/api/v1/forget", tags=["recognition"], responses=errors(400, 415, 422, 501),
             openapi_extra={"requestBody": _NAME_BODY},
             summary="Remove a character from the model (open-set models only)",
             description="`name`, as a form field or JSON `{\"name\": ...}`. An enrolled character's pictures "
                         "go; a trained one is never answered again. Answers 501 when the loaded model cannot "
                         "forget characters. Like enrolment, it changes the model in memory, and in the model "
                         "file with `--save-enrollments` (`saved`).")
async def forget(request: Request, st: _State = Depends(get_state)):
    body = await form_or_json(request)
    name = body.get("name")
    if not isinstance(name, str):
        from fastapi.exceptions import RequestValidationError

        raise RequestValidationError([{"type": "missing", "loc": ("body", "name"), "msg": "Field required"}
                                      if name is None else
                                      {"type": "string_type", "loc": ("body", "name"),
                                       "msg": "Input should be a valid string"}])
    return await run_in_threadpool(_forget, st, name)


def _forget(st: _State, name: str) -> dict:
    rec = st.recognizer
    fn = getattr(rec, "forget", None)
    if not callable(fn):
        raise HTTPException(501, "this model cannot forget characters: this animeid's recogniser has no forget()")
    name = _check_name(name, enroll=True)
    return change_model(st, rec, "forget", name, lambda: fn(name), {})


def change_model(st: _State, rec: Recognizer, verb: str, name: str, call: Callable[[], Any], extra: dict) -> dict:
    """The answer to an enrol or forget: ``call()`` changes the model (one change at a time;
    recognition goes on), then, with ``save_enrollments``, the model file is written before the
    next change starts. ``{"name", **extra, "characters", "result", "saved"}``."""
    try:
        with st._enroll_lock:
            out = call()
            st._guesses.clear()           # the label page's guesses came from the old model
            saved = save_model_file(st, rec)
    except CannotEnrollError as e:          # a model without an open-set layer: 501, as documented
        raise HTTPException(501, f"cannot {verb} {name!r}: {e.message}") from None
    except (AnimeidError, ValueError) as e:
        raise HTTPException(400, f"cannot {verb} {name!r}: {getattr(e, 'message', e)}") from None
    body = {"name": name, **extra, "characters": list(rec.labels)}
    if isinstance(out, dict):
        body["result"] = json.loads(json.dumps(out, default=str))
    return {**body, **saved}


def save_model_file(st: _State, rec: Recognizer) -> dict:
    """``{"saved": bool}`` after an enrol/forget: with ``save_enrollments``, the model is written to
    its file (atomically)."""
    if not st.settings.save_enrollments:
        return {"saved": False}
    mp = st.model_path
    try:
        rec.save(mp)
    except Exception as e:  # the change stays in memory; say so rather than fail the request
        log.error("%s: cannot save the model: %s", mp, e, exc_info=not isinstance(e, (OSError, AnimeidError)))
        why = e.strerror if isinstance(e, OSError) and e.strerror else getattr(e, "message", e)
        return {"saved": False, "save_error": f"{mp.name}: cannot save the model: {why}"}
    return {"saved": True}
