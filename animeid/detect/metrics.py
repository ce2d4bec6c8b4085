"""How good a detector is: precision, recall, F1 and AP at an IoU, and recall by face size.

Matching follows PASCAL VOC: detections are taken best score first; each is a hit (true positive)
when its IoU with a reference box not yet matched is at least ``iou`` (the best such box is taken),
otherwise a false alarm, unless it lies in an ``ignore`` region (at least half of its area inside
one) or overlaps an already matched box by ``iou`` (a duplicate counts as a false alarm) ... then it
counts neither way (ignore regions only). AP is the area under the all-point interpolated
precision-recall curve (VOC 2010+). A face's size is the longer side of its reference box, in the
picture's own pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["SIZE_BINS", "match", "DetectionScores", "score_detections", "box_iou"]

#: face size bins (longer side of the reference box, px): ``[lo, hi)``
SIZE_BINS = ((0, 32), (32, 64), (64, 128), (128, 10 ** 9))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``(n, 4)`` with every box in ``b`` ``(m, 4)`` -> ``(n, m)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _inside_fraction(a: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """For each box of ``a``, the largest fraction of its area inside one of ``regions``."""
    if not len(regions) or not len(a):
        return np.zeros(len(a))
    ix = np.clip(np.minimum(a[:, None, 2], regions[None, :, 2]) - np.maximum(a[:, None, 0], regions[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], regions[None, :, 3]) - np.maximum(a[:, None, 1], regions[None, :, 1]), 0, None)
    area = np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-12)
    return (ix * iy / area[:, None]).max(1)


def match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, ignore: np.ndarray | None = None,
          iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Match one picture's detections to its reference boxes.

    Returns ``(det_state, gt_hit)``: ``det_state`` ``(n,)`` is 1 for a hit, 0 for a false alarm and
    -1 for a detection in an ignore region; ``gt_hit`` ``(m,)`` is the score of the detection that
    found each reference box, or ``-inf`` where none did.
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(det_scores, np.float64), kind="stable")
    ious = box_iou(det_boxes, gt_boxes)
    ign = _inside_fraction(det_boxes, np.asarray(ignore if ignore is not None else np.zeros((0, 4)),
                                                 np.float64).reshape(-1, 4)) >= 0.5
    state = np.zeros(len(det_boxes), np.int8)
    gt_hit = np.full(len(gt_boxes), -np.inf)
    for i in order:
        if len(gt_boxes):
            cand = np.where(np.isneginf(gt_hit), ious[i], -1.0)
            j = int(np.argmax(cand))
            if cand[j] >= iou:
                state[i] = 1
                gt_hit[j] = det_scores[i]
                continue
        state[i] = -1 if ign[i] else 0
    return state, gt_hit


@dataclass
class DetectionScores:
    """A detector's scores over a set of pictures, at one IoU and one score threshold.

    ``precision``, ``recall``, ``f1`` at ``threshold``; ``ap``: area under the whole PR curve;
    ``recall_by_size``: ``{"<32": r, "32-64": r, ...}`` at ``threshold`` with ``faces_by_size``
    the number of reference faces in each bin; ``curve``: ``(precision, recall, score)`` arrays of
    the PR curve (one point per detection, best score first); ``best_f1``/``best_threshold``: the
    highest F1 over all thresholds and where it is reached.
    """

    iou: float
    threshold: float
    pictures: int
    faces: int
    detections: int
    true_positives: int
    false_positives: int
    precision: float
    recall: float
    f1: float
    ap: float
    best_f1: float
    best_threshold: float
    recall_by_size: dict = field(default_factory=dict)
    faces_by_size: dict = field(default_factory=dict)
    curve: tuple = field(default_factory=tuple, repr=False)

    def to_dict(self) -> dict:
        """The figures as plain JSON values (no curve): floats rounded to 4 places, and None for a
        recall of a size bin without faces (NaN here, which JSON cannot hold)."""
        def plain(v):
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 4)
            return v

        return {k: plain(getattr(self, k)) for k in self.__dataclass_fields__ if k != "curve"}


def _bin_name(lo: int, hi: int) -> str:
    return f"<{hi}" if lo == 0 else (f">={lo}" if hi >= 10 ** 9 else f"{lo}-{hi}")


def score_detections(detections: Sequence[tuple[np.ndarray, np.ndarray]], references: Sequence[np.ndarray],
                     ignores: Sequence[np.ndarray] | None = None, *, iou: float = 0.5,
                     threshold: float = 0.0) -> DetectionScores:
    """Precision, recall, F1 and AP of ``detections`` (one ``(boxes (n, 4), scores (n,))`` per picture)
    against ``references`` (one ``(m, 4)`` array of boxes per picture), at ``iou``.

    Detections below ``threshold`` count for the AP curve only (give all a detector finds, down to a
    low score, for an honest AP). Raises :class:`ValueError` when the lists differ in length.
    """
    if len(detections) != len(references) or (ignores is not None and len(ignores) != len(references)):
        raise ValueError(f"{len(detections)} detection lists for {len(references)} pictures")
    scores, states, gt_sizes, gt_scores = [], [], [], []
    for k, ((boxes, sc), gt) in enumerate(zip(detections, references)):
        gt = np.asarray(gt, np.float64).reshape(-1, 4)
        st, hit = match(boxes, sc, gt, ignores[k] if ignores is not None else None, iou)
        scores.append(np.asarray(sc, np.float64).reshape(-1))
        states.append(st)
        gt_sizes.append(np.maximum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]))
        gt_scores.append(hit)
    s = np.concatenate(scores) if scores else np.zeros(0)
    st = np.concatenate(states) if states else np.zeros(0, np.int8)
    keep = st >= 0
    s, st = s[keep], st[keep]
    order = np.argsort(-s, kind="stable")
    s, st = s[order], st[order]
    n_gt = int(sum(len(g) for g in gt_sizes))
    tp_cum = np.cumsum(st == 1)
    fp_cum = np.cumsum(st == 0)
    prec = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    rec = tp_cum / max(n_gt, 1)
    # all-point interpolated AP
    mprec = np.concatenate([[0.0], prec, [0.0]])
    mrec = np.concatenate([[0.0], rec, [rec[-1] if len(rec) else 0.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    ap = float(np.sum((mrec[1:] - mrec[:-1]) * mprec[1:]))
    f1s = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    best = int(np.argmax(f1s)) if len(f1s) else -1
    at = s >= threshold
    tp, fp = int(np.sum(st[at] == 1)), int(np.sum(st[at] == 0))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / n_gt if n_gt else 0.0
    sizes = np.concatenate(gt_sizes) if gt_sizes else np.zeros(0)
    hits = np.concatenate(gt_scores) if gt_scores else np.zeros(0)
    by_size, counts = {}, {}
    for lo, hi in SIZE_BINS:
        m = (sizes >= lo) & (sizes < hi)
        name = _bin_name(lo, hi)
        counts[name] = int(m.sum())
        by_size[name] = float(np.mean(hits[m] >= threshold)) if m.any() else float("nan")
    return DetectionScores(iou=iou, threshold=threshold, pictures=len(references), faces=n_gt,
                           detections=int(at.sum()), true_positives=tp, false_positives=fp, precision=p, recall=r,
                           f1=2 * p * r / (p + r) if p + r else 0.0, ap=ap,
                           best_f1=float(f1s[best]) if best >= 0 else 0.0,
                           best_threshold=float(s[best]) if best >= 0 else 0.0,
                           recall_by_size=by_size, faces_by_size=counts, curve=(prec, rec, s))
