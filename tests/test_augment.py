"""Colour-keeping augmentation: deterministic, shape-preserving, hue kept."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

A = pytest.importorskip("albumentations")

from animeid.augment import STRENGTHS, reseed, augment_batch, augment_image, build_augmenter  # noqa: E402


def _face(h: int = 72, w: int = 64, hair=(150, 60, 200), seed: int = 0) -> np.ndarray:
    """A synthetic 'face' with one colour (the hair) on white, grey skin and black eyes, grey noise.

    Only the hair is chromatic, so the picture's mean hue is the hair's whatever geometry does
    (cropping, scaling), and any change of it is a change of colour.
    """
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.int64)
    img[: h // 2] = hair
    img[h // 2:, w // 6: 5 * w // 6] = 200
    img[h // 2 + 4: h // 2 + 10, w // 4: w // 4 + 8] = 20
    img[h // 2 + 4: h // 2 + 10, 3 * w // 4 - 8: 3 * w // 4] = 20
    img += rng.integers(-12, 13, size=(h, w, 1))  # the same on every channel: no hue
    return np.clip(img, 0, 255).astype(np.uint8)


def _mean_hue_deg(img: np.ndarray) -> float:
    """Saturation-weighted circular mean hue in degrees (grey, black and white pixels weigh ~0)."""
    hsv = np.asarray(Image.fromarray(img, "RGB").convert("HSV"), dtype=np.float64).reshape(-1, 3)
    ang = hsv[:, 0] / 256.0 * 2 * np.pi
    w = (hsv[:, 1] / 255.0) * (hsv[:, 2] > 40)
    return float(np.degrees(np.arctan2((w * np.sin(ang)).sum(), (w * np.cos(ang)).sum())))


def _hue_diff(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_count_shapes_dtype_and_order():
    imgs = [_face(), _face(80, 96, hair=(230, 200, 90), seed=1)]
    out = augment_batch(imgs, 5, seed=3)
    assert len(out) == 10
    for i, v in enumerate(out):
        src = imgs[i // 5]
        assert v.shape == src.shape and v.dtype == np.uint8
    # originals are not included: every one of the 10 variants differs from its picture, and no two
    # variants of one picture are the same
    assert all(not np.array_equal(v, imgs[i // 5]) for i, v in enumerate(out)), "no variant is the original"
    for k in (0, 5):
        assert len({out[k + j].tobytes() for j in range(5)}) == 5, "five distinct variants of each picture"


def test_deterministic_for_a_seed_and_independent_of_other_pictures():
    a, b = _face(), _face(hair=(60, 180, 90), seed=2)
    first = augment_batch([a, b], 6, seed=11)
    again = augment_batch([a, b], 6, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    other_seed = augment_batch([a, b], 6, seed=12)
    assert sum(np.array_equal(x, y) for x, y in zip(first, other_seed)) <= 2
    # picture 0's variants do not depend on what follows it
    alone = augment_image(a, 6, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(first[:6], alone))


def test_transforms_get_independent_random_streams():
    """albumentations 2.0.8's Compose(seed=...) seeds all transforms alike, so transforms with the
    same probability always fire together; reseed must break that."""
    comp = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    reseed(comp, np.random.SeedSequence(5))
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    patterns = set()
    for _ in range(40):
        out = comp(image=img)["image"]
        patterns.add((np.array_equal(out, img[:, ::-1]), np.array_equal(out, img[::-1])))
    assert (True, False) in patterns and (False, True) in patterns


@pytest.mark.parametrize("strength", STRENGTHS)
def test_colour_is_kept(strength):
    # purple, light yellow, green, light pink: bright colours would show clipping by contrast
    imgs = [_face(hair=(150, 60, 200)), _face(hair=(230, 200, 90), seed=1), _face(hair=(60, 170, 80), seed=2),
            _face(hair=(250, 170, 190), seed=3)]
    out = augment_batch(imgs, 24, seed=0, strength=strength)
    for i, src in enumerate(imgs):
        h0 = _mean_hue_deg(src)
        diffs = [_hue_diff(_mean_hue_deg(v), h0) for v in out[i * 24:(i + 1) * 24]]
        assert max(diffs) < 5.0, (strength, i, h0, max(diffs))


def test_hue_check_would_catch_a_colour_change():
    src = _face()
    shifted = A.HueSaturationValue(hue_shift_limit=(40, 40), sat_shift_limit=0, val_shift_limit=0, p=1.0)
    v = shifted(image=src)["image"]
    assert _hue_diff(_mean_hue_deg(v), _mean_hue_deg(src)) > 5.0


def test_real_faces_keep_hue(newgame8: Path):
    paths = [sorted(d.glob("*.jpg"))[0] for d in sorted(newgame8.iterdir()) if d.is_dir()][:4]
    out = augment_batch(paths, 16, seed=1)
    for i, p in enumerate(paths):
        src = np.asarray(Image.open(p).convert("RGB"))
        h0 = _mean_hue_deg(src)
        diffs = [_hue_diff(_mean_hue_deg(v), h0) for v in out[i * 16:(i + 1) * 16]]
        assert float(np.median(diffs)) < 8.0 and max(diffs) < 25.0, (p.name, diffs)
        assert all(v.shape == src.shape for v in out[i * 16:(i + 1) * 16])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown augmentation strength"):
        build_augmenter("extreme")
    with pytest.raises(ValueError):
        augment_batch([_face()], -1)
    assert augment_batch([_face()], 0) == []
