"""Training recognisers on a folder-per-character dataset: the study's methods and animeid's best.

:func:`train` reads the dataset (its ``split.csv`` when present, else a seeded stratified split),
fits one of the :data:`METHODS` on the train part (the validation part drives curves and early
stopping), measures the held-out test part, and writes one model file plus, beside it, the
accuracy curves (``MODEL.curves.png``) and the test confusion matrix (``MODEL.confusion.png``).

Methods (``animeid train --method NAME``):

``forest``         the study's baseline: random forest on flattened 96x96 pixels (random_state 24, OOB score);
                   ``tune=True`` searches n_estimators, max_depth, min_samples_split, min_samples_leaf and
                   max_features with scikit-learn's HalvingRandomSearchCV (successive halving)
``softmax``        the study's main method (TensorFlow retrain.py): frozen ImageNet Inception V3, a softmax
                   layer trained by SGD (10,000 steps, learning rate 0.01, batch 10); ``label_smoothing``
                   (the study: 0.1) and ``augment=N`` colour-keeping variants per image (the study: 64)
``logistic``       a stronger head on frozen features: L2-normalised backbone features averaged with the
                   mirrored face's, joined with an HSV colour histogram, multinomial logistic regression
``finetune``       the backbone's top blocks trained too (:mod:`animeid.finetune`), resumable checkpoints
``auto``           the default: ``finetune`` from 1,000 training faces (97 % on holoen16 in ~11 min on 2 cores);
                   with fewer, ``finetune`` or ``logistic``, whichever scores better on the validation faces
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._util import plural, stage
from .errors import DatasetError
from .features import FeaturePipeline, FeatureSpec
from .registry import Registry

__all__ = ["METHODS", "TrainResult", "train", "list_methods", "Method", "compare", "compare_markdown", "STUDY_TABLE"]

log = logging.getLogger("animeid")


@dataclass
class Fitted:
    """What a method returns: the fitted head, how features are made, and its curves."""

    head: Any
    pipeline: FeaturePipeline
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    x_label: str = "step"            # what the curves' x axis counts


@dataclass
class Method:
    name: str
    description: str
    fit: Callable[..., Fitted]
    defaults: dict[str, Any]


#: Training methods by name (``--method``), in the order the CLI lists them.
METHODS: Registry[Method] = Registry("method", option="method")


def _method(name: str, description: str, **defaults: Any):
    """Register the decorated ``fit(train_x, train_y, val_x, val_y, *, <defaults>, progress)`` as a method."""
    return METHODS.decorator(name, lambda fn: Method(name, description, fn, defaults))


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.list(pattern)


def _load_all(paths: Sequence[Path], progress: bool | None = False, desc: str = "loading faces") -> list[np.ndarray]:
    from ._util import bar_options, progress as bar
    from .images import to_array

    return [to_array(p) for p in bar(paths, total=len(paths), desc=desc, unit="face", **bar_options(progress))]


# --------------------------------------------------------------------------- methods

@_method("forest", "random forest on flattened 96x96 pixels (the study's baseline)",
         size=96, tune=False, n_iter=12, cv=3, n_estimators=100, max_depth=None, min_samples_split=2,
         min_samples_leaf=1, max_features="sqrt", seed=24)
def _fit_forest(train_x, train_y, val_x, val_y, *, size, tune, n_iter, cv, n_estimators, max_depth,
                min_samples_split, min_samples_leaf, max_features, seed, progress) -> Fitted:
    from .heads import PixelForest, _resized_rgb

    pipe = FeaturePipeline(FeatureSpec(kind="pixels", size=size))
    X = np.stack([_resized_rgb(im, size) for im in train_x])       # (N, size, size, 3) uint8
    forest = PixelForest(size=size, n_estimators=n_estimators, max_depth=max_depth,
                         min_samples_split=min_samples_split, min_samples_leaf=min_samples_leaf,
                         max_features=max_features, random_state=seed, oob_score=True, n_jobs=-1)
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if tune:
        stage(f"forest: searching {n_iter} parameter settings ({cv}-fold successive halving) on "
              f"{plural(len(X), 'face')}...", progress)
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV, StratifiedKFold

        # the study's search space, around its tuned values (189 trees, depth 13, split 5, leaf 1);
        # successive halving: many settings on few faces, the best ones on more, so it stays affordable
        space = {"n_estimators": [100, 150, 189, 250, 300], "max_depth": [8, 13, 20, None],
                 "min_samples_split": [2, 5, 10], "min_samples_leaf": [1, 2, 4],
                 "max_features": ["sqrt", "log2", 0.02]}
        search = HalvingRandomSearchCV(forest.set_params(oob_score=False, n_jobs=1), space, n_candidates=n_iter,
                                       factor=3, cv=StratifiedKFold(cv, shuffle=True, random_state=seed),
                                       random_state=seed, n_jobs=-1, refit=False, verbose=0)
        search.fit(X, np.asarray(train_y))
        best = search.best_params_
        info["search"] = {"best_params": best, "best_cv_accuracy": float(search.best_score_), "n_iter": n_iter,
                          "cv": cv, "space": {k: [str(v) for v in vs] for k, vs in space.items()}}
        forest = forest.set_params(**best, oob_score=True, n_jobs=-1)
        stage(f"forest: search done, cross-validated {search.best_score_:.1%}, {time.perf_counter() - t0:.0f} s",
              progress)
    forest.fit(X, np.asarray(train_y))
    info["oob_score"] = float(forest.oob_score_)
    stage(f"forest: {forest.n_estimators} trees, out-of-bag {forest.oob_score_:.1%}, "
          f"{time.perf_counter() - t0:.0f} s", progress)
    return Fitted(forest, pipe, {}, info)


def _features_with_augmentation(pipe: FeaturePipeline, images, labels, augment: int, seed: int, progress: bool):
    X = pipe.transform(images, progress=progress)
    y = list(labels)
    if augment:
        from .augment import augment_batch

        variants = augment_batch(images, augment, seed=seed)
        Xa = pipe.transform(variants, progress=progress, cache=False)
        X = np.concatenate([X, Xa])
        y = y + [lab for lab in labels for _ in range(augment)]
    return X, y


@_method("softmax", "frozen Inception V3 + softmax layer trained like TensorFlow's retrain.py (the study)",
         backbone="inception_v3", steps=10000, learning_rate=0.01, batch_size=10, label_smoothing=0.0,
         augment=0, seed=0)
def _fit_softmax(train_x, train_y, val_x, val_y, *, backbone, steps, learning_rate, batch_size,
                 label_smoothing, augment, seed, progress) -> Fitted:
    from .heads import SoftmaxHead

    pipe = FeaturePipeline(FeatureSpec(kind="backbone", backbone=backbone))
    X, y = _features_with_augmentation(pipe, train_x, train_y, augment, seed, progress)
    Xv = pipe.transform(val_x, progress=progress) if len(val_x) else None
    head = SoftmaxHead(steps=steps, learning_rate=learning_rate, batch_size=batch_size,
                       label_smoothing=label_smoothing, validation_fraction=0.1, random_state=seed)
    t0 = time.perf_counter()
    head.fit(X, y, Xv, list(val_y) if Xv is not None else None)
    stage(f"softmax: {steps} steps, {time.perf_counter() - t0:.0f} s", progress)
    return Fitted(head, pipe, _curves(head.history_), {"augment": augment, "label_smoothing": label_smoothing})


def _curves(history: Any) -> dict[str, list[float]]:
    if isinstance(history, dict):
        return {k: [float(v) for v in vs] for k, vs in history.items()}
    out: dict[str, list[float]] = {}
    for row in history or []:
        for k, v in row.items():
            if v is not None:
                out.setdefault(k, []).append(float(v))
    return out


@_method("logistic", "frozen backbone features (+ mirrored face) + colour histogram, logistic regression",
         backbone="efficientnet_lite0_stages", tta_flip=True, color_hist=True, color_weight=1.0, C=1.0, augment=0, seed=0)
def _fit_logistic(train_x, train_y, val_x, val_y, *, backbone, tta_flip, color_hist, color_weight, C, augment,
                  seed, progress) -> Fitted:
    from .heads import LogisticHead

    pipe = FeaturePipeline(FeatureSpec(kind="backbone", backbone=backbone, tta_flip=tta_flip,
                                       color_hist=color_hist, color_weight=color_weight))
    X, y = _features_with_augmentation(pipe, train_x, train_y, augment, seed, progress)
    t0 = time.perf_counter()
    head = LogisticHead(C=C).fit(X, y)
    hist: dict[str, list[float]] = {}
    if len(val_x):
        # a learning curve: accuracy against the number of training faces (one fit per point)
        Xv, yv = pipe.transform(val_x, progress=progress), np.asarray(val_y)
        y_arr = np.asarray(y)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y_arr))
        for frac in (0.1, 0.25, 0.5):
            idx = order[: max(int(frac * len(order)), 2 * len(set(y)))]
            if len(set(y_arr[idx])) < len(set(y)):
                continue
            h = LogisticHead(C=C).fit(X[idx], y_arr[idx])
            hist.setdefault("step", []).append(float(len(idx)))
            hist.setdefault("train_accuracy", []).append(float(np.mean(h.predict(X[idx]) == y_arr[idx])))
            hist.setdefault("val_accuracy", []).append(float(np.mean(h.predict(Xv) == yv)))
        hist.setdefault("step", []).append(float(len(y_arr)))
        hist.setdefault("train_accuracy", []).append(float(np.mean(head.predict(X) == y_arr)))
        hist.setdefault("val_accuracy", []).append(float(np.mean(head.predict(Xv) == yv)))
    stage(f"logistic: fitted on {plural(len(y), 'face')}"
          + (f", val top-1 {hist['val_accuracy'][-1]:.1%}" if hist else "") + f", {time.perf_counter() - t0:.0f} s",
          progress)
    return Fitted(head, pipe, hist, {"augment": augment}, x_label="training faces")


#: ``finetune`` without ``epochs``: 6 passes over the training faces, more when they are few, so that
#: training takes at least :data:`MIN_STEPS` optimiser steps, at most :data:`MAX_AUTO_EPOCHS` passes;
#: under :data:`MIN_FACES_FOR_MORE` training faces, 6. Measured on ``bench/smalldata_bench.py``'s
#: splits, 3 seeds: holoen16 with 65 training faces a character, 6 epochs (195 steps) 92.1 % top-1,
#: 18 epochs 95.1 %; newgame8's own split (192 training faces, 8 characters; direct runs of the
#: method, BENCHMARKS.md), 6 epochs (36 steps) 81.1 %, 12 epochs 93.7 %, 18 epochs 96.2 % (93.7 %
#: through the bench, another run); the full holoen16 split (108 steps an epoch) keeps its 6. On tens
#: of faces more epochs overfit: ``animeid demo``'s 36 drawn faces, 18 epochs, named 12 of its 14
#: scene faces instead of 14. Between 36 and 192 faces nothing was measured: 100 is a choice.
MIN_STEPS = 600
BASE_EPOCHS = 6
MAX_AUTO_EPOCHS = 18
MIN_FACES_FOR_MORE = 100


def auto_epochs(n_train: int, batch_size: int) -> int:
    """The epochs ``finetune`` runs when none are given (see :data:`MIN_STEPS`)."""
    if n_train < MIN_FACES_FOR_MORE:
        return BASE_EPOCHS
    steps = max(1, math.ceil(n_train / max(1, batch_size)))
    return int(min(MAX_AUTO_EPOCHS, max(BASE_EPOCHS, math.ceil(MIN_STEPS / steps))))


@_method("finetune", "EfficientNet-Lite0 with its top blocks fine-tuned, flip averaging; resumable checkpoints",
         backbone="efficientnet_lite0", input_size=128, trainable_blocks=6, epochs=None, batch_size=32,
         learning_rate=1e-3, weight_decay=0.02, label_smoothing=0.1, augmentation="light", tta_flip=True,
         time_budget=1140.0, checkpoint_dir=None, seed=0)
def _fit_finetune(train_x, train_y, val_x, val_y, *, backbone, input_size, trainable_blocks, epochs, batch_size,
                  learning_rate, weight_decay, label_smoothing, augmentation, tta_flip, time_budget, checkpoint_dir,
                  seed, progress) -> Fitted:
    from .finetune import FinetuneConfig, finetune
    from .heads import ProbabilityHead

    epochs = auto_epochs(len(train_x), batch_size) if epochs is None else epochs
    cfg = FinetuneConfig(backbone=backbone, input_size=input_size, trainable_blocks=trainable_blocks, epochs=epochs,
                         batch_size=batch_size, lr=learning_rate, weight_decay=weight_decay,
                         label_smoothing=label_smoothing, augment=augmentation, tta_flip=tta_flip, seed=seed,
                         time_budget_s=time_budget)
    res = finetune(train_x, train_y, val_x, val_y, cfg, checkpoint_dir=checkpoint_dir, resume=True, progress=progress)
    pipe = FeaturePipeline(FeatureSpec(kind="network", backbone=f"{backbone}@{res.backbone.input_size}",
                                       output="probs"), res.backbone, res.onnx_bytes)
    head = ProbabilityHead().set_classes(res.labels)
    hist: dict[str, list[float]] = {}
    for h in res.history:
        hist.setdefault("step", []).append(float(h["epoch"]))
        for k_in, k_out in (("train_acc", "train_accuracy"), ("val_acc", "val_accuracy"),
                            ("train_loss", "train_loss"), ("val_loss", "val_loss")):
            if h.get(k_in) is not None:
                hist.setdefault(k_out, []).append(float(h[k_in]))
    n = len(hist.get("step", []))
    hist = {k: v for k, v in hist.items() if len(v) == n}
    return Fitted(head, pipe, hist, {"best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
                                     "val_acc": res.val_acc, "config": res.config}, x_label="epoch")


@_method("auto", "the default: fine-tuning from 1,000 training faces; below that, fine-tuning or logistic, "
         "whichever the validation faces prefer", min_finetune=1000, time_budget=1140.0, checkpoint_dir=None, seed=0)
def _fit_auto(train_x, train_y, val_x, val_y, *, min_finetune, time_budget, checkpoint_dir, seed, progress) -> Fitted:
    ft_opts = {**METHODS["finetune"].defaults, "time_budget": time_budget, "checkpoint_dir": checkpoint_dir,
               "seed": seed}
    if len(train_x) >= min_finetune or not len(val_x):
        fitted = _fit_finetune(train_x, train_y, val_x, val_y, progress=progress, **ft_opts)
        fitted.info["chosen"] = "finetune"
        return fitted
    # few faces: fine-tuning may not settle (batch-norm statistics need steps); let validation decide
    lo = _fit_logistic(train_x, train_y, val_x, val_y, progress=progress, **METHODS["logistic"].defaults)
    ft = _fit_finetune(train_x, train_y, val_x, val_y, progress=progress, **ft_opts)
    yv = np.asarray(val_y)
    acc = {name: float(np.mean(f.head.predict(f.pipeline.transform(val_x)) == yv)) for name, f in
           (("logistic", lo), ("finetune", ft))}
    best = ft if acc["finetune"] > acc["logistic"] else lo
    stage(f"auto: val top-1 finetune {acc['finetune']:.1%}, logistic {acc['logistic']:.1%}: "
          f"{'finetune' if best is ft else 'logistic'} kept", progress)
    best.info.update({"chosen": "finetune" if best is ft else "logistic", "val_accuracy": acc})
    return best


# --------------------------------------------------------------------------- train

@dataclass
class TrainResult:
    model_path: Path
    method: str
    labels: list[str]
    n_train: int
    n_val: int
    n_test: int
    seconds: float
    test: dict[str, Any] | None            # evaluation report dict on the held-out test part
    curves_png: Path | None
    confusion_png: Path | None
    info: dict[str, Any]
    #: ``(path, reason)`` of the dataset's files left out (unreadable pictures, broken links, link loops)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("model_path", "curves_png", "confusion_png"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


#: How :func:`training_fingerprint` names a face: the first 16 hex digits of the SHA-256 of its file's bytes
FACE_HASH = "sha256-16"


def face_hash(path: str | os.PathLike) -> str:
    """A face file's fingerprint (:data:`FACE_HASH`); "" for a file that cannot be read."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def training_fingerprint(train_paths: Sequence[Path], val_paths: Sequence[Path]) -> dict[str, Any]:
    """What a model records of the faces it learnt from (``training.faces`` in the model file): the
    hashes of its training and validation faces' files, sorted, so that ``evaluate`` can tell when it
    is shown them again. No names or paths."""
    return {"hash": FACE_HASH, "train": sorted({h for h in map(face_hash, train_paths) if h}),
            "val": sorted({h for h in map(face_hash, val_paths) if h})}


def _resolve_method(method: str) -> Method:
    return METHODS.get(method)              # UnknownNameError listing the methods


def _option_rules() -> dict:
    """What each method option may be (:mod:`animeid.options`); options not listed are passed as given."""
    from . import options as o

    return {"size": o.SIDE, "n_iter": o.whole(1), "cv": o.whole(2), "n_estimators": o.whole(1),
            "max_depth": o.whole(1, optional=True), "min_samples_split": o.whole(2), "min_samples_leaf": o.whole(1),
            "steps": o.whole(1), "learning_rate": o.number(0.0, lo_open=True), "batch_size": o.whole(1, 4096),
            "label_smoothing": o.share(hi_open=True), "augment": o.whole(0, 1000), "C": o.number(0.0, lo_open=True),
            "color_weight": o.number(0.0), "input_size": o.whole(32, 1024), "trainable_blocks": o.whole(-1),
            "epochs": o.whole(1), "weight_decay": o.number(0.0), "time_budget": o.number(0.0, lo_open=True),
            "min_finetune": o.whole(0), "seed": o.whole(), "backbone": o.name_or_path(optional=False)}


def _check_options(m: Method, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (None values dropped) checked against ``m``'s options and their rules
    (:class:`~animeid.errors.ConfigError` for an option ``m`` does not have or a bad value)."""
    from .errors import ConfigError

    rules = _option_rules()
    out = {}
    for k, v in options.items():
        if v is None:
            continue
        if k not in m.defaults:
            raise ConfigError(k, f"is not an option of method {m.name!r} (its options: {', '.join(m.defaults)})")
        out[k] = rules[k].check(k, v) if k in rules else v
    if "backbone" in out:                    # a registered backbone (UnknownNameError listing them)
        from .backbones import get_config

        get_config(out["backbone"])
    return out


_CHECKPOINT_FILES = ("finetune.pt",)      # what finetune writes into its checkpoint folder


def _check_outputs(out: Path, overwrite: bool, checkpoints: Path | None) -> None:
    """Before any work: the model path, the plots beside it and the checkpoint folder may be written."""
    from .errors import OutputError
    from .outputs import is_animeid_model, is_animeid_png, prepare_output_file

    prepare_output_file(out, own=is_animeid_model, what="a model file", overwrite=overwrite)
    for suffix in (".curves.png", ".confusion.png"):     # drawn again with each training
        prepare_output_file(out.with_name(out.name + suffix), own=is_animeid_png, what="a plot", overwrite=True)
    if checkpoints is not None and (checkpoints.exists() or checkpoints.is_symlink()):
        foreign = [] if checkpoints.is_dir() and not checkpoints.is_symlink() else [checkpoints.name]
        if not foreign:
            foreign = [f.name for f in checkpoints.iterdir()
                       if f.name not in _CHECKPOINT_FILES and not f.name.endswith(".tmp")]
        if foreign:
            raise OutputError(f"holds {', '.join(sorted(foreign)[:3])}, which animeid did not write: training "
                              "keeps its checkpoints here and removes them at the end; move it away or give "
                              "--out another name", os.path.abspath(checkpoints))


def _remove_checkpoints(d: Path) -> None:
    """Remove the checkpoint files training wrote (and the folder when that empties it), nothing else."""
    import contextlib

    for name in _CHECKPOINT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (d / name).unlink()
    with contextlib.suppress(OSError):
        d.rmdir()


def _head_calibration(fitted: Fitted, va_x: Sequence, va_y: Sequence[str]) -> dict[str, Any]:
    """``{"head_temperature": T, "head_ece": {"before", "after", "n"}}`` for the model's ``thresholds``:
    the temperature of the head's probabilities fitted on the validation faces
    (:func:`animeid.calibration.fit_temperature`; 1.0 with fewer than 20 of them) and their expected
    calibration error before and after it. ``{}`` without validation faces; any failure is logged and
    gives ``{}`` too (the model is saved without it: predictions then use the head's own probabilities)."""
    from .calibration import apply_temperature, expected_calibration_error, fit_temperature

    if not len(va_x):
        return {}
    try:
        col = {str(c): j for j, c in enumerate(fitted.head.classes_)}
        yi = np.array([col.get(str(v), -1) for v in va_y], dtype=np.int64)
        proba = np.asarray(fitted.head.predict_proba(fitted.pipeline.transform(list(va_x))), dtype=np.float64)
        temperature = round(fit_temperature(proba, yi), 4)
        known = yi >= 0

        def ece(p: np.ndarray) -> float | None:
            p = p[known]
            return round(expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == yi[known]), 4) if len(p) \
                else None

        out = {"head_temperature": temperature,
               "head_ece": {"before": ece(proba), "after": ece(apply_temperature(proba, temperature)),
                            "n": int(known.sum())}}
    except Exception as e:  # never lose a trained model to its calibration
        log.warning("head temperature skipped: %s", e or type(e).__name__)
        return {}
    log.info("head temperature %.4g: validation ECE %s -> %s (%d faces)", temperature, out["head_ece"]["before"],
             out["head_ece"]["after"], out["head_ece"]["n"])
    return out


def _for_prediction(fitted: Any, tr_x: list, show: bool) -> tuple[bytes | None, dict[str, Any]]:
    """``(graph to bundle, features to store)`` for prediction: a fine-tuned graph split into one view
    (``one_view``: predict reads the mirror image only where it matters, even without the ``onnx``
    package that splits it), and how much of a training crop the face fills as the default detector
    boxes it (``crop_fill``: crops cut from its boxes will match, :func:`animeid.detect.crop_box_for`)."""
    from .detect import measure_crop_fill

    extra: dict[str, Any] = {}
    onnx_bytes = fitted.pipeline.onnx_for_saving()
    if fitted.pipeline.spec.kind == "network" and onnx_bytes is not None:
        from .onnx_export import one_view_graph

        split = one_view_graph(onnx_bytes)
        if split is not None:
            onnx_bytes, extra["one_view"] = split
    fill = measure_crop_fill(tr_x)
    stage(f"crop geometry: the face fills {fill['fill']:.0%} of a training crop's side as the default detector "
          f"boxes it ({fill['n']} crops measured); crops cut from its boxes will match" if fill else
          "crop geometry: not measured (the default detector found too few faces in the training crops); crops "
          "cut from detector boxes use the detector's own geometry", show)
    if fill:
        extra["crop_fill"] = fill
    return onnx_bytes, extra


def train(dataset: str | os.PathLike, out: str | os.PathLike, *, method: str = "auto", progress: bool | None = None,
          seed: int = 0, test_size: float = 0.2, val_size: float = 0.1, overwrite: bool = False,
          **options: Any) -> TrainResult:
    """Train ``method`` on the folder-per-character ``dataset`` and save the model to ``out``.

    Parameters
    ----------
    dataset : path
        A folder with one subfolder of face pictures per character (or an exported dataset with
        ``split.csv``); at least 2 characters, 2 pictures each.
    out : path
        The model file to write (``.animeid``); checked before training starts.
    method : str
        A name of :data:`METHODS` (``"auto"``, ``"finetune"``, ``"logistic"``, ``"softmax"``, ``"forest"``).
    progress : bool, optional
        True: a bar per stage (with ETA) on a terminal, one summary line per stage on stderr
        otherwise; None: bars on a terminal only; False: nothing.
    seed : int
        Seed of the split and of the method.
    test_size, val_size : float
        Shares of each character's pictures held out for the test report and for validation
        (without ``split.csv``).
    overwrite : bool
        Replace an earlier model at ``out``.
    **options
        Override the method's defaults (see :data:`METHODS`), e.g. ``backbone="efficientnet_lite0"``.

    Returns
    -------
    TrainResult
        The model's path, labels, split sizes, seconds, the held-out test report, the plots, the
        files left out. The model records the dataset's folder name, counts and the hashes of its
        training and validation faces (:func:`training_fingerprint`), never a path, and the
        temperature of its probabilities fitted on the validation faces (:func:`_head_calibration`;
        the test report measures the probabilities at that temperature, as the saved model answers).

    Raises
    ------
    ConfigError
        An option the method does not have, or a value an option cannot take (before any work).
    OutputError
        ``out`` is a folder, a file that is not an animeid model, or (without ``overwrite``) an
        earlier model; or ``out.curves.png`` / ``out.confusion.png`` are pictures animeid did not draw.
    DatasetError
        No pictures, one character only, a character with a single picture, a bad ``split.csv``.

    Examples
    --------
    >>> from animeid.train import train
    >>> r = train("faces/", "mine.animeid", progress=False)          # doctest: +SKIP
    >>> r.labels, round(r.test["top1"], 3)                            # doctest: +SKIP
    (['aoba', 'hifumi', ...], 0.943)
    >>> train("faces/", "rf.animeid", method="forest", n_estimators=500, overwrite=True)  # doctest: +SKIP
    """
    from .evaluate import evaluate_predictions, plot_confusion, plot_curves, read_folder_dataset
    from .modelfile import save_model

    m = _resolve_method(method)
    opts = {**m.defaults, **_check_options(m, options)}
    out = Path(out)
    own_checkpoints = "checkpoint_dir" in opts and opts["checkpoint_dir"] is None
    if own_checkpoints:       # beside the model: an interrupted training resumes when run again
        opts["checkpoint_dir"] = out.with_name(out.name + ".checkpoints")
    _check_outputs(out, overwrite, opts["checkpoint_dir"] if own_checkpoints else None)
    show = progress
    t0 = time.perf_counter()
    ds = read_folder_dataset(dataset, test_size=test_size, val_size=val_size, seed=seed)
    tr_p, tr_y = ds.subset("train")
    va_p, va_y = ds.subset("val")
    te_p, te_y = ds.subset("test")
    if len(set(tr_y)) < 2:
        raise DatasetError("the training part holds fewer than two characters", dataset)
    log.info("training %s on %d faces (%d val, %d test) of %d characters", m.name, len(tr_p), len(va_p), len(te_p),
             len(set(tr_y)))
    tr_x, va_x = _load_all(tr_p, show, "loading training faces"), _load_all(va_p, show, "loading validation faces")
    fitted = m.fit(tr_x, tr_y, va_x, va_y, progress=show, **opts)
    seconds = time.perf_counter() - t0
    head_cal = _head_calibration(fitted, va_x, va_y)   # the temperature predictions apply (issue 12 §5)

    test_report = None
    confusion_png = None
    if te_p:
        from .calibration import apply_temperature

        t_te = time.perf_counter()
        te_x = _load_all(te_p, show, "loading test faces")
        proba = fitted.head.predict_proba(fitted.pipeline.transform(te_x, progress=show))
        proba = apply_temperature(proba, head_cal.get("head_temperature", 1.0))   # as the saved model answers
        rep = evaluate_predictions(te_y, proba, list(fitted.head.classes_))
        stage(f"test: top-1 {rep.top1:.1%} on {plural(rep.n, 'face')}, {time.perf_counter() - t_te:.0f} s", show)
        test_report = rep.to_dict()
        confusion_png = plot_confusion(rep, out.with_name(out.name + ".confusion.png"),
                                       title=f"{m.name}: test top-1 {rep.top1:.1%} (n={rep.n})")
    curves_png = None
    if fitted.history.get("step") and any(k.endswith("accuracy") for k in fitted.history):
        curves_png = plot_curves(fitted.history, out.with_name(out.name + ".curves.png"), title=f"{m.name} training",
                                 xlabel=fitted.x_label)
    spec = fitted.pipeline.spec
    backbone = None
    if spec.kind != "pixels":
        cfg = fitted.pipeline.backbone_config
        backbone = dataclasses.asdict(cfg)
    training = {
        "method": m.name,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if k != "checkpoint_dir"},
        "dataset": Path(dataset).resolve().name,        # its name only: no path of the machine it was trained on
        "faces": training_fingerprint(tr_p, va_p),
        "split": ds.split_source, "seed": seed, "n_train": len(tr_p), "n_val": len(va_p), "n_test": len(te_p),
        "seconds": round(seconds, 2), "info": fitted.info,
        "test": {k: test_report[k] for k in ("top1", "top5", "n", "ece")} if test_report else None,
        "history": fitted.history,
    }
    from .openset import calibrate_for_training  # open-set layer: unknown threshold, prototypes (issue 5)

    t_os = time.perf_counter()
    os_thresholds, os_arrays = calibrate_for_training(fitted, tr_x, tr_y, va_x, va_y,
                                                      head_temperature=head_cal.get("head_temperature", 1.0))
    from .thumbnails import to_arrays as thumb_arrays, typical_faces

    os_arrays = {**os_arrays, **thumb_arrays(typical_faces(tr_x, tr_y))}   # a face per character, for pages
    stage(f"open-set calibration: {time.perf_counter() - t_os:.0f} s", show)
    onnx_bytes, extra_features = _for_prediction(fitted, tr_x, show)
    save_model(out, fitted.head, method=m.name, backbone=backbone, backbone_onnx=onnx_bytes,
               features={**spec.to_dict(), "crop_margin": 0.2, **extra_features},
               training=training,
               thresholds={**os_thresholds, **head_cal},
               extra_arrays=os_arrays)
    if own_checkpoints:
        _remove_checkpoints(opts["checkpoint_dir"])
    return TrainResult(out, m.name, [str(c) for c in fitted.head.classes_], len(tr_p), len(va_p), len(te_p), seconds,
                       test_report, curves_png, confusion_png, fitted.info,
                       [(str(p), why) for p, why in ds.skipped])


# --------------------------------------------------------------------------- compare

#: The study's Table 7 rows, then animeid's default: (row name, method, options)
STUDY_TABLE: list[tuple[str, str, dict[str, Any]]] = [
    ("Random forest (pixels)", "forest", {}),
    ("Random forest, tuned", "forest", {"tune": True}),
    ("Inception V3 + softmax (retrain.py)", "softmax", {}),
    ("Inception V3 + softmax, label smoothing 0.1 + augmentation", "softmax", {"label_smoothing": 0.1, "augment": 64}),
]


def _speed(model_path: Path, faces: list, batch_size: int) -> float:
    """Faces per second of a saved model on face crops (model loaded from its file, warm-up excluded)."""
    from .predict import Recognizer

    rec = Recognizer.load(model_path)
    faces = (faces * (1 + 64 // max(1, len(faces))))[:64]
    rec.predict_proba_faces(faces[:batch_size], batch_size=batch_size)
    t0 = time.perf_counter()
    rec.predict_proba_faces(faces, batch_size=batch_size)
    return len(faces) / (time.perf_counter() - t0)


def compare(dataset: str | os.PathLike, out_dir: str | os.PathLike, *, augment: int = 64,
            rows: Sequence[tuple[str, str, dict[str, Any]]] | None = None, include_best: bool = True,
            progress: bool | None = None, seed: int = 0, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Train every method of the study's Table 7 (and animeid's default) on ``dataset``; one row each.

    Every row trains with :func:`train` on the same split (``split.csv``, or the one made with
    ``seed``) and is scored on its test part.

    Parameters
    ----------
    dataset : path
        A folder-per-character dataset (``split.csv`` honoured).
    out_dir : path
        Folder for the models (``1-forest.animeid``, ...); made when missing.
    augment : int, default 64
        Variants per training face for the augmented softmax row (the study: 64; fewer keep it
        affordable on a CPU, and the row's name says how many were used).
    rows : sequence of (name, method, options), optional
        The rows to train; default :data:`STUDY_TABLE` (``[]``: none of the study's rows).
    include_best : bool, default True
        Add a row for animeid's default method (``auto``).
    progress : bool or None
        As in :func:`train`.
    seed : int, default 0
        Seed of the split (without ``split.csv``) and of each training.
    on_row : callable, optional
        Called with each row's dict as soon as it is done.

    Returns
    -------
    list of dict
        One per row: ``{"method" (the row's name), "name" (the method run), "options", "top1",
        "top5" (shares 0..1 of the test part, None without one), "n_test", "train_seconds",
        "faces_per_s" (a saved model on up to 64 test faces, batch 32), "model" (its path)}``;
        :func:`compare_markdown` makes the table.

    Raises
    ------
    DatasetError, ConfigError, OutputError
        As :func:`train`: a bad dataset or option; a file already at a row's model path (the
        CLI clears an earlier compare's with ``--overwrite``) or ``out_dir`` inside a workspace.

    Examples
    --------
    >>> rows = compare("data/newgame8", "out/compare", augment=2)
    >>> print(compare_markdown(rows))
    | method | top-1 | top-5 | training time | prediction (faces/s, batch 32) |
    ...
    """
    from .evaluate import read_folder_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = [(n, m, dict(o)) for n, m, o in (STUDY_TABLE if rows is None else rows)]
    for n, m, o in table:
        if o.get("augment"):
            o["augment"] = augment
    if include_best:
        table.append(("animeid default (auto)", "auto", {}))
    ds = read_folder_dataset(dataset, seed=seed)
    te_p, _ = ds.subset("test")
    from .images import to_array

    speed_faces = [to_array(p) for p in te_p[:64]]
    results = []
    for i, (name, method, opts) in enumerate(table):
        if opts.get("augment"):
            name = name.replace("augmentation", f"augmentation x{opts['augment']}")
        path = out_dir / f"{i + 1}-{method}.animeid"
        r = train(dataset, path, method=method, progress=progress, seed=seed, **opts)
        if r.info.get("chosen"):
            name = f"{name}: {r.info['chosen']}"
        row = {"method": name, "name": r.method, "options": opts, "top1": r.test["top1"] if r.test else None,
               "top5": r.test["top5"] if r.test else None, "n_test": r.n_test, "train_seconds": round(r.seconds, 1),
               "faces_per_s": round(_speed(path, speed_faces, 32), 1) if speed_faces else None,
               "model": str(path)}
        results.append(row)
        if on_row:
            on_row(row)
    return results


def compare_markdown(rows: Sequence[dict]) -> str:
    lines = ["| method | top-1 | top-5 | training time | prediction (faces/s, batch 32) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        t1 = f"{r['top1']:.1%}" if r["top1"] is not None else "-"
        t5 = f"{r['top5']:.1%}" if r["top5"] is not None else "-"
        sec = r["train_seconds"]
        tt = f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"
        fps = f"{r['faces_per_s']:.0f}" if r["faces_per_s"] else "-"
        lines.append(f"| {r['method']} | {t1} | {t5} | {tt} | {fps} |")
    return "\n".join(lines)
