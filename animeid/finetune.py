"""Fine-tuning an ImageNet backbone on face crops (torch, CPU-friendly), exported to ONNX.

:func:`finetune` trains the last ``trainable_blocks`` blocks of a registered backbone
(:mod:`animeid.backbones`) plus a new linear classifier with AdamW, a cosine learning-rate schedule
(short linear warm-up), label smoothing and colour-keeping augmentation (:mod:`animeid.augment`: flips,
small affine changes, blur -- never hue). After every epoch it measures accuracy on the validation
pictures, keeps the best epoch's weights and writes a checkpoint, so an interrupted run resumes where it
stopped. The result holds the fine-tuned network as ONNX bytes:

* input ``"pixels"``: ``(N, 3, S, S)`` float32, made by :func:`animeid.backbones.preprocess` with
  :attr:`FinetuneResult.backbone` (resize to ``S`` with ``interpolation``, ``(x - mean) / std``);
* output ``"probs"``: ``(N, C)`` class probabilities (softmax), columns in :attr:`FinetuneResult.labels`
  order; with ``tta_flip`` the average of the picture's and its mirror image's probabilities;
* output ``"embedding"``: ``(N, 1280)`` L2-normalised penultimate features (mean of picture and mirror
  with ``tta_flip``), for open-set / nearest-neighbour use;
* output ``"identity"`` (EfficientNet-Lite with some blocks frozen): what the open-set layer
  (:mod:`animeid.openset`) embeds to tell characters apart, including ones the network was never
  trained on. The fine-tuned embedding (weight :data:`IDENTITY_FINETUNED_WEIGHT`) beside pooled outputs,
  each of unit length, of ImageNet blocks: two of the frozen blocks (computed anyway) and, from a frozen
  ImageNet copy of the fine-tuned blocks run on the same shared frozen part, two blocks and the head.
  Fine-tuning on the known characters makes the embedding name them well and new ones badly (their
  faces drift to the known characters); the ImageNet blocks keep what tells any two characters apart
  (the figures behind this choice: BENCHMARKS.md, "Design measurements").

All outputs have a dynamic batch axis. Checkpoints (``checkpoint_dir/finetune.pt``) are private
``torch.save`` files; what ships is the ONNX graph.

Resuming guarantee: every epoch's randomness (shuffle order, augmentation, dropout) is seeded from
``(seed, epoch)``, and the checkpoint holds model, optimiser, scheduler position and history. A rerun with
``resume=True`` continues at the first unfinished epoch and, with the same thread count on the same
machine, ends with the same weights as an uninterrupted run.

torch is imported inside functions only: ``import animeid.finetune`` stays light.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._util import atomic_write, log, progress as _progress, stage as _stage
from .images import ImageTyping, load_image
from .onnx_export import INPUT_NAME, RESAMPLE, export

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["AUGMENTS", "FinetuneConfig", "FinetuneResult", "finetune", "onnx_predict"]

#: Augmentation choices: no change, mirror only, or a strength of :func:`animeid.augment.build_augmenter`.
AUGMENTS = ("none", "flip", "light", "study", "strong")
CHECKPOINT_NAME = "finetune.pt"
_CHECKPOINT_FORMAT = 1
_OUTPUTS = ("probs", "embedding")
#: config fields that may change between a run and its resumption
_RESUME_FREE = ("threads", "time_budget_s")


@dataclass
class FinetuneConfig:
    """What :func:`finetune` does. Defaults: the recommended recipe for 128 px face crops on a CPU.

    Measured on holoen16-dev (16 characters, 3,452 training / 494 validation / 985 held-out pictures,
    ``stratified_split(seed=0)``) on a shared 2-core CPU: the defaults reach 97.1 % / 96.7 % top-1 on the
    held-out part (seeds 0 / 1; frozen Lite0 + colour histogram + logistic regression: 91 %) in 11 minutes
    of training (load average 3-9; about 45-90 s an epoch), and the exported graph (flip averaging included)
    predicts ~100-120 faces/s at batch 32. ``input_size=160`` with ``epochs=8`` reached 97.8 % in 17
    minutes, but predicts at ~70 faces/s.
    ``time_budget_s`` is checked before each epoch (an epoch already running is finished).
    """

    backbone: str = "efficientnet_lite0"  #: a registered backbone name (no ``@size``; see input_size)
    input_size: int | None = 128  #: pixels the network sees (faces are ~128 px); None: the backbone's own size
    trainable_blocks: int = 6  #: last k blocks + head conv + classifier train; -1: everything
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3  #: peak learning rate of the backbone's trainable blocks (AdamW)
    head_lr: float | None = None  #: peak learning rate of the new classifier; None: 3 x lr
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    augment: str = "light"  #: one of :data:`AUGMENTS`
    tta_flip: bool = True  #: the exported graph averages each picture with its mirror image
    warmup_epochs: float = 0.3
    dropout: float = 0.2  #: dropout before the classifier
    freeze_bn: bool = False  #: keep every batch norm on its ImageNet statistics
    seed: int = 0
    threads: int | None = None  #: torch intra-op threads during training; None: leave as is
    time_budget_s: float | None = None  #: stop before an epoch that would not fit; keep the best so far

    def __post_init__(self):
        from . import options as o
        from .errors import ConfigError

        o.check_fields(self, {
            "backbone": o.name_or_path(optional=False), "input_size": o.whole(32, 1024, optional=True),
            "trainable_blocks": o.whole(-1, what="-1: all"), "epochs": o.whole(1), "batch_size": o.whole(1, 4096),
            "lr": o.number(0.0, lo_open=True), "head_lr": o.number(0.0, lo_open=True, optional=True),
            "weight_decay": o.number(0.0), "label_smoothing": o.share(hi_open=True), "augment": o.choice(AUGMENTS),
            "warmup_epochs": o.number(0.0), "dropout": o.share(hi_open=True), "seed": o.whole(),
            "threads": o.whole(0, optional=True, what="0: leave as is"),
            "time_budget_s": o.number(0.0, lo_open=True, optional=True)})
        if "@" in self.backbone:
            raise ConfigError("backbone", "give the input size as input_size, not as backbone='name@size'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FinetuneResult:
    """The trained network and how it got there."""

    labels: list[str]  #: class order of the ``probs`` output
    history: list[dict[str, float]]  #: per epoch: epoch, step, lr, train_loss, train_acc, val_loss, val_acc, seconds
    onnx_bytes: bytes  #: pixels -> (probs, embedding); see the module docstring
    backbone: Any  #: :class:`animeid.backbones.BackboneConfig` at the used input size (preprocessing)
    preprocessing: dict[str, Any]  #: input_size, mean, std, interpolation (same as ``backbone``)
    seconds: float  #: training time, all runs of a resumed training together (export included)
    best_epoch: int  #: the epoch whose weights were exported (best validation accuracy; last without val)
    config: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False  #: the time budget ended training before ``epochs``
    #: the exported torch module (eval mode, same outputs as the ONNX graph); not saved anywhere
    model: Any = field(default=None, repr=False)

    @property
    def val_acc(self) -> float | None:
        for h in self.history:
            if h["epoch"] == self.best_epoch:
                return h.get("val_acc")
        return None

    def predict_proba(self, images: Sequence[ImageTyping], batch_size: int = 32) -> np.ndarray:
        """``(N, C)`` probabilities of pictures by the exported graph (ONNX Runtime)."""
        return onnx_predict(self.onnx_bytes, images, self.backbone, batch_size=batch_size)[0]


# ------------------------------------------------------------------------------------------------ helpers


def _load_resized(images: Sequence[ImageTyping], size: int, interpolation: str) -> np.ndarray:
    """``(N, S, S, 3)`` uint8: loaded like :func:`animeid.backbones.preprocess`, before normalising."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        img = load_image(im, "RGB")
        if img.size != (size, size):
            img = img.resize((size, size), RESAMPLE[interpolation])
        out[i] = np.asarray(img)
    return out


def _fingerprint(train_labels: Sequence[str], val_labels: Sequence[str]) -> str:
    """Identifies the data set's shape (classes, pictures per class), to refuse a foreign checkpoint."""
    counts = [sorted((c, list(labs).count(c)) for c in set(labs)) for labs in (train_labels, val_labels)]
    return hashlib.sha256(json.dumps(counts).encode()).hexdigest()[:16]


def _augmenter(kind: str, seed_seq: np.random.SeedSequence):
    if kind in ("none", "flip"):
        return None
    from .augment import reseed, build_augmenter

    aug = build_augmenter(kind)
    reseed(aug, seed_seq)
    return aug


def _augment(batch: np.ndarray, kind: str, seed: Sequence[int]) -> np.ndarray:
    """Augmented copy of a ``(B, S, S, 3)`` uint8 batch, determined by ``seed``."""
    if kind == "none":
        return batch
    if kind == "flip":
        rng = np.random.default_rng(list(seed))
        flip = rng.random(len(batch)) < 0.5
        out = batch.copy()
        out[flip] = out[flip, :, ::-1]
        return out
    aug = _augmenter(kind, np.random.SeedSequence(list(seed)))
    return np.stack([aug(image=np.ascontiguousarray(a))["image"] for a in batch])


def _to_tensor(batch: np.ndarray, mean: np.ndarray, std: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    return (x - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)


def _build(cfg: FinetuneConfig, n_classes: int, bcfg):
    """(network, backbone) -- the network maps pixels to logits."""
    import torch
    from torch import nn

    from . import backbones as B

    backbone = B.create_torch_model(bcfg, trainable_blocks=cfg.trainable_blocks)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.dropout = nn.Dropout(cfg.dropout)
            self.fc = nn.Linear(bcfg.feature_dim, n_classes)
            # the backbone's own dropout (before its removed classifier) is replaced by ours
            if isinstance(getattr(backbone, "_dropout", None), nn.Dropout):
                backbone._dropout = nn.Identity()

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dropout(self.features(x)))

        def train(self, mode: bool = True):
            super().train(mode)
            if mode:  # fully frozen sub-modules (no stochastic depth there) and, optionally, every BN
                for m in self.backbone.modules():
                    params = list(m.parameters())
                    if (params and not any(p.requires_grad for p in params)) or \
                            (cfg.freeze_bn and isinstance(m, nn.BatchNorm2d)):
                        m.eval()
            return self

    net = Classifier()
    torch.nn.init.normal_(net.fc.weight, std=0.01)
    torch.nn.init.zeros_(net.fc.bias)
    return net


#: ``"identity"`` output: weight of the fine-tuned embedding beside the frozen ImageNet blocks (unit length each)
IDENTITY_FINETUNED_WEIGHT = 0.7


def _identity_taps(n_blocks: int, trainable: int) -> tuple[list[int], list[int]] | None:
    """Blocks whose pooled outputs join the ``"identity"`` output: ``(frozen taps, ImageNet-branch taps)``,
    or ``None`` when the network has no frozen part to share (all or none of it trained).

    EfficientNet-Lite0 with its last 6 of 16 blocks trained: blocks 7 and 9 (frozen, computed anyway)
    and, in a frozen ImageNet copy of the trained blocks, blocks 10 and 14 and the pooled head."""
    nf = n_blocks - trainable
    if trainable <= 0 or nf < 1:
        return None
    return sorted({max(0, nf - 3), nf - 1}), sorted({nf, max(nf, n_blocks - 2)})


class _Exported:
    """Builds the export wrapper lazily (torch inside)."""

    @staticmethod
    def make(net, tta_flip: bool, reference=None, trainable_blocks: int = 0):
        """The graph to export. ``reference``: the backbone with its ImageNet weights (an EfficientNet-Lite
        whose last ``trainable_blocks`` blocks were fine-tuned): adds the ``"identity"`` output."""
        import torch
        from torch import nn
        from torch.nn import functional as F

        bb = net.backbone
        taps = None
        if reference is not None and hasattr(bb, "_blocks") and hasattr(reference, "_blocks"):
            taps = _identity_taps(len(bb._blocks), trainable_blocks)
        nf = len(bb._blocks) - trainable_blocks if taps else 0

        class Export(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net
                if taps:  # the ImageNet weights of the trained blocks and head, frozen
                    self.ref_blocks = nn.ModuleList(copy.deepcopy(list(reference._blocks[nf:])))
                    self.ref_head = copy.deepcopy(reference._conv_head)
                    self.ref_bn = copy.deepcopy(reference._bn1)

            def _pooled(self, x: torch.Tensor):
                """(fine-tuned features, [pooled identity blocks]) of a batch."""
                h = F.relu6(bb._bn0(bb._conv_stem(x)))
                blocks = []
                for i, blk in enumerate(bb._blocks[:nf]):
                    h = blk(h)
                    if i in taps[0]:
                        blocks.append(h.mean((2, 3)))
                g, r = h, h
                for blk in bb._blocks[nf:]:
                    g = blk(g)
                for j, blk in enumerate(self.ref_blocks):
                    r = blk(r)
                    if nf + j in taps[1]:
                        blocks.append(r.mean((2, 3)))
                blocks.append(F.relu6(self.ref_bn(self.ref_head(r))).mean((2, 3)))
                return F.relu6(bb._bn1(bb._conv_head(g))).mean((2, 3)), blocks

            def forward(self, x: torch.Tensor):
                n = x.shape[0]
                xx = torch.cat([x, torch.flip(x, dims=[3])], 0) if tta_flip else x
                if taps:
                    f, blocks = self._pooled(xx)
                else:
                    f, blocks = self.net.features(xx), []
                p = F.softmax(self.net.fc(f), dim=1)
                if tta_flip:
                    probs, emb = (p[:n] + p[n:]) * 0.5, f[:n] + f[n:]
                    blocks = [b[:n] + b[n:] for b in blocks]
                else:
                    probs, emb = p, f
                emb = F.normalize(emb, dim=1)
                if not taps:
                    return probs, emb
                ident = torch.cat([emb * IDENTITY_FINETUNED_WEIGHT] + [F.normalize(b, dim=1) for b in blocks], 1)
                return probs, emb, ident

        return Export().eval()


def _export_onnx(model, size: int) -> bytes:
    import torch

    dummy = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        outputs = list(_OUTPUTS) + (["identity"] if len(model(dummy)) > len(_OUTPUTS) else [])
    return export(model, dummy, outputs)


def onnx_predict(onnx_bytes: bytes, images: Sequence[ImageTyping] | np.ndarray, backbone: Any,
                 batch_size: int = 32, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs, embeddings) of pictures (or of a preprocessed ``(N, 3, S, S)`` float32 array) by an
    exported fine-tuned graph. ``backbone``: the :class:`~animeid.backbones.BackboneConfig` (or its
    ``name@size``) of :attr:`FinetuneResult.backbone`."""
    import onnxruntime as ort

    from . import backbones as B

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    bcfg = B.get_config(backbone)
    pre = isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype == np.float32
    n = len(images)
    probs, embs = [], []
    for s in range(0, n, batch_size):
        chunk = images[s:s + batch_size]
        x = chunk if pre else B.preprocess(list(chunk), bcfg)
        p, e = sess.run(list(_OUTPUTS), {INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        probs.append(p)
        embs.append(e)
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(embs)


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


class _Prefetch:
    """Make the next batches (augmentation) in a thread while torch works on this one (2 ahead at most)."""

    def __init__(self, fn, items):
        self.fn, self.items = fn, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        import queue

        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def work():
            for it in self.items:
                try:
                    item = (True, self.fn(it))
                except BaseException as e:  # re-raised in the consumer
                    item = (False, e)
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or not item[0]:
                    return

        t = threading.Thread(target=work, daemon=True, name="animeid-finetune-prefetch")
        t.start()
        try:
            for _ in range(len(self.items)):
                ok, val = q.get()
                if not ok:
                    raise val
                yield val
        finally:
            stop.set()
            t.join(timeout=5)


# ------------------------------------------------------------------------------------------------ training


@dataclass
class _Data:
    """The pictures resized for the backbone, and their class columns (``yv`` is -1 for a validation
    face of a character the training faces lack)."""
    labels: list[str]
    X: np.ndarray
    y: np.ndarray
    Xv: np.ndarray
    yv: np.ndarray
    bcfg: Any
    mean: np.ndarray
    std: np.ndarray

    @property
    def size(self) -> int:
        return self.bcfg.input_size


def _prepare(train_images, train_labels, val_images, val_labels, cfg: FinetuneConfig) -> _Data:
    """Step 1, build the data: labels checked, pictures loaded and resized for the backbone."""
    from . import backbones as B

    train_labels = [str(x) for x in train_labels]
    val_labels = [str(x) for x in val_labels]
    if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
        raise ValueError("images and labels differ in length")
    labels = sorted(set(train_labels))
    if len(labels) < 2:
        raise ValueError(f"fine-tuning needs at least 2 characters, got {labels}")
    col = {c: i for i, c in enumerate(labels)}
    bcfg = B.get_config(cfg.backbone)
    if cfg.input_size:
        bcfg = bcfg.replace(input_size=int(cfg.input_size))
    return _Data(labels,
                 _load_resized(list(train_images), bcfg.input_size, bcfg.interpolation),
                 np.array([col[c] for c in train_labels], np.int64),
                 _load_resized(list(val_images), bcfg.input_size, bcfg.interpolation),
                 np.array([col.get(c, -1) for c in val_labels], np.int64),
                 bcfg, np.asarray(bcfg.mean, np.float32), np.asarray(bcfg.std, np.float32))


def _read_checkpoint(ckpt: Path | None, resume: bool, fixed: dict, fp: str) -> dict | None:
    """A checkpoint of this configuration and data to continue from, or None; ValueError for another one's."""
    import torch

    if ckpt is None or not resume or not ckpt.is_file():
        return None
    state = torch.load(os.fspath(ckpt), map_location="cpu", weights_only=True)
    if state.get("format") != _CHECKPOINT_FORMAT or state.get("fixed") != fixed or state.get("data") != fp:
        raise ValueError(f"checkpoint {ckpt} is of another configuration or data set; "
                         "remove it, use another checkpoint_dir, or pass resume=False")
    return state


def _optimizer(net, cfg: FinetuneConfig):
    """AdamW: the new head at ``head_lr`` (default 3x ``lr``), the trainable backbone blocks at ``lr``."""
    import torch

    body_params = [p for p in net.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(net.fc.parameters()), "lr": cfg.head_lr or 3 * cfg.lr}]
    if body_params:
        groups.append({"params": body_params, "lr": cfg.lr})
    for g in groups:
        g["peak_lr"] = g["lr"]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _lr_factor(step: int, warmup: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 at ``total_steps``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * (1 + math.cos(math.pi * t))


def _validate(net, data: _Data, tta_flip: bool) -> tuple[float | None, float | None]:
    """Step 3, evaluate: top-1 and mean log loss on the validation faces (None without any)."""
    import torch
    from torch.nn import functional as F

    if not len(data.Xv):
        return None, None
    net.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for s in range(0, len(data.Xv), 64):
            xb = _to_tensor(data.Xv[s:s + 64], data.mean, data.std)
            logits = net(xb)
            if tta_flip:
                logits = torch.log((F.softmax(logits, 1) + F.softmax(net(torch.flip(xb, dims=[3])), 1)) / 2)
            yb = torch.from_numpy(data.yv[s:s + 64])
            known = yb >= 0
            correct += int((logits.argmax(1) == yb).sum())
            if known.any():
                loss_sum += float(F.nll_loss(F.log_softmax(logits[known], 1), yb[known], reduction="sum"))
    return correct / len(data.Xv), loss_sum / max(1, len(data.Xv))


def _train_epoch(net, opt, data: _Data, cfg: FinetuneConfig, epoch: int, step: int, lr_at,
                 progress: bool | None) -> tuple[int, int, int, float]:
    """Step 2, one epoch: seeded order and augmentation, batches prepared in a thread while the
    network trains. Returns ``(step, faces seen, faces right, summed loss)``."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, 1]).generate_state(1)[0]))
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data.X))
    batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # batch norm needs 2+ pictures
        batches[-2] = np.concatenate([batches[-2], batches[-1]])
        batches.pop()

    def make(bi: int):
        idx = batches[bi]
        return _to_tensor(_augment(data.X[idx], cfg.augment, (cfg.seed, epoch, bi)), data.mean, data.std), \
            torch.from_numpy(data.y[idx])

    net.train()
    n_seen, n_correct, loss_sum = 0, 0, 0.0
    bar = _progress(_Prefetch(make, range(len(batches))), total=len(batches),
                    desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                    disable=True if progress is False else None)   # a bar only on a terminal
    for xb, yb in bar:
        f = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = g["peak_lr"] * f
        logits = net(xb)
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        n_seen += len(yb)
        n_correct += int((logits.detach().argmax(1) == yb).sum())
        loss_sum += float(loss.detach()) * len(yb)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_sum / n_seen:.3f}", acc=f"{n_correct / n_seen:.3f}", refresh=False)
    return step, n_seen, n_correct, loss_sum


def _out_of_time(cfg: FinetuneConfig, epoch: int, epoch_times: list[float], spent: float,
                 progress: bool | None) -> bool:
    """Whether another epoch (and the export) would pass ``cfg.time_budget_s``; says so when it would."""
    if cfg.time_budget_s is None or not epoch_times:
        return False
    need = max(epoch_times[-2:]) * 1.05 + 15.0  # an epoch + export
    if spent + need <= cfg.time_budget_s:
        return False
    log.warning("time budget: stopping before epoch %d (%.0f s spent, ~%.0f s needed)", epoch, spent, need)
    _stage(f"finetune: time budget reached, stopping before epoch {epoch}/{cfg.epochs} ({spent:.0f} s spent)",
           progress)
    return True


def _export(net, cfg: FinetuneConfig, data: _Data) -> tuple[Any, bytes]:
    """Step 5, export: the kept network (with its frozen-reference taps) and its ONNX bytes."""
    from . import backbones as B

    net.eval()
    reference = B.create_torch_model(data.bcfg) if cfg.trainable_blocks > 0 else None
    exported = _Exported.make(net, cfg.tta_flip, reference, cfg.trainable_blocks)
    return exported, _export_onnx(exported, data.size)


def finetune(train_images: Sequence[ImageTyping], train_labels: Sequence[str],
             val_images: Sequence[ImageTyping] = (), val_labels: Sequence[str] = (),
             cfg: FinetuneConfig | None = None, *, checkpoint_dir: str | os.PathLike | None = None,
             resume: bool = True, progress: bool | None = None) -> FinetuneResult:
    """Fine-tune ``cfg.backbone`` on the training pictures; see the module docstring.

    The named steps: build the data (:func:`_prepare`) and the network (:func:`_build`,
    :func:`_optimizer`), train one epoch (:func:`_train_epoch`), evaluate (:func:`_validate`),
    checkpoint (:func:`_save_checkpoint`, read back by :func:`_read_checkpoint`), export
    (:func:`_export`).

    Parameters
    ----------
    train_images, train_labels : sequences
        Face pictures (paths, arrays, PIL pictures) and their characters; at least 2 characters.
    val_images, val_labels : sequences, optional
        May be empty. Pick the exported epoch (best validation top-1, the later one on ties) and
        fill ``val_acc`` in the history.
    cfg : FinetuneConfig, optional
        The recipe (default :class:`FinetuneConfig`).
    checkpoint_dir : path, optional
        Where ``finetune.pt`` is written after every epoch.
    resume : bool
        Continue an existing checkpoint of the same configuration and classes (another one raises
        ``ValueError``; ``False`` starts over).
    progress : bool, optional
        A tqdm bar per epoch (None: only on a terminal; True: and one line per epoch on stderr;
        False: neither).

    Returns
    -------
    FinetuneResult
        Labels, history, the ONNX bytes of the kept epoch, preprocessing, seconds.

    Raises
    ------
    ValueError
        Images and labels of different lengths, fewer than 2 characters, a foreign checkpoint.
    """
    import torch

    cfg = cfg or FinetuneConfig()
    t_start = time.perf_counter()
    data = _prepare(train_images, train_labels, val_images, val_labels, cfg)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        fp = _fingerprint([str(x) for x in train_labels], [str(x) for x in val_labels])
        fixed = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
        state = _read_checkpoint(ckpt, resume, fixed, fp)
        torch.manual_seed(cfg.seed)
        net = _build(cfg, len(data.labels), data.bcfg)
        opt = _optimizer(net, cfg)
        steps_per_epoch = math.ceil(len(data.X) / cfg.batch_size)
        warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
        total_steps = steps_per_epoch * cfg.epochs

        history: list[dict[str, float]] = []
        start_epoch, step, spent_before = 1, 0, 0.0
        best, best_state = (-1.0, 0), None  # (val_acc, epoch)
        if state is not None:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            history = state["history"]
            start_epoch, step, spent_before = state["epoch"] + 1, state["step"], state["seconds"]
            best, best_state = tuple(state["best"]), state["best_state"]
            log.info("resuming fine-tuning from %s after epoch %d", ckpt, state["epoch"])

        stopped_early = False
        epoch_times = [h["seconds"] for h in history]
        for epoch in range(start_epoch, cfg.epochs + 1):
            t_ep = time.perf_counter()
            if _out_of_time(cfg, epoch, epoch_times, spent_before + (time.perf_counter() - t_start), progress):
                stopped_early = True
                break
            step, n_seen, n_correct, loss_sum = _train_epoch(
                net, opt, data, cfg, epoch, step, lambda s: _lr_factor(s, warmup, total_steps), progress)
            val_acc, val_loss = _validate(net, data, cfg.tta_flip)
            ep_seconds = time.perf_counter() - t_ep
            epoch_times.append(ep_seconds)
            history.append({"epoch": epoch, "step": step, "lr": opt.param_groups[-1]["lr"],
                            "train_loss": loss_sum / max(1, n_seen), "train_acc": n_correct / max(1, n_seen),
                            "val_loss": val_loss, "val_acc": val_acc, "seconds": ep_seconds})
            _stage(f"finetune: epoch {epoch}/{cfg.epochs}, train top-1 {n_correct / max(1, n_seen):.1%}"
                   + ("" if val_acc is None else f", val top-1 {val_acc:.1%}") + f", {ep_seconds:.0f} s", progress)
            score = -1.0 if val_acc is None else val_acc
            if score >= best[0]:
                best = (score, epoch)
                best_state = copy.deepcopy(net.state_dict())
            if ckpt is not None:                                           # step 4, checkpoint
                _save_checkpoint(ckpt, {
                    "format": _CHECKPOINT_FORMAT, "fixed": fixed, "data": fp, "labels": data.labels,
                    "model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                    "history": history, "best": list(best), "best_state": best_state,
                    "seconds": spent_before + (time.perf_counter() - t_start),
                })
        if best_state is not None:
            net.load_state_dict(best_state)
        exported, onnx_bytes = _export(net, cfg, data)
        _stage(f"finetune: kept epoch {best[1]}, exported, {time.perf_counter() - t_start:.0f} s", progress)
    finally:
        torch.set_num_threads(old_threads)
    seconds = spent_before + (time.perf_counter() - t_start)
    bcfg = data.bcfg
    return FinetuneResult(
        labels=data.labels, history=history, onnx_bytes=onnx_bytes, backbone=bcfg,
        preprocessing={"input_size": data.size, "mean": list(bcfg.mean), "std": list(bcfg.std),
                       "interpolation": bcfg.interpolation},
        seconds=seconds, best_epoch=int(best[1]), config=cfg.to_dict(), stopped_early=stopped_early,
        model=exported)
