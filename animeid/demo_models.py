"""Step 6 of ``animeid demo``: train a recogniser on the exported sample, evaluate it, and name the
characters in new scenes it has never seen (boxes and names drawn)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["run_model_steps"]


def run_model_steps(out: Path, data: Path, truth: dict, *, quick: bool = False) -> int:
    from ._util import save_image_atomic
    from .detect import Face, draw_faces, iou
    from .predict import Recognizer
    from .sample import CHARACTERS, make_characters, render_scene
    from .train import train

    model = out / "characters.animeid"
    r = train(data, model, method="auto", progress=False)
    t = r.test or {}
    print(f"[6/6] train (auto: {r.info.get('chosen', r.method)}): {r.n_train} faces, {r.seconds:.0f} s; held-out test top-1 "
          f"{t.get('top1', float('nan')):.1%} on {t.get('n', 0)} faces -> {model}", flush=True)
    rec = Recognizer.load(model)
    names = list(truth["characters"])
    specs = [s for s in make_characters(max(len(names), len(CHARACTERS))) if s.name in names]
    rng = np.random.default_rng(12345)                 # scenes the model never saw
    right = total = 0
    previews = out / "predictions"
    for i in range(4 if quick else 8):
        img, faces = render_scene(specs, rng, n_faces=int(rng.integers(1, 4)))
        res = rec.predict(np.asarray(img))
        drawn = [Face(tuple(f["box"]), f["candidates"][0]["p"]) for f in res["faces"]]
        labels = [f"{f['candidates'][0]['name']} {f['candidates'][0]['p']:.0%}" for f in res["faces"]]
        save_image_atomic(img, out / "scenes" / f"scene_{i + 1}.png")       # the clean picture, to try predict on
        save_image_atomic(draw_faces(img, drawn, labels), previews / f"scene_{i + 1}.png")
        for name, box in faces:
            total += 1
            hit = [f for f in res["faces"] if iou(f["box"], box) >= 0.3]
            right += bool(hit) and hit[0]["candidates"][0]["name"] == name
    print(f"      predict: {right} of {total} faces in {i + 1} new scenes found and named right; "
          f"pictures with boxes and names in {previews}/", flush=True)
    print(f"      try: animeid predict {model} {out / 'scenes' / 'scene_1.png'} --preview my-preview",
          flush=True)
    return 0
