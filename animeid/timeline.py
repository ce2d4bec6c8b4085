"""Who appears when in a video: sampled frames, named faces, time ranges per character.

    >>> tl = build_timeline("characters.animeid", "episode01.mkv", every=2)      # doctest: +SKIP
    >>> tl["characters"]["aoba"]                                                   # doctest: +SKIP
    [{'start': 12.0, 'end': 30.0, 'n': 10, 'mean_p': 0.91}, ...]

Structure
---------
* :func:`build_timeline` - the library call the CLI (``animeid timeline``) and the web app
  (``POST /api/v1/timeline``) both make: the frame shown every ``every`` seconds, as ffmpeg's
  ``fps=1/every`` takes it, upright and at its display aspect (:func:`animeid.video.sample_frames`:
  variable frame rates, rotation metadata and anamorphic pixels), faces found and named in batches of frames
  (:meth:`animeid.predict.Recognizer.predict_batch`), then :func:`merge_sightings`.
* :func:`merge_sightings` - pure: per-frame faces -> ``{name: [range, ...]}``.
* :func:`face_identity` - the name a face counts as (``"unknown"`` for open-set answers).
* :func:`plot_timeline` - a PNG, one row per character (matplotlib, written atomically).

The result
----------
``{"video", "duration", "every", "characters": {name: [{"start", "end", "n", "mean_p"}]},
"frames": [{"time", "faces": [{"box", "name", "p"}]}], "partial", "error", "truncated"}``

* frame times are the sample times ``0, every, 2 * every, ...``: a picture held on screen over
  several sample times (variable frame rate) is seen at each of them;
* a *sighting* is a sampled frame in which at least one face is named ``name`` (two faces of one
  character in one frame count once, with the higher ``p``);
* sightings of one name are merged into one range while consecutive sightings are at most
  ``gap`` seconds apart (default ``1.5 * every``: consecutive samples merge, one missed sample
  splits); ``start`` / ``end`` are the times of the first / last sighting of the range (a single
  sighting has ``start == end``), ``n`` the number of sightings, ``mean_p`` their mean top
  probability;
* characters are ordered by first appearance; faces answered ``unknown`` by an open-set model
  are grouped under ``"unknown"``;
* frames are searched with ``detect="always"``: a frame without a face names nobody (a still
  picture, by contrast, is taken as a face crop when no face is found in it);
* a video that breaks off part way gives the ranges of the frames before the break; one with
  damaged data in the middle, where decoding went on after it, gives the ranges of the frames
  before and after the damage. Both have ``partial: true`` and an ``error`` that says which of
  the two happened and up to when the video was read; ``max_frames`` stops early with
  ``truncated: true``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._util import plural
from .errors import InputError

__all__ = ["UNKNOWN", "build_timeline", "merge_sightings", "face_identity", "plot_timeline", "format_time",
           "summary_lines"]

#: The name under which faces an open-set model does not know are grouped.
UNKNOWN = "unknown"

#: ``progress(done_seconds, duration_or_None, frames_done)``; may raise to stop the work.
ProgressCallback = Callable[[float, "float | None", int], None]


def face_identity(face: Mapping[str, Any]) -> tuple[str, float]:
    """``(name, p)`` a predicted face counts as: its verdict ``name`` (:data:`UNKNOWN` for a face of no
    known character) and its top candidate's probability (for an unknown face, its closest character's).

    Answers without a verdict (older servers) count as unknown when the face is marked ``"unknown":
    true``, or its top candidate is named ``"unknown"`` (or ``None``) or marked ``"unknown": true``.
    """
    cands = face.get("candidates") or []
    top = cands[0] if cands else {}
    p = float(top.get("p", 0.0) or 0.0)
    name = face.get("name", top.get("name"))
    if face.get("unknown") or top.get("unknown") or top.get("name") == UNKNOWN or name is None or name == UNKNOWN:
        return UNKNOWN, p
    return str(name), p


def merge_sightings(frames: Sequence[Mapping[str, Any]], every: float, gap: float | None = None
                    ) -> dict[str, list[dict[str, Any]]]:
    """Time ranges per name from ``frames`` (``[{"time", "faces": [{"name", "p"}]}]``, any order).

    See the module docstring for the rule. Names are ordered by first sighting.
    """
    if not every > 0:
        raise ValueError(f"every must be > 0, got {every!r}")
    gap = 1.5 * every if gap is None else float(gap)
    seen: dict[str, dict[float, float]] = {}       # name -> {time: best p}
    for fr in sorted(frames, key=lambda f: float(f["time"])):
        t = float(fr["time"])
        for face in fr.get("faces", []):
            name, p = face["name"], float(face["p"])
            times = seen.setdefault(name, {})
            times[t] = max(p, times.get(t, 0.0))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, times in seen.items():
        ranges: list[dict[str, Any]] = []
        cur: list[tuple[float, float]] = []
        for t in sorted(times):
            if cur and t - cur[-1][0] > gap + 1e-9:
                ranges.append(_range(cur))
                cur = []
            cur.append((t, times[t]))
        if cur:
            ranges.append(_range(cur))
        out[name] = ranges
    return out


def _range(points: list[tuple[float, float]]) -> dict[str, Any]:
    return {"start": round(points[0][0], 3), "end": round(points[-1][0], 3), "n": len(points),
            "mean_p": round(sum(p for _, p in points) / len(points), 4)}


def build_timeline(model: Any, video: str | os.PathLike, *, every: float = 2.0, cfg: Any = None,
                   gap: float | None = None, batch_frames: int = 8, max_frames: int | None = None,
                   progress: ProgressCallback | None = None, thumbnails: bool = True) -> dict[str, Any]:
    """The timeline of ``video`` (see the module docstring) with ``model`` (a model file, or a
    :class:`~animeid.predict.Recognizer` or any object with its ``predict_batch``).

    ``thumbnails``: add ``"thumbnails"``, ``{name: "data:image/jpeg;base64,..."}``: each named
    character's face (64x64) from the frame where it was named with the highest probability.

    Parameters
    ----------
    model : path or Recognizer
        A model file, or a loaded model (any object with ``predict_batch``).
    video : path
        A video file (anything PyAV decodes); an animated picture works too.
    every : float, default 2.0
        Seconds between sampled frames (> 0).
    cfg : PredictConfig, optional
        Detection and naming options; default ``PredictConfig(detect="always")`` (top 3).
    gap : float, optional
        Seconds between sightings of one character still merged into one range; default
        ``1.5 * every``.
    batch_frames : int, default 8
        Frames named per :meth:`~animeid.predict.Recognizer.predict_batch` call.
    max_frames : int, optional
        Stop after this many sampled frames (the result says ``truncated``).
    progress : callable, optional
        ``progress(done_seconds, duration, frames_done)``, called once at the start and after each
        batch; an exception it raises stops the work and propagates.
    thumbnails : bool, default True
        Add ``"thumbnails"``, ``{name: "data:image/jpeg;base64,..."}``: each named character's face
        (64x64 px) from the frame where it was named with the highest probability.

    Returns
    -------
    dict
        ``{"video", "duration" (s), "every" (s), "characters": {name: [{"start", "end" (s), "n",
        "mean_p"}]}, "frames": [{"time", "faces": [{"box", "name", "p"}]}], "partial", "error",
        "truncated"}`` and ``"thumbnails"`` (see the module's notes). A video damaged part way gives
        what could be read, with ``partial: true`` and ``error``.

    Raises
    ------
    InputError
        The file is not a readable video.
    ConfigError
        A bad ``every``.
    ModelFileError
        The model file cannot be read.

    Examples
    --------
    >>> tl = build_timeline("characters.animeid", "episode01.mkv", every=2)
    >>> tl["characters"]["aoba"][0]
    {'start': 12.0, 'end': 30.0, 'n': 10, 'mean_p': 0.91}
    >>> plot_timeline(tl, "episode01.png")
    PosixPath('episode01.png')
    """
    from .predict import PredictConfig, Recognizer
    from .video import PartialVideoError, probe, sample_frames

    from .options import SECONDS

    every = SECONDS.check("every", every)           # ConfigError before the video is opened
    rec = model if hasattr(model, "predict_batch") else Recognizer.load(model)
    cfg = cfg or PredictConfig(detect="always")
    info = probe(video)                                # InputError for a non-video, before any work
    duration = info.duration
    result: dict[str, Any] = {"video": os.fspath(video), "duration": duration, "every": float(every),
                              "characters": {}, "frames": [], "partial": False, "error": None,
                              "truncated": False}
    frames: list[dict[str, Any]] = result["frames"]
    batch: list[Any] = []
    best: dict[str, tuple[float, Any]] = {}     # name -> (p, face crop): the clearest sighting of each

    def flush() -> None:
        if not batch:
            return
        named = rec.predict_batch([fr.image for fr in batch], cfg)
        for fr, res in zip(batch, named):
            faces = []
            for face in res["faces"]:
                name, p = face_identity(face)
                faces.append({"box": face["box"], "name": name, "p": round(p, 4)})
                if thumbnails and name != UNKNOWN and p > best.get(name, (-1.0, None))[0]:
                    x0, y0, x1, y1 = face["box"]
                    best[name] = (p, np.asarray(fr.image)[y0:y1, x0:x1].copy())
            frames.append({"time": round(fr.time, 3), "faces": faces})
        batch.clear()
        if progress is not None:
            progress(frames[-1]["time"], duration, len(frames))

    if progress is not None:
        progress(0.0, duration, 0)
    it = sample_frames(video, every)
    try:
        for fr in it:
            if max_frames is not None and len(frames) + len(batch) >= max_frames:
                result["truncated"] = True
                break
            batch.append(fr)
            if len(batch) >= max(1, batch_frames):
                flush()
        flush()
    except PartialVideoError as e:
        flush()
        result["partial"], result["error"] = True, e.message
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if not frames and not result["truncated"]:
        raise InputError(result["error"] or "no frame could be sampled from the video", video)
    if result["duration"] is None and frames:
        result["duration"] = frames[-1]["time"]
    result["characters"] = merge_sightings(frames, every, gap)
    if thumbnails:
        from .thumbnails import data_url

        result["thumbnails"] = {name: data_url(crop) for name, (_, crop) in best.items() if crop.size}
    return result


def format_time(t: float) -> str:
    """``75.5`` -> ``"1:15.5"``; ``3725`` -> ``"1:02:05"``."""
    t = max(0.0, float(t))
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s:04.1f}" if abs(s - round(s)) > 0.05 else f"{int(round(s)):02d}"
    return f"{int(h)}:{int(m):02d}:{sec}" if h else f"{int(m)}:{sec}"


def _order(characters: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """By first appearance, ``unknown`` last."""
    names = sorted(characters, key=lambda n: (n == UNKNOWN, min((r["start"] for r in characters[n]), default=0), n))
    return names


def plot_timeline(timeline: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write ``timeline`` as a PNG: one row per character, a bar per range.

    A range is drawn from half a sample interval before its first sighting to half one after its
    last (clipped to the video), so that a single sighting shows as a bar one interval wide.

    Parameters
    ----------
    timeline : dict
        :func:`build_timeline`'s result (its ``thumbnails``, when present, label the rows).
    path : path
        The PNG to write (atomically).
    title : str, optional
        Default: the video's file name.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ModuleNotFoundError
        matplotlib is not installed (``pip install 'animeid[plot]'``).

    Examples
    --------
    >>> plot_timeline(build_timeline("characters.animeid", "ep01.mkv"), "ep01.png")
    PosixPath('ep01.png')
    """
    from matplotlib.figure import Figure

    from ._plot import plot_fonts, save_png

    chars = timeline.get("characters") or {}
    every = float(timeline.get("every") or 1.0)
    frames = timeline.get("frames") or []
    end = float(timeline.get("duration") or 0.0)
    end = max([end] + [r["end"] + every / 2 for rs in chars.values() for r in rs] + [1.0])
    names = _order(chars)
    with plot_fonts():
        fig = Figure(figsize=(11, 1.4 + 0.42 * max(1, len(names))))
        ax = fig.add_subplot(1, 1, 1)
        colors = [f"C{i % 10}" for i in range(len(names))]
        for row, name in enumerate(names):
            spans = [(max(0.0, r["start"] - every / 2), min(end, r["end"] + every / 2)) for r in chars[name]]
            ax.broken_barh([(a, max(b - a, every / 4)) for a, b in spans], (row - 0.35, 0.7),
                           facecolors="0.6" if name == UNKNOWN else colors[row], alpha=0.9)
        ax.set_yticks(range(len(names)), labels=[
            f"{n} ({sum(r['n'] for r in chars[n])})" for n in names])
        ax.set_ylim(len(names) - 0.5 if names else 0.5, -0.5)
        ax.set_xlim(0, end)
        ticks = _nice_ticks(end)
        ax.set_xticks(ticks, labels=[format_time(t) for t in ticks])
        ax.set_xlabel(f"time (a frame every {every:g} s; {len(frames)} frames)")
        ax.grid(axis="x", alpha=0.3)
        _thumbs_on_rows(ax, names, timeline.get("thumbnails") or {})
        if not names:
            ax.text(0.5, 0.5, "no character seen", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_title(title or Path(str(timeline.get("video", "video"))).name
                     + (" (partly read)" if timeline.get("partial") else ""))
        return save_png(fig, path)


def _thumbs_on_rows(ax: Any, names: Sequence[str], thumbs: Mapping[str, str]) -> None:
    """Each row's face (a ``data:`` URL of :func:`build_timeline`) just left of its name."""
    import base64
    import io

    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from PIL import Image

    for row, name in enumerate(names):
        url = thumbs.get(name, "")
        if not url.startswith("data:image/") or "," not in url:
            continue
        try:
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
        except (OSError, ValueError):
            continue
        ax.add_artist(AnnotationBbox(OffsetImage(img, zoom=0.42), (0, row), xycoords=("axes fraction", "data"),
                                     xybox=(-0.012, row), boxcoords=("axes fraction", "data"), box_alignment=(1, 0.5),
                                     frameon=False, annotation_clip=False))
    if thumbs:
        ax.tick_params(axis="y", pad=34)          # room for the faces between the names and the bars


def _nice_ticks(end: float, n: int = 10) -> list[float]:
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]
    step = next((s for s in steps if end / s <= n), 3600 * math.ceil(end / 3600 / n))
    return [i * step for i in range(int(end // step) + 1)]


def summary_lines(timeline: Mapping[str, Any]) -> Iterable[str]:
    """Text lines for a terminal: one per character with its ranges."""
    chars = timeline.get("characters") or {}
    for name in _order(chars):
        rs = chars[name]
        spans = ", ".join(format_time(r["start"]) if r["start"] == r["end"]
                          else f"{format_time(r['start'])}-{format_time(r['end'])}" for r in rs)
        n = sum(r["n"] for r in rs)
        p = sum(r["mean_p"] * r["n"] for r in rs) / max(n, 1)
        yield f"{name}: {plural(n, 'frame')}, mean p {p:.0%}: {spans}"
