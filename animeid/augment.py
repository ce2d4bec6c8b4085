"""Colour-keeping augmentation of face crops (the study's 64 variants per picture).

Hair and eye colour are what tell most anime characters apart, so nothing here changes hue or
saturation: no hue/saturation jitter, no channel shuffles, no per-channel contrast, no greyscale,
no inversion. What it does (after the study, which used imgaug; here albumentations):

* geometry: horizontal flip; affine scale / translate / rotate / shear with a **black or white**
  fill (chosen at random, like imgaug's ``cval=(0, 255)`` at the two ends);
* blur: Gaussian, mean (box) or median blur;
* sharpen, emboss;
* contrast and brightness, the same factor on all channels; mostly *lowered* (up to -30 %, at
  most +15 % contrast / +4 % brightness), because raising them clips bright hair colours at 255
  channel by channel, which does shift hue (light yellow hair moved 12 degrees at +30 %);
* pixel shifts: elastic transformation that moves pixels locally around;
* local distortion: grid or optical distortion (imgaug's PiecewiseAffine is 80 ms a picture in
  albumentations 2, so the cheaper distortions stand in for it).

Layout: :func:`build_augmenter` makes the albumentations pipeline, :func:`augment_batch` draws
``n_variants`` pictures from every input, deterministically for a seed;
:func:`augment_image` is the one-picture wrapper.

Determinism note: ``A.Compose(..., seed=s)`` in albumentations 2.0.8 gives *every* transform the
same seed, so all transforms with the same probability fire together (flip, blur and sharpen are
then all applied or all skipped). :func:`reseed` gives each transform its own seed instead.
albumentations is an optional dependency (``pip install animeid[train]``).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from .images import ImageTyping, to_array

__all__ = ["STRENGTHS", "build_augmenter", "augment_batch", "augment_image", "reseed"]

#: Names accepted by :func:`build_augmenter`.
STRENGTHS = ("light", "study", "strong")

# (affine, per-effect probability) for each strength
_STRENGTH = {
    "light": dict(scale=(0.9, 1.1), translate=0.05, rotate=10, shear=5, p_affine=0.6, p_fx=0.15, n_distort=0.1),
    "study": dict(scale=(0.8, 1.2), translate=0.1, rotate=20, shear=12, p_affine=0.8, p_fx=0.3, n_distort=0.3),
    "strong": dict(scale=(0.7, 1.3), translate=0.15, rotate=30, shear=16, p_affine=0.9, p_fx=0.45, n_distort=0.45),
}


def _albumentations():
    try:
        import albumentations as A
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("augmentation needs albumentations: pip install 'animeid[train]'") from None
    return A


def build_augmenter(strength: str = "study", seed: int | None = None):
    """The colour-keeping albumentations pipeline (an ``A.Compose``).

    ``strength``: one of :data:`STRENGTHS`; ``"study"`` follows the study's augmentation.
    ``seed``: makes the pipeline's random draws repeatable (each transform gets its own stream).
    Call it as ``aug(image=hwc_uint8)["image"]``; output has the input's shape.
    """
    if strength not in _STRENGTH:
        raise ValueError(f"unknown augmentation strength {strength!r}; choose one of {STRENGTHS}")
    A = _albumentations()
    s = _STRENGTH[strength]
    p = s["p_fx"]

    def affine(fill: int):
        return A.Affine(scale=s["scale"], translate_percent=(-s["translate"], s["translate"]),
                        rotate=(-s["rotate"], s["rotate"]), shear=(-s["shear"], s["shear"]),
                        border_mode=0, fill=fill, p=1.0)

    transforms = [
        A.HorizontalFlip(p=0.5),
        A.OneOf([affine(0), affine(255)], p=s["p_affine"]),  # black or white fill
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5), p=1.0),
            A.Blur(blur_limit=(3, 5), p=1.0),  # mean (box) blur
            A.MedianBlur(blur_limit=(3, 5), p=1.0),
        ], p=p),
        A.Sharpen(alpha=(0.0, 0.5), lightness=(0.75, 1.25), p=p),
        A.Emboss(alpha=(0.0, 0.4), strength=(0.0, 1.0), p=p * 0.7),
        # same factor on every channel: grey-level contrast and brightness, hue unchanged
        A.RandomBrightnessContrast(brightness_limit=(-0.08, 0.04), contrast_limit=(-0.3, 0.15), p=p * 1.5),
        # pixel shifts: move pixels locally around (imgaug ElasticTransformation sigma=0.25)
        A.ElasticTransform(alpha=3.0, sigma=1.0, border_mode=4, p=p * 0.5),
        # local distortion
        A.OneOf([
            A.GridDistortion(num_steps=5, distort_limit=0.25, border_mode=4, p=1.0),
            A.OpticalDistortion(distort_limit=0.2, border_mode=4, p=1.0),
            A.ElasticTransform(alpha=20.0, sigma=5.0, border_mode=4, p=1.0),
        ], p=s["n_distort"]),
    ]
    aug = A.Compose(transforms)
    if seed is not None:
        reseed(aug, np.random.SeedSequence(int(seed)))
    return aug


def reseed(transform: Any, ss: np.random.SeedSequence) -> None:
    """Give ``transform`` and every transform inside it its own random stream drawn from ``ss``."""
    s = int(ss.generate_state(1)[0])
    transform.seed = s
    transform.random_generator = np.random.default_rng(s)
    transform.py_random = random.Random(s)
    children = getattr(transform, "transforms", None)
    if children:
        for child, css in zip(children, ss.spawn(len(children))):
            reseed(child, css)


def augment_batch(images: Sequence[ImageTyping], n_variants: int, seed: int = 0,
                  strength: str = "study") -> list[np.ndarray]:
    """``n_variants`` augmented copies of every picture, as ``(H, W, 3)`` ``uint8`` arrays.

    The result is image-major: variant ``j`` of picture ``i`` is at ``i * n_variants + j``.
    It depends only on ``seed``, the picture and its position ``i`` (not on the other pictures),
    so the same call always gives the same pictures. Originals are not included.
    """
    if n_variants < 0:
        raise ValueError(f"n_variants must be >= 0, got {n_variants}")
    aug = build_augmenter(strength)
    out: list[np.ndarray] = []
    for i, image in enumerate(images):
        arr = to_array(image)
        reseed(aug, np.random.SeedSequence([int(seed), i]))
        for _ in range(n_variants):
            out.append(np.ascontiguousarray(aug(image=arr)["image"]))
    return out


def augment_image(image: ImageTyping, n_variants: int, seed: int = 0, strength: str = "study") -> list[np.ndarray]:
    """``n_variants`` augmented copies of one picture (see :func:`augment_batch`)."""
    return augment_batch([image], n_variants, seed=seed, strength=strength)
