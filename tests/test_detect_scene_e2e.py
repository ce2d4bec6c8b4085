"""End to end through the learned detector: real face crops (newgame8) pasted into a drawn scene are
found by the default detector and named by a model trained on other crops of the same characters."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHARS = ("aoba", "hifumi", "kou", "yun")


@pytest.fixture(scope="module")
def split(newgame8, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(training folder: all but the last face of 4 characters, {character: its last face})."""
    out = tmp_path_factory.mktemp("scene") / "data"
    held = {}
    for name in CHARS:
        d = next(p for p in sorted(newgame8.iterdir()) if p.name.endswith("_" + name))
        files = sorted(d.iterdir())
        (out / name).mkdir(parents=True)
        for f in files[:-1]:
            shutil.copy(f, out / name / f.name)
        held[name] = files[-1]
    return out, held


def test_pasted_real_faces_are_found_and_named(split, tmp_path):
    from animeid.detect.metrics import box_iou
    from animeid.predict import Recognizer
    from animeid.train import train

    data, held = split
    model = train(data, tmp_path / "m.animeid", method="logistic", progress=False, seed=0).model_path
    rng = np.random.default_rng(0)
    scene = Image.fromarray(np.clip(rng.normal(200, 20, (400, 760, 3)), 0, 255).astype(np.uint8))
    boxes = {}
    for k, (name, face) in enumerate(held.items()):
        crop = Image.open(face).convert("RGB").resize((150, 150), Image.Resampling.BICUBIC)
        x, y = 20 + k * 185, 120 + (k % 2) * 60
        scene.paste(crop, (x, y))
        boxes[name] = (x, y, x + 150, y + 150)
    # every default (the learned detector, detect auto) but the unknown answer: this is about finding and naming
    res = Recognizer.load(model).predict(scene, unknown=False)
    assert len(res["faces"]) == len(CHARS), res["faces"]
    for name, box in boxes.items():
        found = [f for f in res["faces"] if box_iou(np.array([box]), np.array([f["box"]]))[0, 0] >= 0.3]
        assert len(found) == 1, (name, res["faces"])
        assert found[0]["name"] == name, (name, found[0])
