"""The 300 generated scenes the shipped detector was trained on besides iCartoonFace (so that the
demo's drawn faces are found), as a boxes.json folder:

    .venv/bin/python bench/detector_scenes.py scenes/
    .venv/bin/animeid detector train ../shared/data/icartoon-det-train scenes/ --epochs 10 --out animeid-faces-v1.onnx
    .venv/bin/python bench/detector_calibrate.py animeid-faces-v1.onnx     # sizes and calibration on the val part
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect.annotations import Annotated, save_boxes_json  # noqa: E402
from animeid.sample import make_characters, render_scene  # noqa: E402


def main(out: str) -> int:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    specs = make_characters(12, seed=123)
    rng = np.random.default_rng(123)
    items = []
    for i in range(300):
        w, h = [(640, 360), (512, 512), (400, 600), (800, 450), (320, 240)][i % 5]
        img, faces = render_scene(specs, rng, (w, h), n_faces=int(rng.choice([0, 1, 1, 2, 3])))
        p = root / f"synth_{i:04d}.jpg"
        img.save(p, quality=90)
        items.append(Annotated(p, np.asarray([b for _, b in faces], np.float32).reshape(-1, 4)))
    save_boxes_json(root / "boxes.json", items, about="generated scenes (animeid.sample, seed 123) for detector training")
    print(f"{len(items)} scenes, {sum(len(a.boxes) for a in items)} faces in {root}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1]))
