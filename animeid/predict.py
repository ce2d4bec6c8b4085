"""Naming characters in pictures with a saved model: the library core the CLI and the web app call.

    >>> model = animeid.load("characters.animeid")            # doctest: +SKIP
    >>> model.predict("screenshot.png")                       # doctest: +SKIP
    {'path': 'screenshot.png', 'faces': [{'box': [x0, y0, x1, y1], 'candidates': [{'name': 'aoba', 'p': 0.93}, ...]}]}
    >>> model.enroll("momiji", ["momiji1.png", "momiji2.png"])   # doctest: +SKIP
    >>> model.save("characters+momiji.animeid")                 # doctest: +SKIP

Unknown faces (open-set models: every model trained by this animeid, see :mod:`animeid.openset`):
a face whose open-set score is below the unknown threshold (the model's calibrated one, or
``PredictConfig.unknown_threshold``) gets ``{"name": "unknown", "p": P}`` as its *first* candidate,
followed by the best named candidates (the best guesses), ``top`` entries in all (at least one
named), e.g. with ``top=3``:
``[{"name": "unknown", "p": 0.81}, {"name": "aoba", "p": 0.52}, {"name": "hifumi", "p": 0.3}]``.
``P`` is 0.5 at the threshold and nears 1 far below it; the named candidates' ``p`` are, as always,
probabilities among the model's characters. Known faces are answered as before. The open-set score
of a face comes from :meth:`Recognizer.predict_open_faces`.

A whole illustration or frame is searched for faces first (the study's classifier failed on
uncropped pictures); each face is cropped as in training (square, the model's margin) and named.
A picture that *is* a face crop (one face found filling it) is recognised as it is. A picture in
which no face is found gives no face, and a separate ``whole_picture`` guess (the picture read as a
face crop), so that a title card is never reported as a face.

Batch first: :meth:`Recognizer.predict_batch` and :meth:`Recognizer.predict_faces` take lists;
:meth:`Recognizer.predict` wraps one picture. Everything here is thread-safe and torch-free.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .features import FeaturePipeline, FeatureSpec
from .images import ImageTyping, describe, load_image

__all__ = ["PredictConfig", "Recognizer", "load"]


@dataclass(frozen=True)
class PredictConfig:
    """Options shared by the CLI and the web app."""

    top: int = 3
    threshold: float | None = None  # face detector score threshold (None: the detector's own default)
    detector: str | None = None     # face detector: a name or a detector file (None: animeid's default)
    detect: str = "auto"            # auto: find faces, fall back to the whole picture; always; never
    fill_ratio: float = 0.6         # a single face whose box side is this share of the picture: a crop
    batch_size: int = 32
    unknown: bool = True            # answer "unknown" for faces below the unknown threshold
    unknown_threshold: float | None = None   # None: the model's calibrated threshold (if any)


class Recognizer:
    """A loaded model. ``labels``: its characters; ``method``; ``meta``: the model file's description."""

    def __init__(self, bundle):
        from .openset import OpenSet

        self.bundle = bundle
        self.method: str = bundle.method
        feats = dict(bundle.features or {"kind": "pixels"})
        self.crop_margin = float(feats.pop("crop_margin", 0.2))
        self.spec = FeatureSpec.from_dict(feats)
        self.pipeline = FeaturePipeline(self.spec, bundle.backbone, bundle.backbone_onnx)
        self._lock = threading.Lock()
        #: the open-set layer (unknown answers, enrolled characters), None for models without one
        self.openset = OpenSet.from_bundle(bundle)
        self.labels: list[str] = list(self.openset.labels if self.openset is not None else bundle.labels)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recognizer":
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
    def _features(self, faces: list, batch_size: int, with_embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The head's features and, when asked, the open-set layer's input, in one network run."""
        from .openset import openset_inputs

        if not with_embedding:
            return self.pipeline.transform(faces, batch_size=batch_size, cache=False), None
        os_ = self.openset
        return openset_inputs(self.pipeline, faces, inputs=os_.inputs if os_ is not None else None,
                              batch_size=batch_size, cache=False)

    def predict_open_faces(self, faces: Sequence[ImageTyping], *, batch_size: int = 32
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(proba (n, len(labels)), score (n,))`` for face crops: probabilities over the characters
        answered now (trained and enrolled) and the open-set score (low: no known character; without
        an open-set layer, the highest probability)."""
        return self._predict_open(list(faces), batch_size)[:2]

    def _predict_open(self, faces: list, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[str], Any]:
        os_ = self.openset                       # one consistent snapshot (enrol/forget replace it)
        labels = list(os_.labels) if os_ is not None else list(self.bundle.labels)
        if not faces:
            return np.zeros((0, len(labels))), np.zeros(0), labels, os_
        X, F = self._features(faces, batch_size, os_ is not None)
        head_p = np.asarray(self.bundle.head.predict_proba(X), dtype=np.float64)
        if os_ is None:
            return head_p, head_p.max(axis=1), labels, None
        E = os_.embed(F)
        return os_.proba(E, head_p), os_.score(E), labels, os_

    def predict_proba_faces(self, faces: Sequence[ImageTyping], *, batch_size: int = 32) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for face crops."""
        return self.predict_open_faces(faces, batch_size=batch_size)[0]

    @property
    def unknown_threshold(self) -> float | None:
        """The model's calibrated unknown threshold on the open-set score (None: never unknown)."""
        return self.openset.threshold if self.openset is not None else None

    @property
    def unknown_score_kind(self) -> str:
        """What the open-set score is: ``"prototype_z"`` (open-set layer) or ``"max_proba"``."""
        return "prototype_z" if self.openset is not None else "max_proba"

    def _threshold(self, cfg: PredictConfig) -> float | None:
        if not cfg.unknown:
            return None
        return cfg.unknown_threshold if cfg.unknown_threshold is not None else self.unknown_threshold

    def _candidates(self, p: np.ndarray, top: int, labels: list[str] | None = None, score: float | None = None,
                    threshold: float | None = None, os_: Any = None) -> list[dict[str, Any]]:
        labels = self.labels if labels is None else labels
        unknown = threshold is not None and score is not None and score < threshold
        order = np.argsort(-p, kind="stable")[:max(1, top - 1) if unknown else top]
        out = [{"name": labels[i], "p": round(float(p[i]), 4)} for i in order]
        if unknown:
            from .openset import UNKNOWN

            pu = float(os_.p_unknown(score, threshold)) if os_ is not None else 1.0 - float(p.max(initial=0.0))
            out.insert(0, {"name": UNKNOWN, "p": round(pu, 4)})
        return out

    def predict_faces(self, faces: Sequence[ImageTyping], *, top: int = 3,
                      cfg: PredictConfig | None = None) -> list[list[dict[str, Any]]]:
        """Top ``top`` candidates ``[{"name", "p"}]`` for each face crop (``unknown`` first for a face
        below the unknown threshold; see the module's notes). With ``cfg``, its ``top`` and unknown
        settings apply."""
        cfg = cfg or PredictConfig(top=top)
        proba, score, labels, os_ = self._predict_open(list(faces), cfg.batch_size)
        t = self._threshold(cfg)
        return [self._candidates(p, cfg.top, labels, s, t, os_) for p, s in zip(proba, score)]

    # -- whole pictures
    def _locate(self, img, cfg: PredictConfig, faces: list | None = None) -> tuple[list[tuple[list[int], Any]], bool]:
        """``((box, face crop) pairs, no_face)`` for one picture (``faces``: its detected faces, when the
        caller detected them already). ``no_face`` is True when ``detect="auto"`` found no face and the one
        pair is the whole picture, read as if it were a face crop."""
        from .detect import crop_face, detect_faces

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
            if max(x1 - x0, y1 - y0) >= cfg.fill_ratio * min(w, h):
                return whole, False      # the picture is a face crop already
        size = self.spec.size if self.spec.kind == "pixels" else None
        return [(list(f.box), crop_face(img, f.box, margin=self.crop_margin, size=size or 128)) for f in faces], False

    def predict_batch(self, images: Sequence[ImageTyping], cfg: PredictConfig | None = None) -> list[dict[str, Any]]:
        """One result per picture: ``{"path", "width", "height", "faces": [{"box", "candidates"}]}``.

        With ``detect="auto"``, a picture in which no face is found gets ``"faces": []`` and
        ``"whole_picture": {"box", "candidates"}``: the guess made by reading the whole picture as a
        face crop (right when it is one the detector missed, meaningless for a picture without a face).
        """
        cfg = cfg or PredictConfig()
        located: list[tuple[int, list[int], bool]] = []
        crops: list[Any] = []
        results: list[dict[str, Any]] = []
        from .detect import detect_faces_batch

        imgs = [load_image(image, "RGB") for image in images]
        found = (detect_faces_batch(imgs, threshold=cfg.threshold, detector=cfg.detector)  # one batched pass
                 if cfg.detect != "never" else [None] * len(imgs))
        for i, (image, img) in enumerate(zip(images, imgs)):
            results.append({"path": describe(image), "width": img.size[0], "height": img.size[1], "faces": []})
            pairs, no_face = self._locate(img, cfg, found[i])
            for box, crop in pairs:
                located.append((i, box, no_face))
                crops.append(crop)
        proba, score, labels, os_ = self._predict_open(crops, cfg.batch_size)
        t = self._threshold(cfg)
        for (i, box, no_face), p, s in zip(located, proba, score):
            entry = {"box": [int(v) for v in box], "candidates": self._candidates(p, cfg.top, labels, s, t, os_)}
            if no_face:
                results[i]["whole_picture"] = entry
            else:
                results[i]["faces"].append(entry)
        return results

    def predict(self, image: ImageTyping, cfg: PredictConfig | None = None, **kw: Any) -> dict[str, Any]:
        """:meth:`predict_batch` for one picture; keyword arguments build a :class:`PredictConfig`."""
        if kw:
            cfg = PredictConfig(**{**(cfg.__dict__ if cfg else {}), **kw})
        return self.predict_batch([image], cfg)[0]


    # -- open set: enrol and forget characters without retraining
    def _enrol_crop(self, image: ImageTyping, cfg: PredictConfig, face_crops: bool = False) -> Any:
        """The face to enrol from a picture: the picture itself when it is a face crop (found as one
        face filling it, or ``face_crops``), else the largest face found. A picture without a face
        found is refused (:class:`~animeid.errors.InputError`) unless ``face_crops``."""
        from .errors import InputError

        img = load_image(image, "RGB")
        if face_crops or cfg.detect == "never":
            return img
        found, no_face = self._locate(img, cfg)
        if no_face or not found:
            raise InputError("no face found in the picture; if it is a face crop, say so (enroll --face-crops, "
                             "or face_crops=True)", describe(image))
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
        Returns ``{"name", "added", "faces", "new"}`` (``faces``: the character's gallery size).
        """
        from .errors import InputError, ModelFileError
        from .openset import check_name

        name = check_name(name)
        if isinstance(images, (str, bytes, bytearray, os.PathLike)) or hasattr(images, "read"):
            images = [images]
        images = list(images)
        if not images:
            raise InputError(f"no pictures given to enrol {name!r}")
        if self.openset is None:
            raise ModelFileError("this model has no open-set layer (made by an older animeid, or its calibration "
                                 "failed), so it cannot enrol characters: retrain it with `animeid train`", self.path)
        cfg = cfg or PredictConfig()
        crops = [self._enrol_crop(im, cfg, face_crops) for im in images]       # raises before any change
        _, F = self._features(crops, cfg.batch_size, True)
        with self._lock:
            os_ = self.openset
            E = os_.embed(F)
            new = name not in os_.labels
            self.openset = os_.enrolled(name, E)
            self.labels = list(self.openset.labels)
        n = int(sum(1 for lab in self.openset.gallery_labels if lab == name))
        return {"name": name, "added": len(crops), "faces": n, "new": new}

    def forget(self, name: str) -> dict[str, Any]:
        """Remove character ``name``: its enrolled pictures go; a trained character is masked out
        (the head still holds it, but it is never answered). In memory; :meth:`save` writes the file."""
        from .errors import InputError, ModelFileError

        if self.openset is None:
            raise ModelFileError("this model has no open-set layer (made by an older animeid): retrain it to "
                                 "forget characters", self.path)
        from .names import normalize_name

        with self._lock:
            os_ = self.openset
            name = next((lab for lab in os_.labels if normalize_name(lab) == normalize_name(name)), normalize_name(name))
            if name not in os_.labels:
                raise InputError(f"no character {name!r} in this model (characters: {', '.join(os_.labels)})")
            if len(os_.labels) <= 1:
                raise InputError(f"{name!r} is the model's last character; a model needs at least one")
            self.openset = os_.forgotten(name)
            self.labels = list(self.openset.labels)
        return {"name": name, "trained": name in os_.trained, "characters": len(self.labels)}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the model, with its current gallery and forgotten characters, to ``path`` (default:
        the file it was loaded from), atomically."""
        from .modelfile import save_model
        from .openset import THRESHOLD_KEYS

        b = self.bundle
        path = Path(path) if path is not None else b.path
        if path is None:
            raise ValueError("no path to save to")
        with self._lock:
            os_ = self.openset
        thresholds = {k: v for k, v in (b.thresholds or {}).items() if k not in THRESHOLD_KEYS}
        extra = {k: v for k, v in (b.extra_arrays or {}).items() if not k.startswith("openset.")}
        if os_ is not None:
            th, arr = os_.to_model_parts()
            thresholds.update(th)
            extra.update(arr)
        save_model(path, b.head, method=b.method, labels=list(b.labels), backbone=b.backbone,
                   backbone_onnx=b.backbone_onnx, features=b.features, training=b.training, thresholds=thresholds,
                   extra_arrays=extra)
        return path


def load(path: str | os.PathLike) -> Recognizer:
    return Recognizer.load(path)
