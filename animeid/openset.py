"""Beyond a closed list: "unknown" answers, and characters enrolled from a few faces without retraining.

A recogniser's head names only the characters it was trained on. This module keeps an *open-set
layer* beside the head, in the same model file, fitted and calibrated at the end of
:func:`animeid.train.train` (:func:`calibrate_for_training`):

* **an embedding** of each face, from the model's own features (:func:`openset_inputs`, chosen at
  training time by :func:`default_inputs` and stored as ``openset_inputs``): for a fine-tuned network
  its ``"identity"`` output (the fine-tuned embedding beside frozen ImageNet blocks, see
  :mod:`animeid.finetune`) with the colour histogram appended; otherwise whatever its
  :class:`~animeid.features.FeaturePipeline` produces (backbone + colour histogram; for pixel models,
  the face's colour histogram) -- L2-normalised, centred, projected by a *within-character whitening* learned on the
  training characters (PCA to at most ``dim`` = 512 directions, then the covariance of faces around
  their own character's mean, shrunk by ``shrink`` = 0.1 towards a multiple of the identity, made the
  identity: directions in which one character's faces vary -- pose, expression, artist -- count
  less) and L2-normalised again. Learned on the known characters, it carries over to new ones; a
  metric learned harder (a linear layer trained by prototype episodes) fitted the known characters
  and did worse on new ones (figures: BENCHMARKS.md, "Design measurements"). A better embedding in
  the model improves everything here unchanged.
* **a prototype per character**: the sum and count of its embeddings (training faces, plus any
  enrolled pictures, whose embeddings are kept as the *gallery*). A character's similarity to a face
  is ``face . mean / a`` where ``a**2`` estimates the squared norm of the character's true mean
  (``(n |mean|**2 - 1) / (n - 1)``): the plain cosine favours characters with many faces (their
  mean is steadier, so longer) over one enrolled from 5 pictures; the unnormalised mean ignores that
  characters differ in how alike their faces are (the three compared: BENCHMARKS.md, "Design
  measurements").
* **per-character calibration**: the mean and spread of the cosine between a character's own
  training faces and its prototype (leave-one-out; for enrolled characters, the expected cosine of an
  n-picture prototype and the pooled spread). A face's *open-set score* is the highest z-score
  ``(cos - mean_c) / sd_c`` over the characters: how typical its similarity to the nearest
  character is *for that character* (AUROC 0.90, against 0.84 for the best cosine itself and 0.84
  for the head's max probability, for the frozen-feature methods; adding the latter to the z-score did
  not help there). For a fine-tuned network it did: its score adds the log of the highest shown
  probability, both standardised on the known validation faces (:data:`SCORE_WITH_P`). Below the
  **unknown threshold** the face is ``unknown``.
* **the threshold**, calibrated at training time for a false-accept rate ``far`` (default 15 %; 8 % of
  known faces for fine-tuned networks, below):
  each known character in turn plays the stranger -- the embedding and prototypes are refitted
  without it and all its faces scored -- and the threshold lets ``far`` of those strangers through.
  (Scoring a left-out character with the embedding that was fitted on it made strangers look too
  strange: on newgame8 only 40 % of real strangers were rejected; refitted, 85 %.) A fine-tuned
  network's embedding has seen every known character, so no left-out character is a real
  stranger; for those models the threshold rejects a share :data:`KNOWN_REFUSAL` (8 %) of the known
  validation faces instead (see there for why that share). The known
  characters' validation faces give the softmax temperature over the similarities and the slope of
  ``p(unknown)``; ``calibration`` keeps what was measured (``loco_auroc``, ``strangers_rejected``,
  ``known_accepted``...). Also measured: the typical distance between two faces of one unseen
  character and between faces of different ones, which sets the clustering threshold
  (``cluster_distance``, used by :mod:`animeid.cluster`).

Probabilities once characters are enrolled or forgotten (``mode``): ``"prototype"`` scores every
character by prototype similarity (softmax with the fitted temperature); ``"hybrid"`` keeps the
head for the trained characters (the prototype softmax decides how much goes to the trained
characters as a whole, the head shares it among them). Training picks ``hybrid`` unless the
prototypes name the validation faces better than the head. Measured on holoen16 (4 of 16 held
out, 3 seeds, ``bench/openset_bench.py``), 5-shot, new / known after enrolment: logistic model,
prototype 86.5 % / 89.8 %, hybrid 86.2 % / 89.4 %; fine-tuned network, prototype 86.7 % / 96.5 %,
hybrid 88.8 % / 95.6 %. Without enrolled or forgotten
characters the head alone answers, exactly as before.

Stored in the model file (:func:`animeid.modelfile.save_model`): arrays ``extra.openset.*``
(``center``, ``projection``, ``labels`` -- the head's characters, the row order of -- ``sums``,
``counts``, ``genuine_mean``, ``genuine_sd``; the gallery ``gallery``, ``gallery_labels``; the
forgotten trained characters ``masked``; ``known_quantiles``: the open-set scores of the known
calibration faces at every 0.5 % of their distribution, which turn a *known-face refusal rate* -- the
unit ``--unknown-threshold`` is given in -- into a score threshold, :meth:`OpenSet.threshold_for_rate`,
and back, :meth:`OpenSet.refusal_rate`; models made before it refuse a rate and take raw scores
only) and numbers in the JSON ``thresholds`` (``unknown``,
``unknown_far``, ``unknown_slope``, ``temperature``, ``pooled_a2``, ``pooled_sd``,
``openset_mode``, ``cluster_distance``, ``openset_calibration``; :data:`THRESHOLD_KEYS`). Models
without them (older ones) predict as before and never answer ``unknown`` unless given a threshold
on the head's max probability.

Public API: :class:`OpenSet`, :func:`fit_openset`, :func:`fit_metric`, :func:`calibrate_for_training`,
:func:`openset_features`, :func:`open_set_figures`, :func:`open_set_report`, :func:`check_name`,
:data:`UNKNOWN`. :class:`animeid.predict.Recognizer` uses them (``enroll``, ``forget``, ``save``,
``predict_open_faces``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["UNKNOWN", "KNOWN_REFUSAL", "SCORE_WITH_P", "combine_scores", "OpenSet", "check_name", "fit_openset",
           "fit_metric", "calibrate_for_training", "raw_features", "openset_features", "openset_inputs",
           "default_inputs", "open_set_figures", "open_set_report", "THRESHOLD_KEYS", "OPENSET_VERSION"]

log = logging.getLogger("animeid")

#: The name an unknown face gets (it cannot be enrolled as a character name).
UNKNOWN = "unknown"
#: Version of the stored open-set layer.
OPENSET_VERSION = 1
#: ``thresholds`` keys written by this module.
THRESHOLD_KEYS = ("unknown", "unknown_score", "unknown_far", "unknown_slope", "temperature", "pooled_a2",
                  "pooled_sd", "openset_version", "openset_mode", "cluster_distance", "openset_calibration",
                  "openset_inputs", "openset_score_norm")
#: The open-set score of fine-tuned networks (``score_norm`` stored): the best per-character z-score
#: plus the log of the head's highest probability (before its temperature), each standardised on the
#: known validation faces (weight 1 each). Measured on holoen16 with 4 of 16 characters held out,
#: fine-tuned network, 6 trainings (3 seeds drawing the 4 at random, 3 with the look-alike pair
#: fuwawa + mococo among them; ``bench/openset_bench.py`` trained and saved them, ``bench/openset_scores.py``
#: scored them every way; BENCHMARKS.md): unknown AUROC 0.936 -> 0.943
#: and 0.931 -> 0.947 (better in 5 of the 6), and at an 8 % known-face refusal rate 77 % -> 79 % and
#: 73 % -> 80 % of unknown faces refused. The z-score alone, the highest probability alone (0.929 /
#: 0.939), nearest-neighbour similarities (0.897-0.938), weights 0.5 or 2 and the probability after
#: the temperature (0.938 / 0.940) did no better. Layers whose threshold is set on strangers
#: (frozen-feature methods) keep the z-score alone: a left-out character's faces have no honest head
#: probability.
SCORE_WITH_P = "prototype_z+p"
#: The share of known validation faces a fine-tuned network's default threshold refuses (``far`` for
#: models whose threshold is set on known faces). Measured on holoen16, 4 of 16 characters held out, 6
#: trainings (``bench/openset_scores.py`` on the models of ``bench/openset_bench.py``, BENCHMARKS.md):
#: refusing 15 % of the known faces (the default before) named 85-86 % of known faces right and refused
#: 91-92 % of unknown ones; 8 % names about 91 % right and still refuses 79-80 % of unknown faces; 3 %
#: names 95-96 % right but refuses only about half. ``--unknown-threshold RATE`` chooses another point at prediction time.
KNOWN_REFUSAL = 0.08


def _log_p(p_max: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p_max, dtype=np.float64), 1e-12, 1.0))


def combine_scores(z: np.ndarray, p_max: np.ndarray, norm: dict[str, float]) -> np.ndarray:
    """``(z - z_mean) / z_sd + weight * (log p_max - p_mean) / p_sd`` (see :data:`SCORE_WITH_P`); ``p_max``:
    the highest probability before the head's temperature (:meth:`OpenSet.score` undoes it)."""
    logp = _log_p(p_max)
    return ((np.asarray(z, dtype=np.float64) - norm["z_mean"]) / norm["z_sd"]
            + float(norm.get("weight", 1.0)) * (logp - norm["p_mean"]) / norm["p_sd"])


def _fit_norm(z: np.ndarray, p_max: np.ndarray, p_temperature: float = 1.0, weight: float = 1.0) -> dict[str, float]:
    """:data:`SCORE_WITH_P`'s standardisation from known calibration faces' best z-scores and highest
    probabilities (before the head's temperature ``p_temperature``, which is stored to be undone)."""
    logp = _log_p(p_max)
    z = np.asarray(z, dtype=np.float64)
    return {"z_mean": float(z.mean()), "z_sd": float(max(z.std(), 1e-6)), "p_mean": float(logp.mean()),
            "p_sd": float(max(logp.std(), 1e-6)), "weight": float(weight), "p_temperature": float(p_temperature)}
_PREFIX = "openset."
_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _l2n(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    n = np.linalg.norm(A, axis=-1, keepdims=True)
    n[n < _EPS] = 1.0
    return A / n


def check_name(name: str) -> str:
    """A character name to enrol, cleaned (NFC, spaces trimmed); :class:`~animeid.errors.InputError`
    for an empty name, ``unknown``, or one that cannot be a folder name (``dataset`` folders use it)."""
    from .errors import InputError
    from .names import check_character_name

    clean = check_character_name(name, error=InputError)
    if clean.lower() == UNKNOWN:
        raise InputError(f"{UNKNOWN!r} is reserved for faces of no known character")
    return clean


def raw_features(X: np.ndarray) -> np.ndarray:
    """The vectors the open-set layer embeds, from a pipeline's output ``X``: features ``(n, d)`` as
    they are; pictures ``(n, H, W, 3)`` (pixel models) become their colour histograms."""
    X = np.asarray(X)
    if X.ndim == 4:
        from .heads import color_histograms

        return color_histograms(X).astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected features (n, d) or pictures (n, H, W, 3), got shape {X.shape}")
    return X.astype(np.float64)


#: the colour histogram's weight beside the blocks of a network's ``"identity"`` output (each of unit length)
IDENTITY_COLOR_WEIGHT = 2.0


def default_inputs(pipeline: Any) -> dict[str, Any]:
    """What a new open-set layer embeds for ``pipeline`` (stored in the model as ``openset_inputs``):
    a fine-tuned network's ``"identity"`` output with the colour histogram appended
    (:data:`IDENTITY_COLOR_WEIGHT`); for networks without it, their ``"embedding"`` output; otherwise
    (``{}``) the head's own features."""
    if pipeline.spec.kind == "network" and pipeline.onnx_bytes is not None:
        outs = pipeline.output_names()
        if "identity" in outs:
            return {"output": "identity", "color_weight": IDENTITY_COLOR_WEIGHT}
        if "embedding" in outs:
            return {"output": "embedding"}
    return {}


def openset_inputs(pipeline: Any, images: Sequence, *, inputs: dict[str, Any] | None = None, head: bool = True,
                   batch_size: int = 32, cache: bool = True, outputs: dict[str, np.ndarray] | None = None
                   ) -> tuple[np.ndarray | None, np.ndarray]:
    """``(head features or None, open-set features (n, d))`` of face crops ``images``, from one network run.

    ``inputs``: the layer's ``openset_inputs`` (:func:`default_inputs`); ``None`` (models made before
    it was stored): a network's ``"embedding"`` output when it has one, otherwise the head's features.
    ``outputs``: the network's outputs for ``images`` already computed (``{name: (n, d)}``, e.g.
    :meth:`~animeid.features.FeaturePipeline.view_outputs`), used instead of running it."""
    images = list(images)
    network = pipeline.spec.kind == "network" and pipeline.onnx_bytes is not None
    if inputs is None:
        inputs = {"output": "embedding"} if network and "embedding" in pipeline.output_names() else {}
    name = inputs.get("output")
    if name and network:
        names = ([pipeline.main_output()] if head else []) + [name]
        res = ([outputs[n] for n in names] if outputs is not None
               else pipeline.run_outputs(images, names, batch_size))
        F = np.asarray(res[-1], dtype=np.float64)
        if name == "embedding":
            F = _l2n(F)
        if inputs.get("color_weight"):
            from .heads import color_histograms

            F = np.hstack([F, float(inputs["color_weight"]) * _l2n(color_histograms(images))])
        return (res[0] if head else None), F
    X = pipeline.transform(images, batch_size=batch_size, cache=cache)
    return (X if head else None), raw_features(X)


def openset_features(pipeline: Any, images: Sequence, *, inputs: dict[str, Any] | None = None, batch_size: int = 32,
                     cache: bool = True) -> np.ndarray:
    """What the open-set layer embeds for face crops ``images`` (:func:`openset_inputs` without the head's part)."""
    return openset_inputs(pipeline, images, inputs=inputs, head=False, batch_size=batch_size, cache=cache)[1]


def _one_blas_thread():
    """One BLAS thread: on a busy machine, many threads make these mid-sized products and
    decompositions many times slower (measured: an eigen-decomposition 19 s with the default
    threads on a loaded 2-core machine, 0.8 s with one)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_metric(F: np.ndarray, y: Sequence[str], *, dim: int = 512, shrink: float = 0.1
               ) -> tuple[np.ndarray, np.ndarray]:
    """Within-character whitening: ``(center (d,), projection (d, k))`` from raw features ``F`` and
    their characters ``y``; embed with ``l2n((l2n(F) - center) @ projection)``."""
    Z = _l2n(F)
    y = np.asarray(y)
    classes = np.unique(y)
    center = Z.mean(axis=0)
    Zc = Z - center
    n, d = Zc.shape
    k = int(max(1, min(dim, d, n - len(classes))))
    with _one_blas_thread():
        if d <= n:                               # principal directions from the d x d covariance
            w, V = np.linalg.eigh(Zc.T @ Zc)
            P = V[:, ::-1][:, :k]
        else:                                    # or from the n x n Gram matrix
            w, U = np.linalg.eigh(Zc @ Zc.T)
            U, w = U[:, ::-1][:, :k], np.maximum(w[::-1][:k], _EPS)
            P = (Zc.T @ U) / np.sqrt(w)
        Y = Zc @ P
    R = np.empty_like(Y)
    for c in classes:
        m = y == c
        R[m] = Y[m] - Y[m].mean(axis=0)
    with _one_blas_thread():
        Sw = R.T @ R / max(1, n - len(classes))
        Sw = (1 - shrink) * Sw + shrink * (np.trace(Sw) / k) * np.eye(k)
        w, V = np.linalg.eigh(Sw)
        w = np.maximum(w, w.max() * 1e-6)
        return center, P @ (V / np.sqrt(w))


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Area under the ROC curve: chance that a ``pos`` score beats a ``neg`` one (ties count half)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return None
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# ----------------------------------------------------------------------------------------------
# the open-set layer
# ----------------------------------------------------------------------------------------------
@dataclass
class OpenSet:
    """The open-set layer of a model (see the module's notes). Immutable in use: :meth:`enrolled`
    and :meth:`forgotten` return new objects, so readers in other threads never see half a change.

    ``trained``: the head's characters (its column order); ``labels``: the characters answered now
    (trained ones not forgotten, then enrolled ones in order of enrolment).
    """

    center: np.ndarray                      # (d,)
    projection: np.ndarray                  # (d, k)
    trained: list[str]                      # head classes, order of sums/counts/genuine_*
    sums: np.ndarray                        # (len(trained), k): embeddings of the training faces, summed
    counts: np.ndarray                      # (len(trained),)
    genuine_mean: np.ndarray                # (len(trained),) leave-one-out cosine of own faces to prototype
    genuine_sd: np.ndarray                  # (len(trained),)
    gallery: np.ndarray                     # (n, k) enrolled embeddings
    gallery_labels: list[str]               # (n,)
    masked: list[str] = field(default_factory=list)   # forgotten trained characters
    threshold: float | None = None          # unknown threshold on the open-set score
    slope: float = 1.0                      # p(unknown) = sigmoid(slope * (threshold - score))
    temperature: float = 0.05
    pooled_a2: float = 0.5
    pooled_sd: float = 0.1
    far: float | None = None
    mode: str = "hybrid"
    cluster_distance: float | None = None   # cosine distance at which clusters stop merging (animeid.cluster)
    calibration: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None     # what it embeds (openset_inputs); None: as models before it was stored
    #: open-set scores of the known calibration faces at the shares ``linspace(0, 1, len)`` (the quantile
    #: function: entry i is the score below which a share i / (len - 1) of known faces lies); None: models
    #: made before it was stored, which cannot turn a refusal rate into a threshold
    known_quantiles: np.ndarray | None = None
    #: the score's second part (:data:`SCORE_WITH_P`): ``{"z_mean", "z_sd", "p_mean", "p_sd", "weight",
    #: "p_temperature"}``, the known calibration faces' mean and spread of the best z-score and of the
    #: log of the head's highest probability before its temperature ``p_temperature``; None: the score is the best z-score alone (``prototype_z``: every model before it,
    #: and models whose threshold is set on strangers)
    score_norm: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self._derive()

    # -- derived state
    def _derive(self) -> None:
        trained_active = [c for c in self.trained if c not in set(self.masked)]
        extra: list[str] = []
        for lab in self.gallery_labels:
            if lab not in trained_active and lab not in extra:
                extra.append(lab)
        self.labels: list[str] = trained_active + extra
        self.n_trained_active = len(trained_active)
        #: head columns of the active trained characters
        self.head_cols = np.array([self.trained.index(c) for c in trained_active], dtype=np.int64)
        k = self.projection.shape[1]
        C = len(self.labels)
        sums = np.zeros((C, k))
        counts = np.zeros(C)
        gm = np.full(C, np.nan)
        gsd = np.full(C, np.nan)
        for i, c in enumerate(trained_active):
            j = self.trained.index(c)
            sums[i], counts[i], gm[i], gsd[i] = self.sums[j], self.counts[j], self.genuine_mean[j], self.genuine_sd[j]
        glab = np.asarray(self.gallery_labels)
        for i, c in enumerate(self.labels):
            rows = self.gallery[glab == c] if len(glab) else np.zeros((0, k))
            if len(rows):
                sums[i] += rows.sum(axis=0)
                counts[i] += len(rows)
        means = sums / np.maximum(counts, 1)[:, None]
        mnorm2 = np.einsum("ij,ij->i", means, means)
        a2 = np.where(counts >= 3, (counts * mnorm2 - 1) / np.maximum(counts - 1, 1), self.pooled_a2)
        a2 = np.maximum(a2, max(0.25 * self.pooled_a2, 1e-3))
        mnorm = np.sqrt(np.maximum(mnorm2, _EPS))
        # characters without leave-one-out statistics (enrolled): expected cosine of a new face of the
        # character to an n-face prototype (a2 / |mean|), the pooled spread
        gm = np.where(np.isnan(gm), a2 / mnorm, gm)
        gsd = np.where(np.isnan(gsd), self.pooled_sd, gsd)
        self._means, self._mnorm, self._a = means, mnorm, np.sqrt(a2)
        self._gm, self._gsd = gm, np.maximum(gsd, 1e-6)

    @property
    def has_changes(self) -> bool:
        """True once pictures were enrolled or characters forgotten: the head alone no longer answers."""
        return bool(len(self.gallery_labels) or self.masked)

    @property
    def enrolled_names(self) -> list[str]:
        return list(dict.fromkeys(self.gallery_labels))

    # -- embedding and scores
    def embed(self, X: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, k)`` (unit length) of :func:`openset_features` (or a pipeline's output)."""
        F = raw_features(X)
        if F.shape[1] != self.center.shape[0]:
            raise ValueError(f"features have {F.shape[1]} dimensions, the open-set layer expects {self.center.shape[0]}")
        return _l2n((_l2n(F) - self.center) @ self.projection)

    def similarities(self, E: np.ndarray) -> np.ndarray:
        """Count-fair similarity ``(n, len(labels))`` of embeddings to each character's prototype."""
        return (E @ self._means.T) / self._a

    def zscores(self, E: np.ndarray) -> np.ndarray:
        """Per-character calibrated cosines ``(n, len(labels))``: ``(cos - genuine_mean) / genuine_sd``."""
        return ((E @ self._means.T) / self._mnorm - self._gm) / self._gsd

    @property
    def score_kind(self) -> str:
        """What :meth:`score` is: ``"prototype_z"`` or ``"prototype_z+p"`` (see :data:`SCORE_WITH_P`)."""
        return "prototype_z" if self.score_norm is None else SCORE_WITH_P

    def score(self, E: np.ndarray, proba: np.ndarray | None = None) -> np.ndarray:
        """Open-set score ``(n,)``; low means no known character.

        ``prototype_z``: the best per-character z-score. ``prototype_z+p`` (layers with
        :attr:`score_norm`): that z-score and the log of the highest probability (``proba``
        ``(n, len(labels))``: :meth:`proba` at the head's temperature, as shown; the temperature is
        undone here), each standardised on the known
        calibration faces, added with the stored weight (see :data:`SCORE_WITH_P`). ``ValueError``
        when such a layer is not given ``proba``."""
        if not len(self.labels):
            return np.full(len(E), -np.inf)
        z = self.zscores(E).max(axis=1)
        if self.score_norm is None:
            return z
        if proba is None:
            raise ValueError("this open-set layer's score needs the faces' probabilities")
        from .calibration import apply_temperature

        # the probabilities as the head gave them (measured: the raw highest probability separates
        # unknown faces better than the tempered one, AUROC 0.943 against 0.938)
        raw = apply_temperature(np.asarray(proba, dtype=np.float64), 1.0 / self.score_norm.get("p_temperature", 1.0))
        return combine_scores(z, raw.max(axis=1), self.score_norm)

    # -- the threshold as a share of known faces refused
    def threshold_for_rate(self, rate: float) -> float:
        """The open-set score threshold that refuses (answers ``unknown`` for) a share ``rate`` (0..1)
        of the known characters' calibration faces. :class:`~animeid.errors.ModelFileError` for a model
        made before the calibration scores were stored."""
        from .errors import InputError, ModelFileError

        rate = float(rate)
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise InputError(f"a known-face refusal rate is a share from 0 to 1 (or 0 % to 100 %), got {rate!r}")
        if self.known_quantiles is None or not len(self.known_quantiles):
            raise ModelFileError("this model does not store its known faces' open-set scores (made by an older "
                                 "animeid), so a refusal rate cannot be turned into a threshold: give a raw open-set score "
                                 "instead (score:T; its calibrated threshold is "
                                 f"{self.threshold if self.threshold is None else round(self.threshold, 4)}) "
                                 "or retrain it")
        q = np.asarray(self.known_quantiles, dtype=np.float64)
        if rate <= 0.0:
            return float(q[0]) - 1e-9          # refuse none of the calibration faces
        if rate >= 1.0:
            return math.inf                    # refuse every face
        return float(np.interp(rate, np.linspace(0.0, 1.0, len(q)), q))

    def refusal_rate(self, threshold: float | None) -> float | None:
        """The share of the known calibration faces scoring below ``threshold`` (None when unknown)."""
        if threshold is None or self.known_quantiles is None or not len(self.known_quantiles):
            return None
        q = np.asarray(self.known_quantiles, dtype=np.float64)
        if threshold <= q[0]:
            return 0.0
        if threshold > q[-1]:
            return 1.0
        return float(np.interp(threshold, q, np.linspace(0.0, 1.0, len(q))))

    def p_unknown(self, score: np.ndarray, threshold: float) -> np.ndarray:
        """Probability-like share for the ``unknown`` answer: 0.5 at the threshold, towards 1 below it."""
        return _sigmoid(self.slope * (threshold - np.asarray(score, dtype=np.float64)))

    def proba(self, E: np.ndarray, head_proba: np.ndarray | None) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` over the active characters.

        No enrolled or forgotten characters: the head's own probabilities (unchanged behaviour).
        Otherwise ``mode`` decides (see the module's notes)."""
        if not self.has_changes and head_proba is not None:
            return np.asarray(head_proba, dtype=np.float64)
        q = _softmax(self.similarities(E) / self.temperature)
        if self.mode == "prototype" or head_proba is None or self.n_trained_active == 0:
            return q
        h = np.asarray(head_proba, dtype=np.float64)[:, self.head_cols]
        h = h / np.maximum(h.sum(axis=1, keepdims=True), _EPS)
        out = q.copy()
        k = self.n_trained_active
        out[:, :k] = q[:, :k].sum(axis=1, keepdims=True) * h
        return out

    # -- changes
    def enrolled(self, name: str, E: np.ndarray) -> "OpenSet":
        """A copy with embeddings ``E`` of character ``name`` added to the gallery."""
        E = np.asarray(E, dtype=np.float32).reshape(-1, self.projection.shape[1])
        return dataclasses.replace(self, gallery=np.concatenate([self.gallery.astype(np.float32), E]),
                                   gallery_labels=list(self.gallery_labels) + [name] * len(E))

    def forgotten(self, name: str) -> "OpenSet":
        """A copy without character ``name`` (its enrolled pictures dropped; a trained one masked)."""
        keep = [i for i, lab in enumerate(self.gallery_labels) if lab != name]
        masked = list(self.masked)
        if name in self.trained and name not in masked:
            masked.append(name)
        return dataclasses.replace(self, gallery=self.gallery[keep], gallery_labels=[self.gallery_labels[i] for i in keep],
                                   masked=masked)

    # -- storage
    def to_model_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(thresholds, extra_arrays)`` for :func:`animeid.modelfile.save_model`."""
        thresholds = {
            "unknown": None if self.threshold is None else float(self.threshold),
            "unknown_score": self.score_kind,
            "openset_score_norm": self.score_norm,
            "unknown_far": self.far,
            "unknown_slope": float(self.slope),
            "temperature": float(self.temperature),
            "pooled_a2": float(self.pooled_a2),
            "pooled_sd": float(self.pooled_sd),
            "openset_version": OPENSET_VERSION,
            "openset_mode": self.mode,
            "cluster_distance": self.cluster_distance,
            "openset_calibration": self.calibration,
            "openset_inputs": self.inputs,
        }
        k = self.projection.shape[1]
        arrays = {
            "center": self.center.astype(np.float32),
            "projection": self.projection.astype(np.float32),
            "labels": np.asarray(self.trained, dtype=str),
            "sums": self.sums.astype(np.float64),
            "counts": self.counts.astype(np.int64),
            "genuine_mean": self.genuine_mean.astype(np.float64),
            "genuine_sd": self.genuine_sd.astype(np.float64),
            "gallery": np.asarray(self.gallery, dtype=np.float32).reshape(-1, k),
            "gallery_labels": np.asarray(self.gallery_labels, dtype=str).reshape(-1),
            "masked": np.asarray(self.masked, dtype=str).reshape(-1),
        }
        if self.known_quantiles is not None:
            arrays["known_quantiles"] = np.asarray(self.known_quantiles, dtype=np.float64).reshape(-1)
        return thresholds, {_PREFIX + k_: v for k_, v in arrays.items()}

    @classmethod
    def from_bundle(cls, bundle: Any) -> "OpenSet | None":
        """The layer stored in a :class:`~animeid.modelfile.ModelBundle`, or ``None`` (models made
        before it existed, or without calibration)."""
        arr = {k[len(_PREFIX):]: v for k, v in (bundle.extra_arrays or {}).items() if k.startswith(_PREFIX)}
        if "projection" not in arr:
            return None
        from .errors import ModelFileError

        th = bundle.thresholds or {}
        try:
            trained = [str(x) for x in arr["labels"]]
            if trained != [str(x) for x in bundle.labels]:
                raise ValueError("its characters differ from the head's")
            k = arr["projection"].shape[1]
            out = cls(center=np.asarray(arr["center"], np.float64), projection=np.asarray(arr["projection"], np.float64),
                      trained=trained, sums=np.asarray(arr["sums"], np.float64).reshape(len(trained), k),
                      counts=np.asarray(arr["counts"], np.float64).reshape(len(trained)),
                      genuine_mean=np.asarray(arr["genuine_mean"], np.float64).reshape(len(trained)),
                      genuine_sd=np.asarray(arr["genuine_sd"], np.float64).reshape(len(trained)),
                      gallery=np.asarray(arr.get("gallery", np.zeros((0, k))), np.float32).reshape(-1, k),
                      gallery_labels=[str(x) for x in arr.get("gallery_labels", [])],
                      masked=[str(x) for x in arr.get("masked", [])],
                      threshold=None if th.get("unknown") is None else float(th["unknown"]),
                      slope=float(th.get("unknown_slope", 1.0)), temperature=float(th.get("temperature", 0.05)),
                      pooled_a2=float(th.get("pooled_a2", 0.5)), pooled_sd=float(th.get("pooled_sd", 0.1)),
                      far=th.get("unknown_far"), mode=str(th.get("openset_mode", "hybrid")),
                      cluster_distance=None if th.get("cluster_distance") is None else float(th["cluster_distance"]),
                      calibration=dict(th.get("openset_calibration") or {}),
                      inputs=None if th.get("openset_inputs") is None else dict(th["openset_inputs"]),
                      known_quantiles=_quantiles(arr.get("known_quantiles")),
                      score_norm=_score_norm(th.get("openset_score_norm")))
            if len(out.gallery) != len(out.gallery_labels) or out.center.shape[0] != out.projection.shape[0]:
                raise ValueError("inconsistent array shapes")
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ModelFileError(f"damaged model file: its open-set layer is unusable ({e})", bundle.path) from None
        return out


# ----------------------------------------------------------------------------------------------
# fitting and calibration
# ----------------------------------------------------------------------------------------------
#: how many points of the known faces' score distribution a model stores (every 0.5 %)
N_QUANTILES = 201


def _quantiles(q: Any) -> np.ndarray | None:
    """Stored known-face score quantiles, checked (non-decreasing, finite, at least 2); None if absent."""
    if q is None:
        return None
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if len(q) < 2 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
        raise ValueError("its known-face score quantiles are not a non-decreasing list of numbers")
    return q


def _score_norm(norm: Any) -> dict[str, float] | None:
    """A stored :data:`SCORE_WITH_P` standardisation, checked (finite numbers, positive spreads); None if absent."""
    if norm is None:
        return None
    out = {k: float(norm[k]) for k in ("z_mean", "z_sd", "p_mean", "p_sd")}
    out["weight"] = float(norm.get("weight", 1.0))
    out["p_temperature"] = float(norm.get("p_temperature", 1.0))
    if (not all(math.isfinite(v) for v in out.values()) or out["z_sd"] <= 0 or out["p_sd"] <= 0
            or out["p_temperature"] <= 0):
        raise ValueError("its open-set score standardisation is not a set of finite numbers")
    return out


def _class_stats(E: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Per class: sum of embeddings, count, leave-one-out cosine mean and sd (nan below 3 faces)."""
    k = E.shape[1]
    sums, counts = np.zeros((len(classes), k)), np.zeros(len(classes))
    gm, gsd = np.full(len(classes), np.nan), np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        G = E[y == c]
        n = len(G)
        sums[i], counts[i] = G.sum(axis=0), n
        if n >= 3:
            loo = np.einsum("ij,ij->i", G, _l2n((sums[i][None] - G) / (n - 1)))
            gm[i], gsd[i] = loo.mean(), loo.std(ddof=1)
    return sums, counts, gm, gsd


def _fit_temperature(S: np.ndarray, yi: np.ndarray) -> float:
    """Softmax temperature minimising the negative log-likelihood of the true columns ``yi``."""
    from scipy.optimize import minimize_scalar

    def nll(logt: float) -> float:
        z = S / math.exp(logt)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(yi)), yi]))

    r = minimize_scalar(nll, bounds=(math.log(1e-3), math.log(2.0)), method="bounded")
    return float(math.exp(r.x))


def _build(F_train: np.ndarray, y_train: np.ndarray, classes: list[str], *, dim: int, shrink: float,
           mode: str) -> tuple[OpenSet, np.ndarray]:
    """An uncalibrated layer (embedding, prototypes, leave-one-out statistics) and the training embeddings."""
    center, proj = fit_metric(F_train, y_train, dim=dim, shrink=shrink)
    k = proj.shape[1]
    base = OpenSet(center=center, projection=proj, trained=classes, sums=np.zeros((len(classes), k)),
                   counts=np.zeros(len(classes)), genuine_mean=np.zeros(len(classes)), genuine_sd=np.ones(len(classes)),
                   gallery=np.zeros((0, k), np.float32), gallery_labels=[], mode=mode)
    Etr = base.embed(F_train)
    sums, counts, gm, gsd = _class_stats(Etr, y_train, classes)
    ok = counts >= 3
    pooled_sd = float(np.median(gsd[ok])) if ok.any() else 0.1
    means = sums / np.maximum(counts, 1)[:, None]
    a2 = (counts * np.einsum("ij,ij->i", means, means) - 1) / np.maximum(counts - 1, 1)
    pooled_a2 = max(float(np.median(a2[ok])), 1e-3) if ok.any() else 0.5
    gm = np.where(np.isnan(gm), np.nanmedian(gm) if ok.any() else 0.5, gm)
    gsd = np.where(np.isnan(gsd), pooled_sd, gsd)
    return dataclasses.replace(base, sums=sums, counts=counts, genuine_mean=gm, genuine_sd=gsd, pooled_a2=pooled_a2,
                               pooled_sd=pooled_sd), Etr


def fit_openset(F_train: np.ndarray, y_train: Sequence[str], F_cal: np.ndarray | None = None,
                y_cal: Sequence[str] | None = None, *, classes: Sequence[str] | None = None, far: float = 0.15,
                dim: int = 512, shrink: float = 0.1, mode: str = "hybrid", max_folds: int = 16,
                seed: int = 0, strangers_seen: bool = False, P_cal: np.ndarray | None = None,
                p_temperature: float = 1.0) -> OpenSet:
    """Fit the open-set layer on raw features (:func:`openset_features`) of the training faces and
    calibrate it.

    * known faces: the held-out ``F_cal`` (without them, leave-one-out on the training faces) give
      the known characters' scores and the softmax temperature;
    * strangers: each known character in turn (at most ``max_folds`` of them, drawn with ``seed``)
      is left out, the embedding and prototypes are refitted on the others, and all of its faces are
      scored: faces of a character the embedding never saw, as a real stranger's would be.

    ``classes``: the head's characters in column order (default: sorted names). ``far``: the share
    of strangers the unknown threshold lets through.

    ``strangers_seen``: the features themselves were trained on every known character (a fine-tuned
    network's embedding), so a character left out here is no real stranger: it still sits apart from
    the others, as the network learned (holoen16: 99 % of such "strangers" rejected at a threshold
    that rejected 12 % of real ones). The threshold then rejects a share ``far`` of the known
    characters' held-out faces instead.

    ``P_cal``: the head's probabilities ``(len(F_cal), len(classes))`` of the calibration faces, before
    its temperature ``p_temperature`` (:mod:`animeid.calibration`; predictions show them after it).
    With ``strangers_seen`` and ``F_cal`` the score becomes :data:`SCORE_WITH_P` (the z-score and the
    highest probability, standardised on these faces).

    The named steps: the layer (:func:`_build`), known-face scores (:func:`_known_scores`), stranger
    scores and distances (:func:`_stranger_scores`), the threshold (:func:`_threshold_from`), the
    clustering cut (:func:`_cluster_distance`).
    """
    y_train = np.asarray([str(v) for v in y_train])
    classes = [str(c) for c in (classes if classes is not None else np.unique(y_train))]
    layer, Etr = _build(F_train, y_train, classes, dim=dim, shrink=shrink, mode=mode)
    use_cal = F_cal is not None and y_cal is not None and len(set(map(str, y_cal)) & set(classes)) >= 2
    Z, S, yi = _known_scores(layer, Etr, y_train, classes, F_cal if use_cal else None, y_cal if use_cal else None)
    known = known_z = Z.max(axis=1)
    norm = None
    if strangers_seen and use_cal and P_cal is not None:
        keep = np.isin(np.asarray([str(v) for v in y_cal]), classes)
        p_max = np.asarray(P_cal, dtype=np.float64)[keep].max(axis=1)
        norm = _fit_norm(known_z, p_max, p_temperature)
        known = combine_scores(known_z, p_max, norm)
    temperature = _fit_temperature(np.where(np.isfinite(S), S, -1e3), yi)
    stranger, gd, idd, n_folds = _stranger_scores(F_train, y_train, classes, F_cal if use_cal else None,
                                                  y_cal if use_cal else None, dim=dim, shrink=shrink, mode=mode,
                                                  max_folds=max_folds, seed=seed)
    fin_known = known[np.isfinite(known)]
    threshold, basis = _threshold_from(fin_known, stranger, far, strangers_seen)
    # strangers' scores are z-scores only: they say nothing of a combined score's scale
    slope = _slope(fin_known, stranger[np.isfinite(stranger)]) if norm is None else 1.0
    pred = S.argmax(axis=1)
    calibration = {"genuine_distance_median": float(np.median(gd)) if len(gd) else None,
                   "impostor_distance_median": float(np.median(idd)) if len(idd) else None,
                   "threshold_from": basis,
                   "known_faces": "validation" if use_cal else "training, leave-one-out", "n_known": int(len(known)),
                   "stranger_folds": n_folds, "n_strangers": int(len(stranger)),
                   "loco_auroc": _auroc(known_z[np.isfinite(known_z)], stranger[np.isfinite(stranger)]),
                   "known_accepted": float(np.mean(known >= threshold)),
                   "known_accepted_correct": float(np.mean((known >= threshold) & (pred == yi))),
                   "strangers_rejected": float(np.mean(stranger < threshold)) if len(stranger) and norm is None
                   else None,
                   "prototype_accuracy": float(np.mean(pred == yi)), "dim": int(layer.projection.shape[1]),
                   "shrink": shrink}
    calibration = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in calibration.items()}
    quantiles = np.quantile(fin_known, np.linspace(0.0, 1.0, N_QUANTILES)) if len(fin_known) >= 2 else None
    return dataclasses.replace(layer, threshold=threshold, slope=slope, temperature=temperature, far=far,
                               cluster_distance=_cluster_distance(gd, idd, strangers_seen), calibration=calibration,
                               known_quantiles=quantiles, score_norm=norm)


def _known_scores(layer: "OpenSet", Etr: np.ndarray, y_train: np.ndarray, classes: list[str],
                  F_cal: np.ndarray | None, y_cal: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known faces' z-scores and similarities ``(n, C)`` and class indices: the held-out faces
    (``F_cal``) when given, else the training faces leave-one-out (each removed from its own prototype)."""
    C = len(classes)
    if F_cal is not None:
        ycal = np.asarray([str(v) for v in y_cal])
        keep = np.isin(ycal, classes)
        Ecal, ycal = layer.embed(np.asarray(F_cal)[keep]), ycal[keep]
        return layer.zscores(Ecal), layer.similarities(Ecal), np.array([classes.index(v) for v in ycal])
    yi = np.array([classes.index(v) for v in y_train])
    dots = Etr @ layer.sums.T                               # remove each face from its own prototype
    cnt = np.broadcast_to(layer.counts, dots.shape).copy()
    ssq = np.broadcast_to(np.einsum("ij,ij->i", layer.sums, layer.sums), dots.shape).copy()
    r = np.arange(len(yi))
    ssq[r, yi] = ssq[r, yi] - 2 * dots[r, yi] + 1
    dots[r, yi] -= 1
    cnt[r, yi] -= 1
    Z = (dots / np.sqrt(np.maximum(ssq, _EPS)) - layer._gm[:C]) / layer._gsd[:C]
    S = dots / np.maximum(cnt, 1) / layer._a[:C]
    Z[cnt < 1] = -np.inf
    S[cnt < 1] = -np.inf
    return Z, S, yi


def _stranger_scores(F_train: np.ndarray, y_train: np.ndarray, classes: list[str], F_cal: np.ndarray | None,
                     y_cal: Sequence[str] | None, *, dim: int, shrink: float, mode: str, max_folds: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Strangers' scores: each known character in turn (at most ``max_folds``, drawn with ``seed``) left
    out, the embedding refitted on the others, its faces scored. Also the cosine distances among a
    stranger's faces (genuine) and to the other characters' faces (impostor). Returns ``(scores,
    genuine distances, impostor distances, folds used)``."""
    rng = np.random.default_rng(seed)
    folds = [c for c in classes if np.sum(y_train == c) and len(set(classes) - {c}) >= 1]
    if len(folds) > max_folds:
        folds = sorted(str(c) for c in rng.choice(folds, max_folds, replace=False))
    ycal = np.asarray([str(v) for v in y_cal]) if F_cal is not None else None
    strangers, gen_d, imp_d = [], [], []
    for c in folds:
        keep = y_train != c
        others = [x for x in classes if x != c]
        if len(set(y_train[keep])) < 2:
            continue
        oc, Eo = _build(F_train[keep], y_train[keep], others, dim=dim, shrink=shrink, mode=mode)
        Fc = F_train[~keep]
        if ycal is not None and np.any(ycal == c):
            Fc = np.concatenate([Fc, np.asarray(F_cal)[np.isin(ycal, [c])]])
        Ec = oc.embed(Fc)
        strangers.append(oc.score(Ec))
        sub = Ec[rng.permutation(len(Ec))[:60]]
        iu = np.triu_indices(len(sub), 1)
        gen_d.append(1 - (sub @ sub.T)[iu])
        imp_d.append(1 - (sub @ Eo[rng.permutation(len(Eo))[:200]].T).ravel())
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return cat(strangers), cat(gen_d), cat(imp_d), len(strangers)


def _threshold_from(known: np.ndarray, stranger: np.ndarray, far: float, strangers_seen: bool) -> tuple[float, str]:
    """The unknown threshold and what it was set on: letting a share ``far`` of strangers through,
    or (strangers the network saw, or only two characters) refusing a share of known faces."""
    if len(stranger) and not strangers_seen:
        return float(np.quantile(stranger, 1 - far)), "strangers"
    if strangers_seen and len(known):
        return float(np.quantile(known, far)), "known faces"
    return float(np.quantile(known, 0.05)), "known faces"      # two characters only: 5 % of known faces out


def _slope(known: np.ndarray, stranger: np.ndarray) -> float:
    """How steeply the probability of 'known' rises with the score (a logistic fit), 1 without data."""
    if len(known) <= 1 or len(stranger) <= 1:
        return 1.0
    from sklearn.linear_model import LogisticRegression

    xs = np.concatenate([known, stranger])[:, None]
    ys = np.r_[np.ones(len(known)), np.zeros(len(stranger))]
    return float(abs(LogisticRegression(C=10.0).fit(xs, ys).coef_[0, 0])) or 1.0


def _cluster_distance(gd: np.ndarray, idd: np.ndarray, strangers_seen: bool) -> float | None:
    """The clustering cut (:mod:`animeid.cluster`): 40 % of the way from the typical distance of two
    faces of one unseen character to that of faces of different characters (nearer the first: a wrong
    face in a named group becomes a wrong label unless someone spots it, so purity comes first). A
    network that saw the left-out character keeps its faces close together, so those distances say
    nothing of a new character's: 90 % of the different-character distance instead (holoen16,
    fine-tuned: purity 95 %, a tenth of the face-by-face actions)."""
    if strangers_seen and len(idd):
        return float(0.9 * np.median(idd))
    if len(gd) and len(idd):
        return float(np.median(gd) + 0.4 * (np.median(idd) - np.median(gd)))
    return None


def calibrate_for_training(fitted: Any, tr_x: Sequence, tr_y: Sequence[str], va_x: Sequence, va_y: Sequence[str],
                           *, head_temperature: float = 1.0, **kw: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The hook at the end of :func:`animeid.train.train`: ``(thresholds, extra_arrays)`` to store.

    Features come from the fitted pipeline (cached on disk, so no extra backbone runs).
    ``head_temperature``: the temperature predictions apply to the head's probabilities
    (:mod:`animeid.calibration`), for :data:`SCORE_WITH_P`. Any failure is logged and gives empty
    parts: the model is still saved, without the open-set layer."""
    try:
        pipe = fitted.pipeline
        inputs = default_inputs(pipe)
        F_tr = openset_features(pipe, tr_x, inputs=inputs)
        F_va = openset_features(pipe, va_x, inputs=inputs) if len(va_x) else None
        P_va = (np.asarray(fitted.head.predict_proba(pipe.transform(list(va_x))), dtype=np.float64)
                if len(va_x) else None)
        classes = [str(c) for c in fitted.head.classes_]
        kw.setdefault("strangers_seen", pipe.spec.kind == "network")
        if kw["strangers_seen"]:
            kw.setdefault("far", KNOWN_REFUSAL)
        layer = fit_openset(F_tr, tr_y, F_va, va_y if len(va_x) else None, classes=classes, P_cal=P_va,
                            p_temperature=head_temperature, **kw)
        layer = dataclasses.replace(layer, inputs=inputs)
        if "mode" not in kw and len(va_x):
            # once characters are enrolled, the head keeps naming the trained characters ("hybrid") unless
            # the prototypes name the validation faces better than it does
            head_acc = float(np.mean(np.asarray(classes)[P_va.argmax(axis=1)] == np.asarray(va_y, dtype=str)))
            proto_acc = layer.calibration.get("prototype_accuracy") or 0.0
            layer = dataclasses.replace(layer, mode="prototype" if proto_acc > head_acc + 0.005 else "hybrid",
                                      calibration={**layer.calibration, "head_accuracy": round(head_acc, 4)})
    except Exception as e:  # never lose a trained model to the open-set layer
        log.warning("open-set calibration skipped: %s", e or type(e).__name__)
        return {}, {}
    log.info("open-set layer: unknown threshold %.3f (%s)", layer.threshold, layer.calibration)
    return layer.to_model_parts()


# ----------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------
def open_set_figures(known_scores: np.ndarray, known_correct: np.ndarray, unknown_scores: np.ndarray,
                     threshold: float | None, score_kind: str = "prototype_z") -> dict[str, Any]:
    """Known-vs-unknown figures from open-set scores.

    ``auroc``: chance that a known face scores above an unknown one (ties half); at ``threshold``:
    ``unknown_rejected`` (share of unknown faces answered ``unknown``), ``known_correct`` (share of
    known faces accepted *and* named correctly: ``known_correct`` mask), ``known_accepted``.
    """
    ks, us = np.asarray(known_scores, float), np.asarray(unknown_scores, float)
    ok = np.asarray(known_correct, bool)
    out: dict[str, Any] = {"auroc": _auroc(ks, us), "unknown_threshold": threshold, "unknown_score": score_kind,
                           "n_known": int(len(ks)), "n_unknown": int(len(us))}
    if threshold is None:
        out.update(unknown_rejected=None, known_correct=None, known_accepted=None)
    else:
        t = float(threshold)
        out.update(unknown_rejected=float(np.mean(us < t)) if len(us) else None,
                   known_correct=float(np.mean((ks >= t) & ok)) if len(ks) else None,
                   known_accepted=float(np.mean(ks >= t)) if len(ks) else None)
    return out


def open_set_report(rec: Any, known_faces: Sequence, known_labels: Sequence[str], unknown_faces: Sequence, *,
                    threshold: float | None = None, batch_size: int = 32) -> dict[str, Any]:
    """:func:`open_set_figures` of a :class:`~animeid.predict.Recognizer` on known faces (with their
    true names; faces of characters the model lacks count as wrong when accepted) and unknown faces,
    at the model's threshold unless ``threshold`` is given."""
    kp, ks = rec.predict_open_faces(list(known_faces), batch_size=batch_size)
    us = rec.predict_open_faces(list(unknown_faces), batch_size=batch_size)[1] if len(unknown_faces) else np.zeros(0)
    labels = np.asarray(rec.labels)
    correct = (labels[kp.argmax(axis=1)] == np.asarray([str(v) for v in known_labels])) if len(kp) else np.zeros(0, bool)
    t = rec.unknown_threshold if threshold is None else float(threshold)
    return open_set_figures(ks, correct, us, t, rec.unknown_score_kind)
