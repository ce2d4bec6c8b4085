"""Workspace routes (the label page): counts, unlabeled faces grouped by identity a page at a time,
face crops by manifest id, naming faces."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ..errors import InputError
from .schemas import LabelRequest, errors
from .state import _MEDIA, _State, get_state
from .uploads import _check_name, _inside, form_or_json

log = logging.getLogger("animeid")
router = APIRouter(tags=["workspace"])


@router.get("/api/v1/workspace", responses=errors(404), summary="Counts of the workspace's faces")
def workspace_info(st: _State = Depends(get_state)):
    with st.open_workspace() as ws:
        rows = ws.conn.execute("SELECT label, COUNT(*) FROM faces WHERE status='ok' GROUP BY label").fetchall()
    chars = {r[0]: r[1] for r in rows if r[0] is not None}
    unlabeled = sum(r[1] for r in rows if r[0] is None)
    return {"name": st.workspace.name, "faces": unlabeled + sum(chars.values()), "unlabeled": unlabeled,
            "labeled": sum(chars.values()), "characters": dict(sorted(chars.items()))}


def guesses(st: _State, rows: list) -> dict[int, tuple[str, float]]:
    """The model's top-1 for each face row (cached by id); unreadable crops are left out."""
    from ..timeline import face_identity

    todo = [r for r in rows if r["id"] not in st._guesses]
    paths, ids = [], []
    for r in todo:
        try:
            p = _inside(st.workspace, r["file"])
        except HTTPException:
            continue
        if p.is_file():
            paths.append(p)
            ids.append(r["id"])
    rec = st.recognizer
    for i in range(0, len(paths), 64):
        try:
            verdicts = rec.identify_faces(paths[i:i + 64], top=1)
        except InputError:
            verdicts = []
            for p in paths[i:i + 64]:
                try:
                    verdicts.extend(rec.identify_faces([p], top=1))
                except InputError:
                    verdicts.append(None)
        for fid, v in zip(ids[i:i + 64], verdicts):
            if v:
                st._guesses[fid] = face_identity(v)
    return {r["id"]: st._guesses[r["id"]] for r in rows if r["id"] in st._guesses}

def cluster_groups(st: _State, unlabeled_ids: list[int]) -> tuple[list[list[int]], str, set[int]] | None:
    """Groups from ``animeid.cluster.cluster_workspace`` when it exists (cached), else None; with the
    ids of the faces the clustering left apart (each shown as a group of one: they are not one
    character)."""
    try:
        from .. import cluster as _cluster
    except ImportError:
        return None
    fn = getattr(_cluster, "cluster_workspace", None)
    if not callable(fn):
        return None
    key = frozenset(unlabeled_ids)
    with st._groups_lock:
        cached = st._groups_cache
        if cached is None or not key <= cached[0]:
            try:
                try:
                    raw = fn(st.workspace, model=st.recognizer)
                except TypeError:
                    raw = fn(st.workspace, model=st.model_path)
                groups, apart = _normalise_groups(raw)
            except Exception as e:  # noqa: BLE001 - fall back to manifest order
                log.warning("clustering the workspace failed (%s: %s); faces shown in manifest order",
                            type(e).__name__, e)
                return None
            cached = st._groups_cache = (key, groups, apart)
    groups = [[i for i in g if i in key] for g in cached[1]]
    grouped = {i for g in groups for i in g}
    rest = [i for i in unlabeled_ids if i not in grouped]
    groups = [g for g in groups if g] + [[i] for i in rest]
    return groups, "cluster", cached[2] & key


@router.get("/api/v1/workspace/groups", responses=errors(404, 422),
         summary="Unlabeled faces grouped by identity, a page at a time",
         description="Groups come from `animeid.cluster` when it is installed; otherwise faces are taken in "
                     "manifest order, a page at a time, and grouped by the model's guess. Each group has "
                     "the model's `suggestion` (the most common top-1 name among its faces). Faces the "
                     "clustering left apart (like no other face closely enough) are not one character: "
                     "each is a group of its own, with `left_apart: true`.")
def workspace_groups(page: int = Query(0, ge=0, le=1_000_000), st: _State = Depends(get_state)):
    with st.open_workspace() as ws:
        rows = ws.conn.execute(
            "SELECT id, file FROM faces WHERE status='ok' AND label IS NULL ORDER BY id").fetchall()
    by_id = {r["id"]: r for r in rows}
    clustered = cluster_groups(st, list(by_id))
    apart: set[int] = set()
    if clustered is not None:
        groups_all, how, apart = clustered
        pages, cur, n = [], [], 0
        for g in groups_all:
            if cur and n + len(g) > st.settings.page_faces:
                pages.append(cur)
                cur, n = [], 0
            cur.append(g)
            n += len(g)
        if cur:
            pages.append(cur)
        n_pages = len(pages)
        chosen = pages[page] if page < n_pages else []
        g_rows = [[by_id[i] for i in g] for g in chosen]
        guess = guesses(st, [r for g in g_rows for r in g])
    else:
        how = "model guess"
        n_pages = (len(rows) + st.settings.page_faces - 1) // st.settings.page_faces
        chunk = rows[page * st.settings.page_faces:(page + 1) * st.settings.page_faces]
        guess = guesses(st, chunk)
        buckets: dict[str, list] = {}
        for r in chunk:
            buckets.setdefault(guess.get(r["id"], ("?", 0.0))[0], []).append(r)
        g_rows = sorted(buckets.values(), key=lambda g: (-len(g), g[0]["id"]))
    out = []
    for k, g in enumerate(g_rows):
        names = Counter(guess[r["id"]][0] for r in g if r["id"] in guess)
        sugg = None
        if names:
            top_name, cnt = names.most_common(1)[0]
            ps = [guess[r["id"]][1] for r in g if guess.get(r["id"], ("",))[0] == top_name]
            sugg = {"name": top_name, "p": round(sum(ps) / len(ps), 4), "share": round(cnt / len(g), 3)}
        out.append({"key": f"p{page}g{k}", "suggestion": sugg,
                    "left_apart": len(g) == 1 and g[0]["id"] in apart, "faces": [
            {"id": r["id"], "url": f"/api/v1/faces/{r['id']}/crop",
             "guess": ({"name": guess[r["id"]][0], "p": round(guess[r["id"]][1], 4)} if r["id"] in guess else None)}
            for r in g]})
    return {"grouping": how, "page": page, "pages": n_pages, "unlabeled": len(rows), "groups": out}

@router.get("/api/v1/faces/{face_id}/crop", summary="A face crop from the workspace, by id",
         responses=errors(403, 404, 422),
         response_class=FileResponse)
def face_crop(face_id: int, st: _State = Depends(get_state)):
    root = st.need_workspace()
    with st.open_workspace() as ws:
        row = ws.conn.execute("SELECT file FROM faces WHERE id=?", (face_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no face with id {face_id} in the workspace")
    p = _inside(root, row["file"])
    if not p.is_file():
        raise HTTPException(404, f"the crop of face {face_id} is missing from the workspace")
    return FileResponse(p, media_type=_MEDIA.get(p.suffix.lower(), "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=60"})

_LABEL_BODY = {"required": True, "content": {
    "application/json": {"schema": LabelRequest.model_json_schema()},
    **{ct: {"schema": {"type": "object", "required": ["ids", "name"], "properties": {
        "ids": {"type": "array", "items": {"type": "integer"},
                "description": "face ids (the field repeated, or one field of comma-separated ids)"},
        "name": {"type": "string", "maxLength": 200, "description": "character name; empty un-labels"}}}}
       for ct in ("application/x-www-form-urlencoded", "multipart/form-data")}}}


@router.post("/api/v1/workspace/label", responses=errors(400, 403, 404, 415, 422), openapi_extra={"requestBody": _LABEL_BODY},
             summary="Name faces (moves their crops into the character's folder and records it in the manifest)",
             description="JSON `{\"ids\": [1, 2], \"name\": \"aoba\"}` (`name: null` un-labels), or the same "
                         "as form fields, like `/api/v1/forget` (`ids` repeated or comma-separated; an empty `name` "
                         "un-labels; `name` must be sent).")
async def label(request: Request, st: _State = Depends(get_state)):
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    st.need_workspace()
    body = await form_or_json(request)
    if not request.headers.get("content-type", "").startswith("application/json"):   # a form: text fields
        ids = body.get("ids", [])
        ids = [x for part in (ids if isinstance(ids, list) else [ids]) for x in str(part).split(",") if x.strip()]
        if "name" not in body:     # as in JSON, un-labelling is said, not implied by a forgotten field
            from fastapi.exceptions import RequestValidationError

            raise RequestValidationError([{"type": "missing", "loc": ("body", "name"), "msg": "Field required"}])
        body = {"ids": ids, "name": body.get("name") or None}
    try:
        req = LabelRequest.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors()]) from None
    return await run_in_threadpool(_label, st, req)


def _label(st: _State, req: LabelRequest) -> dict:
    from ..dataset import label_faces

    name = _check_name(req.name) if req.name is not None else None
    ids = list(dict.fromkeys(req.ids))
    with st.open_workspace() as ws:
        found = {r[0] for r in ws.conn.execute(
            f"SELECT id FROM faces WHERE status='ok' AND id IN ({','.join('?' * len(ids))})", ids)}
        rows = ws.conn.execute(
            f"SELECT file FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
    missing = [i for i in ids if i not in found]
    if missing:
        raise HTTPException(404, f"no face with id {', '.join(map(str, missing[:10]))} in the workspace")
    for r in rows:
        _inside(st.workspace, r["file"])      # never move a file the manifest places outside the workspace
    n = label_faces(st.workspace, ids, name)
    with st.open_workspace() as ws:
        left = ws.conn.execute("SELECT COUNT(*) FROM faces WHERE status='ok' AND label IS NULL").fetchone()[0]
    return {"labelled": n, "name": name, "unlabeled": left}


def _normalise_groups(raw: Any) -> tuple[list[list[int]], set[int]]:
    """Face-id groups from whatever ``cluster_workspace`` returns (lists, dicts, objects), and the ids
    of the faces it left apart: the group with id -1 (:class:`animeid.cluster.Group`, or a dict's
    ``id`` / ``group_id``, or the key -1 of a ``{group id: faces}`` dict) holds faces that matched no
    other face, possibly of different characters, so each becomes a group of its own."""
    if isinstance(raw, dict) and "groups" in raw:
        raw = raw["groups"]
    if isinstance(raw, dict):
        raw = [{"id": k, "face_ids": v} for k, v in raw.items()]
    groups: list[list[int]] = []
    apart: set[int] = set()
    for g in raw or []:
        gid = (g.get("id", g.get("group_id")) if isinstance(g, dict)
               else getattr(g, "id", getattr(g, "group_id", None)))
        for attr in ("face_ids", "ids", "faces"):
            if isinstance(g, dict) and attr in g:
                g = g[attr]
                break
            if not isinstance(g, dict) and hasattr(g, attr):
                g = getattr(g, attr)
                break
        ids = []
        for x in g:
            x = x.get("id") if isinstance(x, dict) else getattr(x, "id", x)
            ids.append(int(x))
        try:
            left_apart = int(gid) == -1
        except (TypeError, ValueError):
            left_apart = False
        if left_apart:
            apart.update(ids)
            groups.extend([i] for i in ids)
        else:
            groups.append(ids)
    return groups, apart
