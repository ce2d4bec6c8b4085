"""How a recogniser turns face crops into the numbers its head reads: one definition for training and prediction.

A :class:`FeatureSpec` is data (it is stored in the model file):

* ``kind="pixels"``: flattened ``size`` x ``size`` RGB pixels (the study's random forest);
* ``kind="backbone"``: an ImageNet backbone's pooled features (:mod:`animeid.backbones`), optionally
  averaged with those of the mirrored face (``tta_flip``) and joined with an HSV colour histogram
  (``color_hist``; hair and eye colour identify characters);
* ``kind="network"``: an output (``output``, e.g. ``"probs"``) of a fine-tuned network bundled in the
  model file; its other outputs (``"identity"``, ``"embedding"``) serve open-set work
  (:func:`animeid.openset.openset_inputs`, through :meth:`FeaturePipeline.run_outputs`).

:class:`FeaturePipeline` computes them. At training time the backbone runs through the cached
ONNX export (:func:`animeid.backbones.extract_features`, features cached on disk); in a saved model
the same ONNX graph travels inside the file, so prediction needs only ONNX Runtime.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .images import ImageTyping, to_array

__all__ = ["FeatureSpec", "FeaturePipeline"]

_NOT_YET = object()


@dataclass(frozen=True)
class FeatureSpec:
    kind: str = "backbone"                # pixels | backbone | network
    size: int = 96                        # pixels: side of the resized face
    backbone: str | None = None           # backbone: registry name, "name@size" allowed
    tta_flip: bool = False                # average with the mirrored face's features
    color_hist: bool = False              # join an HSV colour histogram
    color_weight: float = 1.0             # its weight after both blocks are L2-normalised
    output: str | None = None             # network: name of the ONNX output to read

    def __post_init__(self):
        from . import options as o

        o.check_fields(self, {"kind": o.choice(("pixels", "backbone", "network")), "size": o.SIDE,
                              "backbone": o.name_or_path(), "color_weight": o.number(0.0), "output": o.name_or_path()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        if self.kind == "pixels":
            return f"{self.size}x{self.size} pixels"
        s = self.backbone or "fine-tuned network"
        if self.tta_flip:
            s += " + flip"
        if self.color_hist:
            s += " + colour histogram"
        return s


def _flip(images: Sequence[ImageTyping]) -> list[np.ndarray]:
    return [np.ascontiguousarray(to_array(im)[:, ::-1]) for im in images]


class FeaturePipeline:
    """Computes a :class:`FeatureSpec`'s features; thread-safe, ONNX session opened lazily.

    ``backbone_cfg``: the :class:`~animeid.backbones.BackboneConfig` (or its dict) whose
    preprocessing applies; ``onnx_bytes``: the graph to run (a saved model's); without it the
    backbone's cached export and the on-disk feature cache are used (training).
    """

    def __init__(self, spec: FeatureSpec, backbone_cfg: Any = None, onnx_bytes: bytes | None = None,
                 one_view: dict[str, Any] | None = None):
        self.spec = spec
        self.onnx_bytes = onnx_bytes
        #: the recipe of a graph stored as one view already (model files of format 2), else None
        self.one_view = one_view
        self._cfg = backbone_cfg
        self._session = None
        self._views: Any = _NOT_YET   # (session, recipe) of the graph's one-view form, or None
        self._lock = threading.Lock()

    # -- backbone config and session
    @property
    def backbone_config(self):
        from .backbones import BackboneConfig, get_config

        if self._cfg is None:
            self._cfg = get_config(self.spec.backbone)
        elif isinstance(self._cfg, dict):
            names = {f.name for f in dataclasses.fields(BackboneConfig)}
            d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self._cfg.items() if k in names}
            self._cfg = BackboneConfig(**d)
        return self._cfg

    def _open(self, graph: bytes):
        import onnxruntime as ort

        from .backbones import default_providers

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # no busy-waiting between operators: in predict the face detector runs beside it
        # (measured alone too: 171 faces/s without spinning, 156 with, fine-tuned Lite0 at 128 px)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(graph, opts, providers=default_providers())

    def _sess(self):
        with self._lock:
            if self._session is None:
                self._session = self._open(self.onnx_bytes)
            return self._session

    def _one_view(self) -> tuple[Any, dict[str, Any]] | None:
        """``(session, recipe)`` of the bundled graph split into one view
        (:func:`animeid.onnx_export.one_view_graph`; stored so by ``train`` since model format 2, no
        ``onnx`` package needed), or None when it cannot be split."""
        with self._lock:
            if self._views is _NOT_YET:
                split = None
                if self.one_view is not None and self.onnx_bytes is not None:   # stored split
                    split = (self.onnx_bytes, self.one_view)
                elif self.spec.kind == "network" and self.onnx_bytes is not None:
                    from .onnx_export import one_view_graph

                    split = one_view_graph(self.onnx_bytes)
                self._views = None if split is None else (self._open(split[0]), split[1])
            return self._views

    def output_names(self) -> list[str]:
        """Names of the bundled graph's outputs."""
        views = self._one_view()
        if views is not None:
            return list(views[1]["outputs"])
        return [o.name for o in self._sess().get_outputs()]

    def _run(self, sess: Any, images: Sequence[ImageTyping], names: Sequence[str] | None, batch_size: int,
             mirrored: bool = False) -> dict[str, np.ndarray]:
        """Outputs ``names`` (None: all) of session ``sess`` for ``images`` (their mirror images when
        ``mirrored``): ``{name: (n, d) float32}``, one run per batch."""
        from .backbones import preprocess

        inp = sess.get_inputs()[0].name
        names = list(names) if names is not None else [o.name for o in sess.get_outputs()]
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        for i in range(0, len(images), batch_size):
            x = preprocess(images[i:i + batch_size], self.backbone_config)
            if mirrored:
                x = np.ascontiguousarray(x[..., ::-1])
            for out, a in zip(chunks, sess.run(names, {inp: x})):
                out.append(a.reshape(len(x), -1).astype(np.float32))
        return {n: (np.concatenate(c) if c else np.zeros((0, 0), np.float32)) for n, c in zip(names, chunks)}

    def run_views(self, images: Sequence[ImageTyping], batch_size: int = 32) -> dict[str, np.ndarray] | None:
        """Every output of the one-view graph for ``images`` (no mirror image), or None when the
        bundled graph cannot be split (:func:`animeid.onnx_export.one_view_graph`: then only
        :meth:`run_outputs` applies). :meth:`view_outputs` reads the graph's outputs from them;
        :meth:`add_mirror` adds the mirror images' view."""
        views = self._one_view()
        return None if views is None else self._run(views[0], list(images), None, batch_size)

    def view_outputs(self, views: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs (``probs``, ``embedding``, ...) of one view, from :meth:`run_views`."""
        from .onnx_export import combine_views

        return combine_views(views, None, self._one_view()[1])

    def add_mirror(self, views: dict[str, np.ndarray], images: Sequence[ImageTyping], batch_size: int = 32
                   ) -> dict[str, np.ndarray]:
        """The graph's outputs averaged over each picture and its mirror image, exactly as the
        whole graph gives them, from :meth:`run_views`'s outputs ``views`` of the same ``images``."""
        from .onnx_export import combine_views

        sess, recipe = self._one_view()
        return combine_views(views, self._run(sess, list(images), None, batch_size, mirrored=True), recipe)

    def run_outputs(self, images: Sequence[ImageTyping], names: Sequence[str], batch_size: int = 32
                    ) -> list[np.ndarray]:
        """The graph's outputs ``names`` for ``images``, one ``(n, d)`` float32 array each (one run per
        batch; a flip-averaging graph split into one view runs both views: the same numbers)."""
        images = list(images)
        if self._one_view() is not None:
            both = self.add_mirror(self.run_views(images, batch_size), images, batch_size)
            return [both[n] for n in names]
        res = self._run(self._sess(), images, names, batch_size)
        return [res[n] for n in names]

    def main_output(self) -> str:
        """The output the head reads: ``spec.output`` when the graph has it, else its first."""
        outs = self.output_names()
        return self.spec.output if self.spec.output in outs else outs[0]

    def _run_onnx(self, images: Sequence[ImageTyping], batch_size: int) -> np.ndarray:
        return self.run_outputs(images, [self.main_output()], batch_size)[0]

    def _deep(self, images: Sequence[ImageTyping], batch_size: int, cache: bool, progress: bool,
              mirrored: bool = False) -> np.ndarray:
        if self.onnx_bytes is not None:
            return self._run_onnx(images, batch_size)
        from .backbones import extract_features

        desc = f"features ({self.backbone_config.name}{', mirrored' if mirrored else ''})"
        return extract_features(self.backbone_config, images, batch_size=batch_size, cache=cache, progress=progress,
                                desc=desc)

    # -- public
    def transform(self, images: Sequence[ImageTyping], *, batch_size: int = 32, cache: bool = True,
                  progress: bool = False) -> np.ndarray:
        """Features ``(n, d)`` float32 for face crops ``images`` (pixels: ``(n, size, size, 3)`` uint8)."""
        from .heads import _resized_rgb, color_histograms, combine_features

        images = list(images)
        if self.spec.kind == "pixels":       # the resized faces themselves; PixelForest flattens them
            return np.stack([_resized_rgb(im, self.spec.size) for im in images])
        if not images:
            raise ValueError("no pictures")
        feats = self._deep(images, batch_size, cache, progress)
        if self.spec.tta_flip:
            feats = 0.5 * (feats + self._deep(_flip(images), batch_size, cache, progress, mirrored=True))
        if self.spec.color_hist:
            feats = combine_features(feats, color_histograms(images), weights=[1.0, self.spec.color_weight])
        return feats.astype(np.float32)

    def onnx_for_saving(self) -> bytes | None:
        """The graph a saved model must carry (the backbone's export, made once with torch)."""
        if self.spec.kind == "pixels":
            return None
        if self.onnx_bytes is not None:
            return self.onnx_bytes
        from .backbones import onnx_path

        return onnx_path(self.backbone_config).read_bytes()
