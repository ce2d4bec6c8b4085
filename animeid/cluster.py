"""Labelling help: group a workspace's unlabeled faces by identity, name whole groups, pre-label with a model.

* :func:`cluster_embeddings` -- the pure step: agglomerative clustering (complete linkage, cosine
  distance, cut at ``threshold``) of unit-length embeddings; groups smaller than ``min_size`` are
  left apart as noise (group ``-1``). :func:`purity` scores groups against true names.
* :func:`cluster_workspace` -- embeds the unlabeled faces of a workspace (with a model: its open-set
  embedding, :mod:`animeid.openset`, learned to separate identities; without one: ImageNet features +
  colour histogram), clusters them, stores the groups in the manifest (table ``face_groups``, one
  ``run`` per clustering) and optionally draws a contact sheet per group (``WS/.groups/``, a hidden
  folder that ``dataset sync`` ignores). Returns :class:`Group` objects, largest first.
* :func:`name_group` -- names every face of a group of the latest run at once (``dataset.label_faces``
  moves the crops into ``WS/<name>/``, so ``dataset sync`` / ``export`` see them).
* :func:`suggest` -- the model's guess and its probability for each unlabeled face (table
  ``suggestions``); ``accept`` moves the faces whose guess reaches ``min_p`` into their folders.

Manifest tables (created here with ``CREATE TABLE IF NOT EXISTS``; ``animeid.dataset`` needs no
change)::

    face_groups(face_id, group_id, run)         group_id -1: left apart (noise)
    cluster_runs(run, created, model, threshold, n_faces, n_groups)
    suggestions(face_id, name, p, model, created)   name 'unknown' for faces of no known character
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._util import bar_options, plural, progress as bar, stage
from .errors import DatasetError, InputError

__all__ = ["Group", "cluster_embeddings", "purity", "embed_faces", "default_threshold", "cluster_workspace",
           "latest_groups", "name_group", "group_labels", "suggest",
           "DEFAULT_THRESHOLD", "GROUPS_DIR", "CLUSTER_RULES"]

log = logging.getLogger("animeid")

#: Cosine distance at which groups stop merging, per embedding: the open-set embedding of a model
#: (whitened: distances are larger) and the plain ImageNet features + colour histogram, for complete
#: linkage. Chosen with ``bench/openset_bench.py --sweep --linkages average complete``: few labelling
#: actions at a purity near 95 % on holoen16-dev and newgame8; complete linkage keeps its purity as
#: the threshold grows, where average linkage suddenly merges characters (holoen16: 96 % at 0.9,
#: 44 % at 1.0).
DEFAULT_THRESHOLD = {"model": 1.0, "plain": 0.4}


def _rules() -> dict:
    from . import options as o

    return {"threshold": o.number(0.0, 2.0, lo_open=True, optional=True, what="a cosine distance"),
            "min_size": o.whole(1), "linkage": o.choice(("complete", "average", "single")),
            "min_p": o.share(), "batch_size": o.whole(1, 4096)}


#: what the options of :func:`cluster_workspace` and :func:`suggest` may be (:mod:`animeid.options`)
CLUSTER_RULES = _rules()
#: Where contact sheets go inside a workspace (hidden: ``dataset sync`` skips it).
GROUPS_DIR = ".groups"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS face_groups (
    face_id INTEGER NOT NULL,
    group_id INTEGER NOT NULL,      -- 1, 2, ... by size; -1: left apart (noise)
    run INTEGER NOT NULL,
    PRIMARY KEY (run, face_id)
);
CREATE INDEX IF NOT EXISTS face_groups_group ON face_groups(run, group_id);
CREATE TABLE IF NOT EXISTS cluster_runs (
    run INTEGER PRIMARY KEY,
    created TEXT, model TEXT, threshold REAL, n_faces INTEGER, n_groups INTEGER
);
CREATE TABLE IF NOT EXISTS suggestions (
    face_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    p REAL NOT NULL,
    model TEXT, created TEXT
);
"""


@dataclass
class Group:
    """One group of faces. ``id``: 1, 2, ... (largest first) or -1 for the faces left apart;
    ``guess``: the model's most common top-1 name among the faces (with a model), ``guess_share``:
    the share of faces guessed so; ``cohesion``: mean cosine similarity of the faces to the group's
    centre; ``sheet``: the contact sheet PNG when one was drawn."""

    id: int
    face_ids: list[int]
    files: list[Path]
    run: int | None = None
    cohesion: float | None = None
    guess: str | None = None
    guess_share: float | None = None
    sheet: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.face_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "face_ids": list(self.face_ids), "files": [str(f) for f in self.files],
                "run": self.run, "cohesion": self.cohesion, "guess": self.guess, "guess_share": self.guess_share,
                "sheet": str(self.sheet) if self.sheet else None}


# ----------------------------------------------------------------------------------------------
# the pure step
# ----------------------------------------------------------------------------------------------
def cluster_embeddings(E: np.ndarray, *, threshold: float, min_size: int = 2, linkage: str = "complete") -> np.ndarray:
    """Group ids ``(n,)`` for unit-length embeddings ``E`` ``(n, k)``: 1, 2, ... by decreasing size
    (ties: first face first), -1 for faces in groups smaller than ``min_size``.

    Agglomerative clustering with cosine distance: groups merge while their (``linkage``: complete,
    the default: the farthest pair of faces; average; single) distance is below ``threshold``.
    """
    E = np.asarray(E, dtype=np.float64)
    n = len(E)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.array([1 if min_size <= 1 else -1])
    from sklearn.cluster import AgglomerativeClustering

    raw = AgglomerativeClustering(n_clusters=None, distance_threshold=float(threshold), metric="cosine",
                                  linkage=linkage).fit_predict(E)
    sizes = Counter(raw.tolist())
    first = {}
    for i, c in enumerate(raw.tolist()):
        first.setdefault(c, i)
    order = sorted((c for c in sizes if sizes[c] >= min_size), key=lambda c: (-sizes[c], first[c]))
    remap = {c: i + 1 for i, c in enumerate(order)}
    return np.array([remap.get(c, -1) for c in raw.tolist()], dtype=np.int64)


def purity(groups: Sequence[int], truth: Sequence[str]) -> dict[str, float]:
    """How clean groups are against true names: ``purity`` (share of grouped faces that belong to
    their group's majority name), ``grouped`` (share of faces in a group), ``groups``, and
    ``actions``: user actions to label everything with the groups (name a group: 1, fix a face not
    of its group's majority: 1, label a face left apart: 1) next to ``actions_face_by_face``."""
    groups = np.asarray(groups)
    truth = np.asarray([str(t) for t in truth])
    g_ids = [g for g in np.unique(groups) if g != -1]
    majority = 0
    for g in g_ids:
        majority += Counter(truth[groups == g].tolist()).most_common(1)[0][1]
    grouped = int(np.sum(groups != -1))
    noise = int(np.sum(groups == -1))
    actions = len(g_ids) + (grouped - majority) + noise
    return {"purity": majority / grouped if grouped else 0.0, "grouped": grouped / len(groups) if len(groups) else 0.0,
            "groups": len(g_ids), "actions": actions, "actions_face_by_face": int(len(groups))}


# ----------------------------------------------------------------------------------------------
# workspaces
# ----------------------------------------------------------------------------------------------
def _open(ws: Any):
    from .dataset import Workspace

    w = ws if hasattr(ws, "conn") else Workspace(ws)
    with w.conn:
        w.conn.executescript(_SCHEMA)
    return w


def _recognizer(model: Any):
    if model is None:
        return None
    from .predict import Recognizer

    return model if isinstance(model, Recognizer) else Recognizer.load(model)


def _plain_embeddings(files: Sequence[Path], batch_size: int = 32) -> np.ndarray:
    """Embeddings without a model: EfficientNet-Lite0 features (+ mirror) joined with a colour histogram."""
    from .features import FeaturePipeline, FeatureSpec

    pipe = FeaturePipeline(FeatureSpec(kind="backbone", backbone="efficientnet_lite0", tta_flip=True, color_hist=True))
    X = pipe.transform(list(files), batch_size=batch_size)
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def embed_faces(files: Sequence[Path], model: Any = None, *, batch_size: int = 32) -> np.ndarray:
    """Unit-length identity embeddings ``(n, k)`` of face crops: a model's open-set embedding when it
    has one, else ImageNet features + colour histogram (feature cache used)."""
    rec = _recognizer(model)
    if rec is None or rec.openset is None:
        return _plain_embeddings(files, batch_size)
    from .features import FeaturePipeline
    from .openset import raw_features

    if rec.spec.kind == "backbone":          # the cached extractor gives the same numbers, faster on reruns
        F = raw_features(FeaturePipeline(rec.spec, rec.bundle.backbone).transform(list(files), batch_size=batch_size))
    else:
        F = rec._features(list(files), batch_size, True)[1]
    return rec.openset.embed(F)


def default_threshold(model: Any = None) -> float:
    """The clustering threshold for a model's embedding: the one calibrated when it was trained
    (halfway between typical same-character and different-character distances of characters it
    did not see), else :data:`DEFAULT_THRESHOLD`."""
    rec = _recognizer(model)
    if rec is None or rec.openset is None:
        return DEFAULT_THRESHOLD["plain"]
    return rec.openset.cluster_distance or DEFAULT_THRESHOLD["model"]


def _next_run(ws) -> int:
    row = ws.conn.execute("SELECT MAX(run) FROM face_groups").fetchone()
    row2 = ws.conn.execute("SELECT MAX(run) FROM cluster_runs").fetchone()
    return max(row[0] or 0, row2[0] or 0) + 1


def cluster_workspace(ws: str | os.PathLike | Any, model: Any = None, *, threshold: float | None = None,
                      min_size: int = 2, linkage: str = "complete", store: bool = True, sheets: bool = False,
                      batch_size: int = 32, progress: bool | None = False) -> list[Group]:
    """Group the unlabeled faces of workspace ``ws`` by identity; see the module's notes.

    ``model``: a model file or a :class:`~animeid.predict.Recognizer` (better groups, and each group
    gets the model's ``guess``), or None. ``threshold``: cosine distance at which groups stop
    merging (default: :func:`default_threshold`). ``store``: record the groups in the manifest as a
    new run (``dataset name`` uses the latest run). ``sheets``: draw ``WS/.groups/group-<id>.png``
    and ``WS/.groups/groups.png`` (one row per group). Returns the groups, largest first, then the
    faces left apart as one :class:`Group` with id -1 (when there are any). A bad option raises
    :class:`~animeid.errors.ConfigError` before any work.

    Parameters
    ----------
    ws : path or Workspace
        A workspace (``animeid collect`` or ``import`` made it).
    model : path or Recognizer, optional
        A model file or a loaded model; None: ImageNet EfficientNet-Lite0 features with the colour
        histogram.
    threshold : float, optional
        Cosine distance (0..2) at which groups stop merging; default :func:`default_threshold`.
    min_size : int, default 2
        Smallest group; faces in smaller ones are left apart (group -1).
    linkage : {"complete", "average", "single"}
        How the distance between two groups is measured.
    store : bool, default True
        Record the groups in the manifest as a new run (``dataset name`` uses the latest run).
    sheets : bool, default False
        Draw ``WS/.groups/group-<id>.png`` and ``WS/.groups/groups.png`` (one row per group).
    batch_size : int, default 32
        Faces per network run.
    progress : bool or None, default False
        As in :func:`animeid.train.train`.

    Returns
    -------
    list of Group
        ``id``, ``face_ids``, ``files``, ``run``, ``cohesion`` (mean cosine similarity to the centre),
        ``guess`` / ``guess_share`` (with a model), ``sheet``; ``[]`` when no unlabeled face is left.

    Raises
    ------
    ConfigError
        A bad ``threshold``, ``min_size``, ``linkage`` or ``batch_size``.
    DatasetError
        ``ws`` is not a workspace.
    ModelFileError
        The model file cannot be read.
    OutputError
        With ``sheets``, ``WS/.groups`` cannot take the sheets (a file, not a folder, ...); a PNG
        there that animeid did not draw is never replaced.

    Examples
    --------
    >>> groups = cluster_workspace("ws", "characters.animeid", sheets=True)
    >>> [(g.id, g.size, g.guess) for g in groups[:2]]
    [(1, 42, 'aoba'), (2, 17, 'hifumi')]
    >>> name_group("ws", 1, "aoba")
    42
    """
    threshold, min_size, linkage, batch_size = (CLUSTER_RULES[k].check(k, v) for k, v in (
        ("threshold", threshold), ("min_size", min_size), ("linkage", linkage), ("batch_size", batch_size)))
    rec = _recognizer(model)
    w = _open(ws)
    try:
        rows = w.faces(labeled=False)
        rows = [r for r in rows if (w.root / r["file"]).is_file()]
        if not rows:
            return []
        sheet_dir = _claim_sheets(w.root) if sheets else None     # checked before the work
        files = [w.root / r["file"] for r in rows]
        ids = [int(r["id"]) for r in rows]
        t0 = time.perf_counter()
        parts, guesses = [], ([] if rec is not None else None)
        starts = range(0, len(files), 256)
        for s in bar(starts, total=len(starts), desc="embedding faces", unit="chunk",
                     disable=bar_options(progress)["disable"]):
            parts.append(embed_faces(files[s:s + 256], rec, batch_size=batch_size))
            if rec is not None:       # the model's guess of each face
                guesses += [r["name"] for r in rec.identify_faces(files[s:s + 256], top=1)]
        E = np.concatenate(parts)
        stage(f"cluster: {plural(len(files), 'face')} embedded, {time.perf_counter() - t0:.0f} s", progress,
              on_terminal=False)
        thr = float(threshold) if threshold is not None else default_threshold(rec)
        gid = cluster_embeddings(E, threshold=thr, min_size=min_size, linkage=linkage)
        run = _next_run(w) if store else None
        groups: list[Group] = []
        for g in sorted(set(gid.tolist()), key=lambda v: (v == -1, v)):
            m = np.flatnonzero(gid == g)
            centre = E[m].mean(axis=0)
            cn = np.linalg.norm(centre)
            grp = Group(id=int(g), face_ids=[ids[i] for i in m], files=[files[i] for i in m], run=run,
                        cohesion=round(float((E[m] @ (centre / cn)).mean()), 4) if cn > 0 and g != -1 else None)
            if guesses is not None and g != -1:
                top, cnt = Counter(guesses[i] for i in m).most_common(1)[0]
                grp.guess, grp.guess_share = top, round(cnt / len(m), 4)
            groups.append(grp)
        if store:
            created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            mname = str(rec.path) if rec is not None and rec.path is not None else None
            with w.conn:
                w.conn.execute("INSERT INTO cluster_runs VALUES (?,?,?,?,?,?)",
                               (run, created, mname, thr, len(ids), sum(1 for g in groups if g.id != -1)))
                w.conn.executemany("INSERT INTO face_groups(face_id, group_id, run) VALUES (?,?,?)",
                                   [(ids[i], int(gid[i]), run) for i in range(len(ids))])
        if sheet_dir is not None:
            _draw_sheets(sheet_dir, groups)
        return groups
    finally:
        if w is not ws:
            w.close()


def _old_sheet(folder: Path, rel: str) -> bool:
    """A sheet of an animeid that wrote no .animeid-output marker into WS/.groups/: a sheet's name *and*
    animeid's tag in the PNG (a user's ``group-01.png`` there is never taken for one)."""
    from .outputs import is_animeid_png

    return "/" not in rel and (rel in ("groups.png", "left-apart.png") or
                               (rel.startswith("group-") and rel.endswith(".png"))) and is_animeid_png(folder / rel)


def _claim_sheets(root: Path):
    """WS/.groups/ claimed for the sheets: the earlier sheets are replaced, anything else there is refused."""
    from .outputs import prepare_output_dir

    folder = root / GROUPS_DIR
    return prepare_output_dir(folder, "cluster", overwrite=True, legacy=lambda rel: _old_sheet(folder, rel),
                              remedy="move those files out of it, or pass --no-sheets", in_workspace=True)


def _draw_sheets(od: Any, groups: list[Group], per_row: int = 12, rows: int = 4) -> None:
    from .dataset import contact_sheet

    od.clear()                      # only the earlier run's sheets
    d = od.path
    overview: dict[str, list[Path]] = {}
    width = len(str(max([g.id for g in groups] + [1])))
    for g in groups:
        name = f"group {g.id:0{width}d}" if g.id != -1 else "left apart"
        if g.guess:
            name += f" ({g.guess}?)"
        overview[name] = g.files
        chunks = {f"{name} #{i // per_row + 1}": g.files[i:i + per_row]
                  for i in range(0, min(len(g.files), per_row * rows), per_row)}
        g.sheet = contact_sheet(chunks, d / (f"group-{g.id}.png" if g.id != -1 else "left-apart.png"),
                                per_character=per_row)
    contact_sheet(overview, d / "groups.png", per_character=per_row)
    od.finish()


def latest_groups(ws: str | os.PathLike | Any) -> tuple[int | None, dict[int, list[int]]]:
    """``(run, {group_id: [face ids]})`` of the latest clustering of ``ws`` (``(None, {})`` if none)."""
    w = _open(ws)
    try:
        run = w.conn.execute("SELECT MAX(run) FROM face_groups").fetchone()[0]
        if run is None:
            return None, {}
        out: dict[int, list[int]] = {}
        for fid, g in w.conn.execute("SELECT face_id, group_id FROM face_groups WHERE run=? ORDER BY face_id", (run,)):
            out.setdefault(int(g), []).append(int(fid))
        return int(run), out
    finally:
        if w is not ws:
            w.close()


def name_group(ws: str | os.PathLike, group: int, name: str, *, run: int | None = None) -> int:
    """Name every still-unlabeled face of ``group`` (of the latest clustering, or ``run``) ``name``:
    the crops move into ``WS/<name>/`` (:func:`animeid.dataset.label_faces`).

    Parameters
    ----------
    ws : path
        The workspace.
    group : int
        A group id of :func:`cluster_workspace` (1, 2, ...; -1 is refused).
    name : str
        The character's name (a folder name of the workspace).
    run : int, optional
        The clustering run; default the latest.

    Returns
    -------
    int
        The faces labelled.

    Raises
    ------
    DatasetError
        Not a workspace, no clustering run yet, or a name that cannot be a character's folder.
    InputError
        Group -1 (faces left apart), or no such group in the run.

    Examples
    --------
    >>> name_group("ws", 3, "aoba")
    12
    """
    from .dataset import Workspace, label_faces

    with _open(Workspace(ws)) as w:
        if run is None:
            run = w.conn.execute("SELECT MAX(run) FROM face_groups").fetchone()[0]
            if run is None:
                raise DatasetError("no groups yet: run `animeid cluster` first", w.root)
        if int(group) == -1:
            raise InputError("group -1 holds the faces left apart, which are not one character: label them one by one")
        ids = [int(r[0]) for r in w.conn.execute(
            "SELECT g.face_id FROM face_groups g JOIN faces f ON f.id = g.face_id WHERE g.run=? AND g.group_id=? "
            "AND f.status='ok' AND f.label IS NULL ORDER BY g.face_id", (run, int(group)))]
        known = w.conn.execute("SELECT COUNT(*) FROM face_groups WHERE run=? AND group_id=?",
                               (run, int(group))).fetchone()[0]
    if not known:
        raise InputError(f"no group {group} in clustering run {run}")
    return label_faces(ws, ids, name) if ids else 0


def group_labels(ws: str | os.PathLike, group: int, *, run: int | None = None) -> dict[str, int]:
    """What the faces of ``group`` (of the latest clustering, or ``run``) are now: ``{name: count}``
    for labelled faces, ``""`` for still unlabeled ones, ``"(deleted)"`` for rejected ones."""
    from .dataset import Workspace

    with _open(Workspace(ws)) as w:
        if run is None:
            run = w.conn.execute("SELECT MAX(run) FROM face_groups").fetchone()[0]
        out: dict[str, int] = {}
        for label, status in w.conn.execute(
                "SELECT f.label, f.status FROM face_groups g JOIN faces f ON f.id = g.face_id "
                "WHERE g.run=? AND g.group_id=?", (run, int(group))):
            key = "(deleted)" if status != "ok" else (label or "")
            out[key] = out.get(key, 0) + 1
    return out


def suggest(ws: str | os.PathLike, model: Any, *, min_p: float = 0.9, accept: bool = False,
            batch_size: int = 32, progress: bool | None = False) -> dict[str, Any]:
    """The model's top-1 guess and probability for each unlabeled face of ``ws``, stored in the
    manifest's ``suggestions`` table. ``accept``: faces whose guess reaches ``min_p`` (and is not
    ``unknown``) are labelled with it (crops moved).

    Parameters
    ----------
    ws : path or Workspace
        The workspace.
    model : path or Recognizer
        A model file or a loaded model.
    min_p : float, default 0.9
        The top-1 probability (0..1) from which a guess counts as confident.
    accept : bool, default False
        Label the confident faces with their guess.
    batch_size : int, default 32
        Faces per network run.
    progress : bool or None, default False
        As in :func:`animeid.train.train`.

    Returns
    -------
    dict
        ``{"faces", "confident", "accepted", "by_name": {name: [confident, all]}, "doubtful": [face
        ids], "min_p"}`` (``by_name`` includes ``"unknown"`` for faces of no known character).

    Raises
    ------
    InputError
        No model given.
    ConfigError
        A bad ``min_p`` or ``batch_size``.
    DatasetError
        ``ws`` is not a workspace.
    ModelFileError
        The model file cannot be read.

    Examples
    --------
    >>> s = suggest("ws", "characters.animeid", min_p=0.9, accept=True)
    >>> s["accepted"], s["by_name"]["aoba"]
    (40, [40, 44])
    """
    from .dataset import label_faces
    from .openset import UNKNOWN

    min_p = CLUSTER_RULES["min_p"].check("min_p", min_p)
    batch_size = CLUSTER_RULES["batch_size"].check("batch_size", batch_size)
    rec = _recognizer(model)
    if rec is None:
        raise InputError("suggest needs a model")
    w = _open(ws)
    try:
        rows = [r for r in w.faces(labeled=False) if (w.root / r["file"]).is_file()]
        ids = [int(r["id"]) for r in rows]
        files = [w.root / r["file"] for r in rows]
        verdicts = []
        t0 = time.perf_counter()
        starts = range(0, len(files), 256)
        for i in bar(starts, total=len(starts), desc="guessing", unit="chunk", disable=bar_options(progress)["disable"]):
            verdicts += rec.identify_faces(files[i:i + 256], top=1)
        stage(f"suggest: {plural(len(files), 'face')} guessed, {time.perf_counter() - t0:.0f} s", progress,
              on_terminal=False)
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        mname = str(rec.path) if rec.path is not None else None
        # an unknown face: name 'unknown', p its closest character's probability
        rows_out = [(fid, v["name"], float(v["candidates"][0]["p"]), mname, created) for fid, v in zip(ids, verdicts)]
        with w.conn:
            w.conn.executemany("INSERT OR REPLACE INTO suggestions(face_id, name, p, model, created) VALUES (?,?,?,?,?)",
                               rows_out)
    finally:
        w.close()
    by_name: dict[str, list[int]] = {}
    confident: dict[str, list[int]] = {}
    doubtful = []
    for fid, name, p, _, _ in rows_out:
        by_name.setdefault(name, [0, 0])[1] += 1
        if name != UNKNOWN and p >= min_p:
            by_name[name][0] += 1
            confident.setdefault(name, []).append(fid)
        else:
            doubtful.append(fid)
    accepted = 0
    if accept:
        for name, fids in confident.items():
            accepted += label_faces(ws, fids, name)
    return {"faces": len(rows_out), "confident": sum(len(v) for v in confident.values()), "accepted": accepted,
            "by_name": by_name, "doubtful": doubtful, "min_p": min_p}
