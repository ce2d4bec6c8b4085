"""Naming characters in pictures with a saved model: the library core the CLI and the web app call.

    >>> model = animeid.load("characters.animeid")            # doctest: +SKIP
    >>> model.predict("screenshot.png")                       # doctest: +SKIP
    {'path': 'screenshot.png', 'faces': [{'box': [x0, y0, x1, y1], 'name': 'aoba', 'unknown': False,
      'candidates': [{'name': 'aoba', 'p': 0.93}, ...], 'open_set': {...}}]}
    >>> model.enroll("momiji", ["momiji1.png", "momiji2.png"])   # doctest: +SKIP
    >>> model.save("characters+momiji.animeid")                 # doctest: +SKIP

Unknown faces (open-set models: every model trained by this animeid, see :mod:`animeid.openset`):
each face gets a *verdict* beside its candidates::

    {"box": [...], "name": "unknown", "unknown": true,
     "candidates": [{"name": "aoba", "p": 0.62}, {"name": "hifumi", "p": 0.2}, ...],
     "open_set": {"kind": "prototype_z", "score": -21.3, "threshold": -14.8,
                  "refusal_rate": 0.15, "known_below": 0.02}}

``name`` is the character's name, or ``"unknown"`` when the face's open-set score is below the
unknown threshold (then ``unknown`` is true). ``candidates`` are always the ``top`` best *named*
characters with their probabilities among the model's characters: for an unknown face, the
characters it is closest to (what it would be if it had to be one of them). ``"unknown"`` is
never a candidate (earlier versions put it first in ``candidates``, with a
"probability" that was no probability; read ``name`` / ``unknown`` instead). ``open_set``
says why: the face's ``score``, the ``threshold`` applied (None: no unknown answers), and, for
models that store their calibration faces' scores, ``refusal_rate`` -- the share of known faces
that threshold refuses -- and ``known_below`` -- the share of known faces that score lower than
this one (the face is unknown when ``known_below`` < ``refusal_rate``).

The threshold: the model's calibrated one by default; :class:`PredictConfig` ``unknown_rate``
sets it as a *known-face refusal rate* (0.05: the threshold that refuses 5 % of the known
characters' calibration faces; :meth:`animeid.openset.OpenSet.threshold_for_rate`),
``unknown_threshold`` as a raw open-set score (the only way for models without stored
calibration scores; for models without an open-set layer, a threshold on the highest
probability), ``unknown=False`` never answers unknown. :func:`parse_unknown_threshold` reads the
CLI's and the web API's form (``off``, ``0.05``, ``5%``, ``score:-14.8``).

A whole illustration or frame is searched for faces first (the study's classifier failed on
uncropped pictures); each face is cropped as in training (square, the model's margin) and named.
A picture that *is* a face crop (one face found filling it) is recognised as it is. A picture in
which no face is found gives no face, and a separate ``whole_picture`` guess (the picture read as a
face crop), so that a title card is never reported as a face.

Batch first: :meth:`Recognizer.predict_batch` and :meth:`Recognizer.predict_faces` take lists;
:meth:`Recognizer.predict` wraps one picture. Everything here is thread-safe and torch-free.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .calibration import apply_temperature, stored_temperature
from .features import FeaturePipeline, FeatureSpec
from .images import ImageTyping, describe, load_image

__all__ = ["PredictConfig", "Recognizer", "load", "parse_unknown_threshold"]


#: the most candidates a face gets (``top``)
MAX_TOP = 50
#: ``flip="auto"``: a face whose highest probability is under this is read with its mirror image too.
MIRROR_BELOW_P = 0.5
#: ``flip="auto"``: so is a face whose open-set score is within this of the unknown threshold (the
#: score's own units: standard deviations of known faces' prototype distances). Chosen on one seed's
#: held-out faces, checked on two others: 99.7-100 % of answers as with both views of every face
#: (BENCHMARKS.md, *Speed end to end*).
MIRROR_SCORE_MARGIN = 1.5


def _predict_rules() -> dict:
    from . import options as o

    return {"top": o.whole(1, MAX_TOP), "threshold": o.DETECTOR_SCORE, "detector": o.detector(),
            "detect": o.choice(("auto", "always", "never")), "fill_ratio": o.number(0.0, 1.0, lo_open=True),
            "batch_size": o.whole(1, 4096), "unknown_threshold": o.number(optional=True),
            "unknown_rate": o.share(hi_open=True, optional=True), "flip": o.choice(("auto", "always", "never"))}


@dataclass(frozen=True)
class PredictConfig:
    """Options shared by the CLI and the web app. Every field is checked when the config is made
    (:mod:`animeid.options`): a bad value raises :class:`~animeid.errors.ConfigError` naming it.

    Parameters
    ----------
    top : int, default 3
        Candidates per face, 1..50.
    threshold : float, optional
        Face detector score threshold, 0..1 (None: the detector's own default).
    detector : str or path, optional
        A detector name or a detector file (None: animeid's default).
    detect : {"auto", "always", "never"}
        ``auto``: find faces, and read a picture without one whole as a face crop (kept apart as
        ``whole_picture``); ``always``: faces only; ``never``: every picture is a face crop.
    fill_ratio : float, default 0.6
        A single face whose box's longer side is at least this share (0..1] of the picture's
        longer side makes the picture a face crop, read whole (``detect="auto"``); a wide frame
        with one close-up is cut around the face instead.
    batch_size : int, default 32
        Faces per network run, 1..4096.
    unknown : bool, default True
        Answer ``"unknown"`` for faces below the unknown threshold (False: always the closest).
    unknown_threshold : float, optional
        A raw open-set score threshold (None: the model's calibrated one).
    unknown_rate : float, optional
        Or the threshold as the share of known faces refused, 0 <= rate < 1.
    flip : {"auto", "always", "never"}
        Reading faces with their mirror image too, for models trained with flip averaging (fine-tuned
        ones): ``always`` every face (what ``evaluate`` measures); ``auto`` only faces whose answer is
        close (:data:`MIRROR_BELOW_P`, :data:`MIRROR_SCORE_MARGIN`): the verdicts of ``always`` for
        99.7-100 % of held-out faces, the network 1.4-1.5x faster (BENCHMARKS.md, *Speed end to
        end*); ``never`` none (fastest, 4-5 % of verdicts changed). Models whose graph cannot be read
        one view at a time (made before model format 2, read without the ``onnx`` package), and
        models without an open-set layer, read every face both ways whatever ``flip`` says.

    Examples
    --------
    >>> PredictConfig(top=5, unknown_rate=0.05, detector="animeface")
    >>> PredictConfig(**parse_unknown_threshold("5%"))
    """

    top: int = 3
    threshold: float | None = None  # face detector score threshold (None: the detector's own default)
    detector: str | None = None     # face detector: a name or a detector file (None: animeid's default)
    detect: str = "auto"            # auto: find faces, fall back to the whole picture; always; never
    fill_ratio: float = 0.6         # a single face whose box side is this share of the picture: a crop
    batch_size: int = 32
    unknown: bool = True            # answer "unknown" for faces below the unknown threshold
    unknown_threshold: float | None = None   # a raw open-set score threshold (None: the model's calibrated one)
    unknown_rate: float | None = None        # or the share of known faces refused, 0 <= rate < 1 (see the notes)
    flip: str = "auto"              # read faces with their mirror image too: auto (close answers), always, never

    def __post_init__(self):
        from .options import check_fields

        check_fields(self, _predict_rules())


def parse_unknown_threshold(text: str | float | None) -> dict[str, Any]:
    """The :class:`PredictConfig` fields for an unknown threshold as the CLI and the web API take it:
    ``off`` (never unknown), a known-face refusal rate as a share ``0.05`` or a percentage ``5%``
    (from 0 up to, not including, 1 / 100 %), or a raw open-set score ``score:-14.8``; ``None`` or
    ``""``: the model's calibrated threshold (``{}``).

    Parameters
    ----------
    text : str, float or None
        ``"off"``, ``"5%"``, ``"0.05"`` (or ``0.05``), ``"score:T"``, ``None`` or ``""``.

    Returns
    -------
    dict
        ``{}``, ``{"unknown": False}``, ``{"unknown_rate": r}`` or ``{"unknown_threshold": t}``.

    Raises
    ------
    ValueError
        Anything else, or a rate outside ``0 <= rate < 1`` (the message says what is accepted).

    Examples
    --------
    >>> parse_unknown_threshold("5%")
    {'unknown_rate': 0.05}
    >>> PredictConfig(top=3, **parse_unknown_threshold("score:-14.8"))
    PredictConfig(top=3, ..., unknown_threshold=-14.8, unknown_rate=None)
    """
    if text is None:
        return {}
    t = str(text).strip().lower().replace(" ", "")
    if not t:
        return {}
    if t == "off":
        return {"unknown": False}
    try:
        if t.startswith("score:"):
            v = float(t[len("score:"):])
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
            return {"unknown_threshold": v}
        rate = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"expected 'off', a share of known faces to refuse (0.05 or 5%) or 'score:T', "
                         f"got {text!r}") from None
    if not 0.0 <= rate < 1.0:
        meant = f" (did you mean {t}%, that is {rate / 100:g}?)" if not t.endswith("%") and 1.0 <= rate < 100.0 else ""
        raise ValueError(f"a known-face refusal rate is a share from 0 up to 1 (0 % to 100 %, 100 % excluded), got "
                         f"{text!r}{meant}; for a raw open-set score write score:T")
    return {"unknown_rate": rate}


class Recognizer:
    """A loaded model: names the characters of faces, in pictures or face crops.

    Made by :meth:`load` (or :func:`animeid.load`). Thread-safe for prediction; :meth:`enroll` and
    :meth:`forget` change it in memory, :meth:`save` writes it.

    Attributes
    ----------
    labels : list of str
        The characters answered now: trained ones not forgotten, then enrolled ones.
    method : str
        The training method that made it (``"finetune"``, ``"logistic"``, ...).
    meta : dict
        The model file's JSON description.
    openset : OpenSet or None
        The open-set layer (unknown answers, enrolled characters); None for models made before it.
    head_temperature : float
        The temperature applied to the head's probabilities (1.0: none).

    Examples
    --------
    >>> from animeid.predict import Recognizer
    >>> model = Recognizer.load("characters.animeid")
    >>> model.labels
    ['aoba', 'hifumi', ...]
    >>> model.predict("screenshot.png")["faces"][0]["name"]
    'aoba'
    """

    def __init__(self, bundle):
        from .openset import OpenSet

        self.bundle = bundle
        self.method: str = bundle.method
        #: the temperature applied to the head's probabilities (:mod:`animeid.calibration`; 1.0: none)
        self.head_temperature: float = stored_temperature(bundle.thresholds, bundle.path)
        feats = dict(bundle.features or {"kind": "pixels"})
        self.crop_margin = float(feats.pop("crop_margin", 0.2))
        #: how much of a training crop the face filled, as a detector boxed it (None: models made
        #: before it was measured): crops cut from that detector's boxes match it
        self.crop_fill: dict | None = feats.pop("crop_fill", None)
        one_view = feats.pop("one_view", None)        # a graph stored as one view (model format 2)
        _check_prediction_features(self.crop_fill, one_view, bundle.path)
        self.spec = FeatureSpec.from_dict(feats)
        self.pipeline = FeaturePipeline(self.spec, bundle.backbone, bundle.backbone_onnx, one_view=one_view)
        self._lock = threading.Lock()
        #: the open-set layer (unknown answers, enrolled characters), None for models without one
        self.openset = OpenSet.from_bundle(bundle)
        self.labels: list[str] = list(self.openset.labels if self.openset is not None else bundle.labels)
        from .thumbnails import from_arrays

        self._thumbs: dict[str, np.ndarray] = from_arrays(bundle.extra_arrays or {})

    def thumbnail(self, name: str) -> np.ndarray | None:
        """A ``(64, 64, 3)`` uint8 face of character ``name`` (a typical training face, or the first
        enrolled one); None when the model has none for it (models made before thumbnails)."""
        return self._thumbs.get(name) if name in self.labels else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recognizer":
        """Open a model file.

        Parameters
        ----------
        path : path
            An ``.animeid`` file written by ``animeid train`` (or :meth:`save`).

        Returns
        -------
        Recognizer

        Raises
        ------
        ModelFileError
            The file is missing, unreadable, not an animeid model, damaged, or from a newer animeid
            (the message names the file).

        Examples
        --------
        >>> model = Recognizer.load("characters.animeid")
        """
        from .modelfile import read_model

        return cls(read_model(path))

    @property
    def path(self) -> Path | None:
        return self.bundle.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.bundle.meta

    def __repr__(self) -> str:
        return f"Recognizer({self.method!r}, {len(self.labels)} characters, {self.spec.describe()})"

    # -- faces
    def _features(self, faces: list, batch_size: int, with_embedding: bool, outputs: dict | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """The head's features and, when asked, the open-set layer's input, in one network run
        (``outputs``: the network's outputs for ``faces``, already computed)."""
        from .openset import openset_inputs

        if not with_embedding:
            return self.pipeline.transform(faces, batch_size=batch_size, cache=False), None
        layer = self.openset
        return openset_inputs(self.pipeline, faces, inputs=layer.inputs if layer is not None else None,
                              batch_size=batch_size, cache=False, outputs=outputs)

    def predict_open_faces(self, faces: Sequence[ImageTyping], *, batch_size: int = 32
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(proba (n, len(labels)), score (n,))`` for face crops: probabilities over the characters
        answered now (trained and enrolled) and the open-set score (low: no known character; without
        an open-set layer, the highest probability). Every face is read with its mirror image where
        the model was trained so (``flip="always"``)."""
        return self._predict_open(list(faces), batch_size)[:2]

    def _answers(self, X: np.ndarray, feats: np.ndarray | None, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(proba, open-set score)`` of faces from the head's features and the open-set layer's input."""
        head_p = apply_temperature(np.asarray(self.bundle.head.predict_proba(X), dtype=np.float64),
                                   self.head_temperature)
        if layer is None:
            return head_p, head_p.max(axis=1)
        E = layer.embed(feats)
        proba = layer.proba(E, head_p)
        return proba, layer.score(E, proba)

    def _predict_open(self, faces: list, batch_size: int, flip: str = "always", threshold: Any = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str], Any]:
        """``(proba, score, labels, layer)``. ``flip`` (see :class:`PredictConfig`): ``"auto"`` reads the
        mirror image only of faces whose answer is close (highest probability under
        :data:`MIRROR_BELOW_P`, or an open-set score within :data:`MIRROR_SCORE_MARGIN` of ``threshold``,
        a callable of the layer giving the threshold in use or None)."""
        layer = self.openset                       # one consistent snapshot (enrol/forget replace it)
        labels = list(layer.labels) if layer is not None else list(self.bundle.labels)
        if not faces:
            return np.zeros((0, len(labels))), np.zeros(0), labels, layer
        views = self.pipeline.run_views(faces, batch_size) if flip != "always" and layer is not None else None
        if views is None:                          # the whole graph: both views of every face
            return (*self._answers(*self._features(faces, batch_size, layer is not None), layer), labels, layer)
        proba, score = self._answers(*self._features(faces, batch_size, True, self.pipeline.view_outputs(views)),
                                     layer)
        if flip == "auto":
            t = threshold(layer) if threshold is not None else None
            close = proba.max(axis=1) < MIRROR_BELOW_P
            if t is not None:
                close |= np.abs(score - t) < MIRROR_SCORE_MARGIN
            idx = np.flatnonzero(close)
            if len(idx):
                sub = [faces[i] for i in idx]
                both = self.pipeline.add_mirror({k: v[idx] for k, v in views.items()}, sub, batch_size)
                proba[idx], score[idx] = self._answers(*self._features(sub, batch_size, True, both), layer)
        return proba, score, labels, layer

    def predict_proba_faces(self, faces: Sequence[ImageTyping], *, batch_size: int = 32) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for face crops (each read whole, no detection); each row
        sums to 1. See :meth:`identify_faces` for verdicts and :meth:`predict_open_faces` for the
        open-set score as well."""
        return self.predict_open_faces(faces, batch_size=batch_size)[0]

    @property
    def unknown_threshold(self) -> float | None:
        """The model's calibrated unknown threshold on the open-set score (None: never unknown)."""
        return self.openset.threshold if self.openset is not None else None

    @property
    def unknown_score_kind(self) -> str:
        """What the open-set score is: ``"prototype_z"`` or ``"prototype_z+p"`` (open-set layer, see
        :data:`animeid.openset.SCORE_WITH_P`) or ``"max_proba"`` (models without one)."""
        return self.openset.score_kind if self.openset is not None else "max_proba"

    def _threshold(self, cfg: PredictConfig, layer: Any = None) -> float | None:
        """The open-set score threshold ``cfg`` asks for with the layer ``layer`` (None: no unknown answers)."""
        from .errors import InputError, ModelFileError

        if not cfg.unknown:
            return None
        if cfg.unknown_rate is not None:
            if cfg.unknown_threshold is not None:
                raise InputError("give the unknown threshold as a refusal rate or as a score, not both")
            if layer is None:
                raise ModelFileError("this model has no open-set layer (made by an older animeid), so a refusal "
                                     "rate means nothing to it: give a threshold on its highest probability "
                                     "(score:0.5) or retrain it", self.path)
            try:
                return layer.threshold_for_rate(cfg.unknown_rate)
            except ModelFileError as e:
                raise ModelFileError(e.message, self.path) from None
        if cfg.unknown_threshold is not None:
            return float(cfg.unknown_threshold)
        return layer.threshold if layer is not None else None

    def _candidates(self, p: np.ndarray, top: int, labels: list[str] | None = None) -> list[dict[str, Any]]:
        labels = self.labels if labels is None else labels
        return [{"name": labels[i], "p": round(float(p[i]), 4)} for i in np.argsort(-p, kind="stable")[:max(1, top)]]

    def _verdict(self, p: np.ndarray, top: int, labels: list[str], score: float, threshold: float | None,
                 layer: Any) -> dict[str, Any]:
        """``{"name", "unknown", "candidates", "open_set"}`` for one face (see the module's notes)."""
        from .openset import UNKNOWN

        cands = self._candidates(p, top, labels)
        unknown = threshold is not None and bool(score < threshold)
        info: dict[str, Any] = {"kind": layer.score_kind if layer is not None else "max_proba",
                                "score": round(float(score), 4),
                                "threshold": None if threshold is None else round(float(threshold), 4)}
        if layer is not None and layer.known_quantiles is not None:
            rate = layer.refusal_rate(threshold)
            below = layer.refusal_rate(float(score))
            info["refusal_rate"] = None if rate is None else round(rate, 4)
            info["known_below"] = None if below is None else round(below, 4)
        return {"name": UNKNOWN if unknown or not cands else cands[0]["name"], "unknown": unknown or not cands,
                "candidates": cands, "open_set": info}

    def identify_faces(self, faces: Sequence[ImageTyping], cfg: PredictConfig | None = None, *, top: int = 3
                       ) -> list[dict[str, Any]]:
        """Name the character of each face crop, with a verdict: a character or ``"unknown"``.

        Parameters
        ----------
        faces : sequence of pictures
            Face crops (paths, bytes, file objects, PIL pictures or ``(H, W, 3)`` uint8 arrays), each
            read whole: no face detection (see :meth:`predict_batch` for whole pictures).
        cfg : PredictConfig, optional
            Its ``top``, ``batch_size`` and unknown settings (``unknown``, ``unknown_threshold``,
            ``unknown_rate``) apply; default ``PredictConfig(top=top)``.
        top : int, default 3
            Candidates per face, when ``cfg`` is not given.

        Returns
        -------
        list of dict
            One per face, in order: ``{"name" (a character or "unknown"), "unknown" (bool),
            "candidates": [{"name", "p"}] (the ``top`` most likely named characters, p: 0..1, most
            likely first), "open_set": {"kind", "score", "threshold", ...}}`` (see the module's notes).

        Raises
        ------
        InputError
            An unreadable picture (named), or both a refusal rate and a score threshold given.
        ModelFileError
            A refusal rate (``unknown_rate``) the model cannot use: no open-set layer, or no stored
            score distribution (models made before them).

        Examples
        --------
        >>> v = model.identify_faces(["crop1.png", "crop2.png"], PredictConfig(unknown_rate=0.05))
        >>> v[0]["name"], v[0]["candidates"][0]
        ('aoba', {'name': 'aoba', 'p': 0.93})
        """
        cfg = cfg or PredictConfig(top=top)
        self._threshold(cfg, self.openset)            # a bad setting fails before any work
        proba, score, labels, layer = self._predict_open(list(faces), cfg.batch_size, cfg.flip,
                                                         lambda lay: self._threshold(cfg, lay))
        t = self._threshold(cfg, layer)
        return [self._verdict(p, cfg.top, labels, s, t, layer) for p, s in zip(proba, score)]

    def predict_faces(self, faces: Sequence[ImageTyping], *, top: int = 3,
                      cfg: PredictConfig | None = None) -> list[list[dict[str, Any]]]:
        """The most likely characters of each face crop, without a verdict.

        Parameters
        ----------
        faces : sequence of pictures
            Face crops, each read whole (no face detection).
        top : int, default 3
            Candidates per face (when ``cfg`` is not given).
        cfg : PredictConfig, optional
            Its ``top`` and ``batch_size`` apply.

        Returns
        -------
        list of list of dict
            For each face, its ``top`` named candidates ``[{"name", "p"}]`` (p: 0..1), most likely
            first. Whether a face is ``unknown`` is :meth:`identify_faces`'s ``name`` / ``unknown``.

        Raises
        ------
        InputError
            An unreadable picture (named).

        Examples
        --------
        >>> model.predict_faces(["crop.png"], top=2)
        [[{'name': 'aoba', 'p': 0.93}, {'name': 'hifumi', 'p': 0.04}]]
        """
        return [r["candidates"] for r in self.identify_faces(faces, cfg, top=top)]

    # -- whole pictures
    def _locate(self, img, cfg: PredictConfig, faces: list | None = None) -> tuple[list[tuple[list[int], Any]], bool]:
        """``((box, face crop) pairs, no_face)`` for one picture (``faces``: its detected faces, when the
        caller detected them already). ``no_face`` is True when ``detect="auto"`` found no face and the one
        pair is the whole picture, read as if it were a face crop."""
        from .detect import crop_box_for, crop_face, detect_faces

        w, h = img.size
        whole = [([0, 0, w, h], img)]
        if cfg.detect == "never":
            return whole, False
        if faces is None:
            faces = detect_faces(img, threshold=cfg.threshold, detector=cfg.detector)
        if not faces:
            return ([], False) if cfg.detect == "always" else (whole, True)
        if cfg.detect == "auto" and len(faces) == 1:
            x0, y0, x1, y1 = faces[0].box
            # the picture is a face crop already: its face fills it along its longer side too (a wide
            # frame with a close-up is not read whole, squeezed into a square)
            if max(x1 - x0, y1 - y0) >= cfg.fill_ratio * max(w, h):
                return whole, False
        size = self.spec.size if self.spec.kind == "pixels" else None
        return [(list(f.box), crop_face(img, crop_box_for(f.box, self.crop_margin, self.crop_fill, cfg.detector),
                                        margin=self.crop_margin, size=size or 128))
                for f in faces], False

    def predict_batch(self, images: Sequence[ImageTyping], cfg: PredictConfig | None = None) -> list[dict[str, Any]]:
        """Find the faces in each picture and name their characters.

        Parameters
        ----------
        images : sequence of pictures
            Paths, bytes, file objects, PIL pictures or ``(H, W, 3)`` uint8 arrays.
        cfg : PredictConfig, optional
            ``top`` candidates, detector and its ``threshold``, ``detect`` (``auto``: a face crop is
            taken whole; ``always``; ``never``), the unknown threshold.

        Returns
        -------
        list of dict
            One per picture, in order: ``{"path", "width", "height", "faces": [{"box": [x0, y0, x1,
            y1] (px, x1/y1 exclusive), "name" (a character or "unknown"), "unknown", "candidates":
            [{"name", "p"}] (p: 0..1), "open_set"}]}`` (the verdict: see the module's notes). An
            animated picture also gets ``"frame"`` (0-based) and ``"frames"``: the frame with the most
            faces of up to :data:`animeid.images.ANIMATION_FRAMES` searched. With ``detect="auto"``, a
            picture in which no face is found gets ``"faces": []`` and ``"whole_picture"`` (the same
            fields): the guess made by reading it whole as a face crop.

        Raises
        ------
        InputError
            An unreadable picture (named), or both a refusal rate and a score threshold given.
        ModelFileError
            A refusal rate (``unknown_rate``) the model cannot use: no open-set layer, or no stored
            score distribution (models made before them).

        Examples
        --------
        >>> results = model.predict_batch(["a.png", "b.png"], PredictConfig(top=3, detector="animeface"))
        >>> [len(r["faces"]) for r in results]
        [2, 1]
        """
        cfg = cfg or PredictConfig()
        self._threshold(cfg, self.openset)            # a bad setting fails before any work
        return self._name(*self._find(images, cfg), cfg)

    def _find(self, images: Sequence[ImageTyping], cfg: PredictConfig
              ) -> tuple[list[dict[str, Any]], list[tuple[int, list[int], bool]], list[Any]]:
        """:meth:`predict_batch`'s first stage: read the pictures, find their faces (one batched pass),
        cut the crops. Returns ``(results without faces, (picture index, box, no_face) per crop, crops)``."""
        from .detect import detect_faces_batch

        located: list[tuple[int, list[int], bool]] = []
        crops: list[Any] = []
        results: list[dict[str, Any]] = []
        imgs = [load_image(image, "RGB") for image in images]
        found = (detect_faces_batch(imgs, threshold=cfg.threshold, detector=cfg.detector)  # one batched pass
                 if cfg.detect != "never" else [None] * len(imgs))
        frames = self._animated(images, imgs, found, cfg)
        for i, (image, img) in enumerate(zip(images, imgs)):
            results.append({"path": describe(image), "width": img.size[0], "height": img.size[1], "faces": [],
                            **frames.get(i, {})})
            pairs, no_face = self._locate(img, cfg, found[i])
            for box, crop in pairs:
                located.append((i, box, no_face))
                crops.append(crop)
        return results, located, crops

    def _name(self, results: list[dict[str, Any]], located: list[tuple[int, list[int], bool]], crops: list[Any],
              cfg: PredictConfig) -> list[dict[str, Any]]:
        """:meth:`predict_batch`'s second stage: name the crops :meth:`_find` cut, into ``results``."""
        proba, score, labels, layer = self._predict_open(crops, cfg.batch_size, cfg.flip,
                                                         lambda lay: self._threshold(cfg, lay))
        t = self._threshold(cfg, layer)
        for (i, box, no_face), p, s in zip(located, proba, score):
            entry = {"box": [int(v) for v in box], **self._verdict(p, cfg.top, labels, s, t, layer)}
            if no_face:
                results[i]["whole_picture"] = entry
            else:
                results[i]["faces"].append(entry)
        return results

    def predict_stream(self, images: Sequence[ImageTyping], cfg: PredictConfig | None = None, *, chunk: int = 32
                       ) -> Iterator[tuple[ImageTyping, dict[str, Any] | Exception]]:
        """``(picture, result or InputError)`` for each of ``images`` (or one path), in order, as
        :meth:`predict_batch` gives them, for any number of pictures: they go through in chunks of
        ``chunk``; the next chunk's pictures are read and searched for faces in a second thread while
        this one's are named (measured on 2 cores: no faster than one after the other, no slower). A
        chunk holding an unreadable picture is redone picture by picture, the unreadable one's
        :class:`~animeid.errors.InputError` given in its place. A threshold setting the model cannot
        use, or a ``chunk`` under 1 (``ValueError``), is raised at the first item, before any picture
        is read (this is a generator).

        Parameters
        ----------
        images : sequence of pictures, or one path
            Paths, bytes, file objects, PIL pictures or ``(H, W, 3)`` uint8 arrays; a single path
            (str, bytes or ``os.PathLike``) is one picture.
        cfg : PredictConfig, optional
            As for :meth:`predict_batch`.
        chunk : int, default 32
            Pictures read and searched for faces together.

        Yields
        ------
        tuple
            ``(picture, result)``: the picture as given, and :meth:`predict_batch`'s dict for it or,
            for an unreadable picture, the :class:`~animeid.errors.InputError` (not raised).

        Raises
        ------
        ValueError
            ``chunk`` is not a whole number of at least 1.
        InputError, ModelFileError
            An unknown-threshold setting the model cannot use (as :meth:`identify_faces`).

        Examples
        --------
        >>> for path, r in model.predict_stream(sorted(glob.glob("shots/*.png"))):
        ...     print(path, r if isinstance(r, Exception) else [f["name"] for f in r["faces"]])
        """
        from concurrent.futures import ThreadPoolExecutor

        from .errors import InputError

        cfg = cfg or PredictConfig()
        self._threshold(cfg, self.openset)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a whole number of pictures, at least 1, got {chunk!r}")
        if isinstance(images, (str, bytes, bytearray, os.PathLike)):
            images = [images]                        # one picture, not its characters
        images = list(images)
        parts = [images[s:s + chunk] for s in range(0, len(images), chunk)]
        with ThreadPoolExecutor(1, thread_name_prefix="animeid-find") as pool:
            ahead = pool.submit(self._find, parts[0], cfg) if parts else None
            for k, part in enumerate(parts):
                try:
                    found = ahead.result()
                except InputError:
                    found = None
                ahead = pool.submit(self._find, parts[k + 1], cfg) if k + 1 < len(parts) else None
                if found is not None:
                    yield from zip(part, self._name(*found, cfg))
                    continue
                for image in part:                  # one unreadable picture: the others one by one
                    try:
                        yield image, self.predict_batch([image], cfg)[0]
                    except InputError as e:
                        yield image, e

    @staticmethod
    def _animated(images: Sequence[ImageTyping], imgs: list[Any], found: list[Any], cfg: PredictConfig
                  ) -> dict[int, dict[str, int]]:
        """Animated pictures (GIF, WebP, APNG) given by path or bytes: the frame in which faces are
        found (:func:`animeid.detect.detect_in_animation`) replaces the first one in ``imgs``/``found``.
        Returns ``{index: {"frame", "frames"}}`` for each."""
        from .detect import detect_in_animation
        from .images import frame_count

        out: dict[int, dict[str, int]] = {}
        for i, image in enumerate(images):
            if not isinstance(image, (str, os.PathLike, bytes, bytearray)) or cfg.detect == "never":
                continue
            n = frame_count(image)
            if n <= 1:
                continue
            from .detect import animation_fields

            imgs[i], found[i], k, _ = detect_in_animation(image, threshold=cfg.threshold, detector=cfg.detector)
            out[i] = animation_fields(k, n)
        return out

    def predict(self, image: ImageTyping, cfg: PredictConfig | None = None, **kw: Any) -> dict[str, Any]:
        """Find the faces in one picture and name their characters (:meth:`predict_batch` for one).

        Parameters
        ----------
        image : picture
            A path, bytes, a file object, a PIL picture or an ``(H, W, 3)`` uint8 array.
        cfg : PredictConfig, optional
            The options (see :meth:`predict_batch`).
        **kw
            :class:`PredictConfig` fields (``top=5``, ``detector="animeface"``, ...), applied over
            ``cfg``.

        Returns
        -------
        dict
            ``{"path", "width", "height", "faces": [...]}`` as :meth:`predict_batch` gives for one
            picture (``"whole_picture"`` when no face is found; ``"frame"``/``"frames"`` for an
            animated one).

        Raises
        ------
        InputError
            The picture cannot be read.
        ConfigError
            A keyword's value its rule refuses (``top=0``, ``detect="bogus"``); ``TypeError`` for a
            keyword that is no :class:`PredictConfig` field.
        ModelFileError
            A refusal rate the model cannot use.

        Examples
        --------
        >>> r = model.predict("illustration.png", top=2)
        >>> [(f["box"], f["name"]) for f in r["faces"]]
        [([81, 81, 299, 299], 'aoba')]
        """
        if kw:
            cfg = PredictConfig(**{**(cfg.__dict__ if cfg else {}), **kw})
        return self.predict_batch([image], cfg)[0]


    # -- open set: enrol and forget characters without retraining
    def _enroll_crop(self, image: ImageTyping, cfg: PredictConfig, face_crops: bool = False) -> Any:
        """The face to enrol from a picture: the picture itself when it is a face crop (found as one
        face filling it, or ``face_crops``), else the largest face found. A picture without a face
        found is refused (:class:`~animeid.errors.InputError`) unless ``face_crops``."""
        from .errors import InputError

        if face_crops or cfg.detect == "never":
            return load_image(image, "RGB")
        from .detect import detect_in_animation

        img, faces, _, _ = detect_in_animation(image, threshold=cfg.threshold, detector=cfg.detector)
        found, no_face = self._locate(img, cfg, faces)   # an animated picture: its frame with faces
        if no_face or not found:
            raise InputError("no face found in the picture; if it is a face crop, say so (--face-crops on the "
                             "command line, face_crops in the Python and web APIs)", describe(image))
        box, crop = max(found, key=lambda bc: (bc[0][2] - bc[0][0]) * (bc[0][3] - bc[0][1]))
        return crop

    def enroll(self, name: str, images: Sequence[ImageTyping], cfg: PredictConfig | None = None, *,
               face_crops: bool = False) -> dict[str, Any]:
        """Add character ``name`` from 1 or more pictures (face crops, or illustrations: the largest
        face found is used), or add pictures to a character already known. A picture in which no
        face is found is refused, unless ``face_crops`` says every picture is a face crop (then each
        is used whole, without detection). No retraining: the
        faces' embeddings join the model's gallery (in memory; :meth:`save` writes the file).

        Every picture is read before anything changes: an unreadable one raises
        :class:`~animeid.errors.InputError` and leaves the model as it was.

        Parameters
        ----------
        name : str
            The character's name (NFC, spaces trimmed); a name the model knows adds pictures to it
            (a forgotten trained character comes back).
        images : sequence of pictures, or one picture
            Paths, bytes, file objects, PIL pictures or ``(H, W, 3)`` uint8 arrays (1-10 usually
            suffice); an animated picture's frame with faces is used.
        cfg : PredictConfig, optional
            Its detector, ``threshold``, ``detect`` (``"never"``: every picture used whole) and
            ``batch_size`` apply.
        face_crops : bool, default False
            Every picture is a face crop: used whole, without detection.

        Returns
        -------
        dict
            ``{"name", "added" (pictures used now), "faces" (the character's enrolled pictures in
            all), "new" (True for a character the model did not answer before)}``.

        Raises
        ------
        InputError
            No pictures, an unreadable one, one without a face found (every such picture named), or a
            name that cannot be a character's (empty, ``unknown``, not a folder name).
        CannotEnrollError
            The model has no open-set layer (made by an older animeid): retrain it.

        Examples
        --------
        >>> model.enroll("newcomer", ["a.png", "b.png", "c.png"])
        {'name': 'newcomer', 'added': 3, 'faces': 3, 'new': True}
        >>> model.save("more.animeid")
        """
        from .errors import CannotEnrollError, InputError
        from .openset import check_name

        name = check_name(name)
        if isinstance(images, (str, bytes, bytearray, os.PathLike)) or hasattr(images, "read"):
            images = [images]
        images = list(images)
        if not images:
            raise InputError(f"no pictures given to enrol {name!r}")
        if self.openset is None:
            raise CannotEnrollError("this model has no open-set layer (made by an older animeid, or its calibration "
                                    "failed), so it cannot enrol characters: retrain it with `animeid train`", self.path)
        cfg = cfg or PredictConfig()
        crops, refused = [], []
        for im in images:                                           # every picture is judged before any change
            try:
                crops.append(self._enroll_crop(im, cfg, face_crops))
            except InputError as e:
                refused.append(e)
        if len(refused) == 1:
            raise refused[0]
        if refused:
            raise InputError(f"{len(refused)} of the {len(images)} pictures cannot be enrolled: "
                             + "; ".join(str(e) for e in refused))
        _, feats = self._features(crops, cfg.batch_size, True)
        with self._lock:
            layer = self.openset
            E = layer.embed(feats)
            new = name not in layer.labels
            self.openset = layer.enrolled(name, E)
            self.labels = list(self.openset.labels)
            if name not in self._thumbs:
                from .thumbnails import thumbnail

                self._thumbs = {**self._thumbs, name: thumbnail(crops[0])}
        n = int(sum(1 for lab in self.openset.gallery_labels if lab == name))
        return {"name": name, "added": len(crops), "faces": n, "new": new}

    def forget(self, name: str) -> dict[str, Any]:
        """Remove character ``name``: its enrolled pictures go; a trained character is masked out
        (the head still holds it, but it is never answered). In memory; :meth:`save` writes the file.

        Parameters
        ----------
        name : str
            A character of :attr:`labels` (found in any Unicode normal form).

        Returns
        -------
        dict
            ``{"name", "trained" (it was a trained character), "characters" (how many are left)}``.

        Raises
        ------
        InputError
            No such character, or it is the model's last one.
        CannotEnrollError
            The model has no open-set layer (made by an older animeid).

        Examples
        --------
        >>> model.forget("newcomer")
        {'name': 'newcomer', 'trained': False, 'characters': 8}
        """
        from .errors import CannotEnrollError, InputError

        if self.openset is None:
            raise CannotEnrollError("this model has no open-set layer (made by an older animeid): retrain it to "
                                    "forget characters", self.path)
        from .names import normalize_name

        with self._lock:
            layer = self.openset
            name = next((lab for lab in layer.labels if normalize_name(lab) == normalize_name(name)), normalize_name(name))
            if name not in layer.labels:
                raise InputError(f"no character {name!r} in this model (characters: {', '.join(layer.labels)})")
            if len(layer.labels) <= 1:
                raise InputError(f"{name!r} is the model's last character; a model needs at least one")
            self.openset = layer.forgotten(name)
            self.labels = list(self.openset.labels)
        return {"name": name, "trained": name in layer.trained, "characters": len(self.labels)}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the model, with its current gallery and forgotten characters, to ``path`` (default:
        the file it was loaded from), atomically: an earlier file stays whole if the write fails.

        Parameters
        ----------
        path : path, optional
            The ``.animeid`` file to write; default: the file the model was loaded from.

        Returns
        -------
        pathlib.Path
            The file written.

        Raises
        ------
        ValueError
            No ``path`` and the model was not loaded from a file.
        OSError
            The file cannot be written.

        Examples
        --------
        >>> model.enroll("newcomer", ["a.png"]); model.save()      # written over the loaded file
        """
        from .modelfile import save_model
        from .openset import THRESHOLD_KEYS

        b = self.bundle
        path = Path(path) if path is not None else b.path
        if path is None:
            raise ValueError("no path to save to")
        with self._lock:
            layer = self.openset
        thresholds = {k: v for k, v in (b.thresholds or {}).items() if k not in THRESHOLD_KEYS}
        from .thumbnails import to_arrays as thumb_arrays

        extra = {k: v for k, v in (b.extra_arrays or {}).items() if not k.startswith(("openset.", "thumbs."))}
        extra.update(thumb_arrays(self._thumbs))
        if layer is not None:
            th, arr = layer.to_model_parts()
            thresholds.update(th)
            extra.update(arr)
        save_model(path, b.head, method=b.method, labels=list(b.labels), backbone=b.backbone,
                   backbone_onnx=b.backbone_onnx, features=b.features, training=b.training, thresholds=thresholds,
                   extra_arrays=extra)
        return path


def _check_prediction_features(fill: Any, one_view: Any, path: Any) -> None:
    """A model file's ``crop_fill`` and ``one_view`` features as ``train`` writes them, or
    :class:`~animeid.errors.ModelFileError` naming the damaged one."""
    from .errors import ModelFileError

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if fill is not None and not (isinstance(fill, dict) and number(fill.get("fill")) and 0 < fill["fill"] <= 1
                                 and isinstance(fill.get("detector"), str)):
        raise ModelFileError(f"damaged model file: features.crop_fill is {fill!r}", path)
    if one_view is not None and not (
            isinstance(one_view, dict) and isinstance(one_view.get("sums"), list)
            and all(isinstance(k, str) for k in one_view["sums"]) and "embedding" in one_view["sums"]
            and isinstance(one_view.get("outputs"), list) and "probs" in one_view["outputs"]
            and (one_view.get("identity_scale") is None or number(one_view["identity_scale"]))):
        raise ModelFileError(f"damaged model file: features.one_view is {one_view!r}", path)


def load(path: str | os.PathLike) -> Recognizer:
    """Open a model file: :meth:`Recognizer.load` (:class:`~animeid.errors.ModelFileError` for any
    problem with it)."""
    return Recognizer.load(path)
