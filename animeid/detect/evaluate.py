"""``animeid detector evaluate``: a detector (or several, side by side) scored on boxed pictures.

For each detector: precision, recall and F1 at its score threshold, AP and the best F1 at IoU 0.5
(see :mod:`animeid.detect.metrics`), recall by face size, and the time per picture (ms, wall
clock, one picture at a time, loading the picture not included).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .annotations import Annotated
from .metrics import DetectionScores, score_detections

__all__ = ["DetectorEvaluation", "evaluate_detector", "format_table", "draw_pr_curves"]

#: AnimeFace's scores under this are not worth scoring (its faces are mostly > 0.99)
_MIN_SCORE = 0.05


@dataclass
class DetectorEvaluation:
    """One detector's :class:`~animeid.detect.metrics.DetectionScores` and its speed."""

    detector: str
    scores: DetectionScores
    ms_per_picture: float
    #: whether the scores (and so the thresholds) are calibrated probabilities: False for a learned
    #: detector whose scores could not be fitted when it was made; None for AnimeFace (its own scale)
    calibrated: bool | None = None
    #: why they could not (:func:`animeid.detect.training.uncalibrated_reason`), or None
    uncalibrated_reason: str | None = None

    def to_dict(self) -> dict:
        return {"detector": self.detector, **self.scores.to_dict(), "ms_per_picture": round(self.ms_per_picture, 1),
                "calibrated": self.calibrated, "uncalibrated_reason": self.uncalibrated_reason}


def evaluate_detector(detector: str | os.PathLike | None, items: Sequence[Annotated], *, iou: float = 0.5,
                      threshold: float | None = None, progress: bool = True) -> DetectorEvaluation:
    """Score ``detector`` on ``items`` (see the module's notes). Every face down to score 0.05 is kept
    for the AP.

    Parameters
    ----------
    detector : str, path or None
        A detector name (``"default"``, ``"animeface"``), a detector file, or None (the default).
    items : sequence of Annotated
        Pictures with their reference boxes (:func:`animeid.detect.annotations.load_boxes`).
    iou : float, default 0.5
        Intersection over union a detection needs with a reference box to count as found (0..1).
    threshold : float, optional
        The score threshold for precision, recall and F1 (0..1); None: the detector's own default.
    progress : bool, default True
        Show a progress bar where stderr is a terminal.

    Returns
    -------
    DetectorEvaluation
        ``detector``, ``scores`` (:class:`~animeid.detect.metrics.DetectionScores`: precision,
        recall, F1 and AP as shares 0..1, recall by face size in px, the PR curve) and
        ``ms_per_picture`` (detection alone, milliseconds).

    Raises
    ------
    InputError
        A picture cannot be read.
    UnknownNameError, ModelFileError
        A bad ``detector``.

    Examples
    --------
    >>> from animeid.detect.annotations import load_boxes
    >>> from animeid.detect.evaluate import evaluate_detector
    >>> ev = evaluate_detector("default", load_boxes("test/boxes.json"), iou=0.5)
    >>> ev.scores.f1, ev.ms_per_picture
    (0.63, 44.1)
    """
    from .._util import progress as bar
    from ..images import load_image
    from .base import default_threshold, detect_faces, get_detector

    name = "default" if detector is None else os.fspath(detector)
    thr = default_threshold(name) if threshold is None else float(threshold)
    dets, secs = [], 0.0
    for a in bar(items, total=len(items), desc=f"detecting ({name})", unit="picture", disable=None if progress else True):
        rgb = np.asarray(load_image(a.image, "RGB"))
        t0 = time.perf_counter()
        faces = detect_faces(rgb, threshold=_MIN_SCORE, detector=name)
        secs += time.perf_counter() - t0
        dets.append((np.asarray([f.box for f in faces], np.float64).reshape(-1, 4),
                     np.asarray([f.score for f in faces], np.float64)))
    s = score_detections(dets, [a.boxes for a in items], [a.ignore for a in items], iou=iou, threshold=thr)
    from .training import uncalibrated_reason

    det = get_detector(name)
    meta = getattr(det, "meta", None)
    return DetectorEvaluation(name, s, 1000 * secs / max(len(items), 1), getattr(det, "calibrated", None),
                              uncalibrated_reason(meta) if meta is not None else None)


def format_table(rows: Sequence[DetectorEvaluation], pictures: int) -> str:
    """The comparison as a text table (one row per detector)."""
    if not rows:
        return ""
    bins = list(rows[0].scores.recall_by_size)
    counts = rows[0].scores.faces_by_size
    head = (f"{'detector':<22} {'thr':>5} {'precision':>9} {'recall':>7} {'F1':>6} {'AP':>6} {'best F1':>8} "
            + " ".join(f"{'R ' + b:>9}" for b in bins) + f" {'ms/pic':>7}")
    lines = [f"{pictures} pictures, {rows[0].scores.faces} boxed faces at IoU {rows[0].scores.iou:g} "
             f"(faces by longer side: " + ", ".join(f"{b} px: {counts[b]}" for b in bins) + ")", head]
    for r in rows:
        s = r.scores
        name = r.detector if len(r.detector) <= 22 else "..." + r.detector[-19:]
        lines.append(f"{name:<22} {s.threshold:>5.2f} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {s.ap:>6.3f} "
                     f"{s.best_f1:>8.3f} " + " ".join(f"{s.recall_by_size[b]:>9.3f}" for b in bins)
                     + f" {r.ms_per_picture:>7.1f}")
    for r in rows:
        if r.calibrated is False:
            lines.append(f"{r.detector}: its scores are the network's raw heatmap peaks, not calibrated probabilities "
                         f"({r.uncalibrated_reason or 'not fitted when it was made'}); its threshold is on them")
    return "\n".join(lines)


def draw_pr_curves(rows: Sequence[DetectorEvaluation], path: str | os.PathLike) -> None:
    """Precision-recall curves of the detectors in one PNG, each one's operating point marked."""
    from matplotlib.figure import Figure

    from .._plot import plot_fonts, save_png

    with plot_fonts():
        fig = Figure(figsize=(5.5, 4.5))
        ax = fig.add_subplot()
        for r in rows:
            prec, rec, _ = r.scores.curve
            line, = ax.plot(rec, prec, label=f"{r.detector} (AP {r.scores.ap:.3f})")
            ax.plot([r.scores.recall], [r.scores.precision], "o", color=line.get_color())
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"faces at IoU {rows[0].scores.iou:g}; dots: default thresholds" if rows else "")
        ax.legend(loc="lower left")
        save_png(fig, path)
