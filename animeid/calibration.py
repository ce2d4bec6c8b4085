"""Honest probabilities: temperature scaling of a head's probabilities, and how honest they are.

A classifier's top probability is *calibrated* when, of the faces it names with probability
``p``, a share ``p`` are named right. Networks trained with label smoothing (animeid's
``finetune`` and ``softmax`` methods use 0.1) are under-confident, others over-confident.
Temperature scaling (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
ICML 2017, section 4.2) fixes most of it with one number ``T`` fitted on held-out faces:
``softmax(log(p) / T)`` -- for a softmax head exactly ``softmax(logits / T)``; ``T > 1`` softens,
``T < 1`` sharpens; the ranking of the characters never changes.

* :func:`fit_temperature` -- ``T`` minimising the negative log-likelihood of held-out faces.
* :func:`apply_temperature` -- the probabilities at temperature ``T``.
* :func:`expected_calibration_error`, :func:`reliability_bins` -- the expected calibration error
  of the top-1 probability over equal-width bins (Guo et al. 2017, section 2; Naeini et al. 2015)
  and the per-bin figures a reliability diagram draws (:func:`animeid.evaluate.plot_reliability`).

:func:`animeid.train.train` fits ``T`` on the validation faces and stores it in the model's
``thresholds`` as ``head_temperature`` (with ``head_ece``: the validation faces' ECE before and
after); :class:`animeid.predict.Recognizer` applies it to the head's probabilities
(:func:`stored_temperature` reads it). Pure numpy/scipy.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["fit_temperature", "apply_temperature", "expected_calibration_error", "reliability_bins",
           "stored_temperature", "MIN_FACES", "T_BOUNDS"]

#: fewer validation faces than this: no temperature is fitted (1.0)
MIN_FACES = 20
#: the range searched for ``T``
T_BOUNDS = (0.05, 20.0)
_LOG_EPS = math.log(1e-12)


def _log_proba(proba: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(proba, dtype=np.float64))


def _tempered_log(L: np.ndarray, T: float) -> np.ndarray:
    """Normalised log-probabilities of ``softmax(L / T)`` (``-inf`` stays ``-inf``: a zero stays zero;
    an all-zero row gives ``-inf`` everywhere)."""
    z = L / T
    m = z.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = np.log(np.exp(z - m).sum(axis=1, keepdims=True)) + m
    return z - np.where(np.isfinite(lse), lse, 0.0)


def apply_temperature(proba: np.ndarray, T: float) -> np.ndarray:
    """``proba ** (1 / T)``, each row renormalised to sum to 1, computed in log space.

    ``proba``: ``(n, c)`` probabilities (rows summing to 1; zeros stay zero; an all-zero row
    stays zero). ``T``: the temperature, finite and > 0; ``T == 1`` returns ``proba`` itself,
    unchanged. Returns ``(n, c)`` float64. Each row's order (and so its argmax) is kept.
    """
    T = float(T)
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"a temperature is a finite number > 0, got {T!r}")
    if T == 1.0:
        return proba
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"proba must be (n, classes), got shape {P.shape}")
    if P.size == 0:
        return P.copy()
    return np.exp(_tempered_log(_log_proba(P), T))


def fit_temperature(proba: np.ndarray, y_index: Sequence[int], *, min_faces: int = MIN_FACES,
                    bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature ``T`` minimising the mean negative log-likelihood of the true classes under
    :func:`apply_temperature` ``(proba, T)`` (Guo et al. 2017), searched on ``log T`` in ``bounds``.

    ``proba``: ``(n, c)`` held-out probabilities (a head's ``predict_proba``); ``y_index``: ``(n,)``
    the true column of each row (rows whose true class the head lacks: a negative index, are left
    out). Returns ``1.0`` (no change) with fewer than ``min_faces`` usable rows, fewer than two
    distinct true classes, or no row whose top-1 answer is wrong: then the likelihood only grows as
    ``T`` shrinks towards 0 (a perfect validation set would make every answer "certain", the next
    mistake included), so there is nothing to fit. A true class given probability 0 counts as
    probability 1e-12 (it stays 0 at every ``T``, so it never moves the fit).
    """
    from scipy.optimize import minimize_scalar

    P = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.int64).reshape(-1)
    if P.ndim != 2 or P.shape[0] != len(y):
        raise ValueError(f"proba must be (n, classes) with n = {len(y)} true classes, got shape {P.shape}")
    ok = (y >= 0) & (y < P.shape[1])
    P, y = P[ok], y[ok]
    if len(y) < min_faces or len(np.unique(y)) < 2 or np.all(P.argmax(axis=1) == y):
        return 1.0
    L = _log_proba(P)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.mean(np.maximum(_tempered_log(L, math.exp(log_t))[rows, y], _LOG_EPS)))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    r = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    best = float(r.x)
    if nll(0.0) <= nll(best):           # no better than leaving the probabilities as they are
        return 1.0
    return float(math.exp(best))


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin ``m`` holds confidences in ``(m / bins, (m + 1) / bins]`` (0 goes to the first bin)."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def _check(confidence: Any, correct: Any, bins: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    k = np.asarray(correct, dtype=bool).reshape(-1)
    if len(c) != len(k):
        raise ValueError(f"{len(c)} confidences but {len(k)} correct flags")
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if len(c) and not (np.all(np.isfinite(c)) and c.min() >= 0.0 and c.max() <= 1.0 + 1e-9):
        raise ValueError("confidences must be probabilities from 0 to 1")
    return c, k


def reliability_bins(confidence: Any, correct: Any, bins: int = 15) -> list[dict[str, Any]]:
    """The figures of a reliability diagram: ``bins`` equal-width bins of the top-1 confidence.

    ``confidence``: ``(n,)`` the top-1 probability of each face (0 to 1); ``correct``: ``(n,)``
    whether that top-1 answer was right. Returns one dict per bin, in order, empty ones included:
    ``{"lo", "hi", "n", "confidence", "accuracy"}`` -- the bin's edges ``(lo, hi]``, how many faces
    fall in it, their mean confidence and their share answered right (both ``None`` when ``n`` is 0).
    """
    c, k = _check(confidence, correct, bins)
    idx = _bin_index(c, bins)
    out = []
    for m in range(bins):
        sel = idx == m
        n = int(sel.sum())
        out.append({"lo": round(m / bins, 6), "hi": round((m + 1) / bins, 6), "n": n,
                    "confidence": float(c[sel].mean()) if n else None,
                    "accuracy": float(k[sel].mean()) if n else None})
    return out


def expected_calibration_error(confidence: Any, correct: Any, bins: int = 15) -> float:
    """Expected calibration error of the top-1 probability (Guo et al. 2017, eq. 3):
    ``sum_m |B_m| / n * |accuracy(B_m) - confidence(B_m)|`` over ``bins`` equal-width bins.

    ``confidence``: ``(n,)`` top-1 probabilities (0 to 1); ``correct``: ``(n,)`` booleans. A share
    from 0 (calibrated) to 1; ``nan`` for no faces.
    """
    c, k = _check(confidence, correct, bins)
    if not len(c):
        return float("nan")
    idx = _bin_index(c, bins)
    conf_b = np.bincount(idx, weights=c, minlength=bins)
    acc_b = np.bincount(idx, weights=k.astype(np.float64), minlength=bins)
    return float(np.abs(acc_b - conf_b).sum() / len(c))


def stored_temperature(thresholds: Any, path: Any = None) -> float:
    """The ``head_temperature`` of a model file's ``thresholds`` (1.0 when it has none: models made
    before it). :class:`~animeid.errors.ModelFileError` naming ``path`` when it is not a finite number > 0."""
    value = (thresholds or {}).get("head_temperature", 1.0)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        from .errors import ModelFileError

        raise ModelFileError(f"its head_temperature must be a finite number above 0, got {value!r}: the file is "
                             "damaged; retrain the model or restore the file", path)
    return float(value)
