"""The learned detector's quick pass (``animeid.detect.learned.QUICK_SIZE``): how many face crops it
settles, how its boxes compare with the full search's, and whether it ever settles a small picture
in which the full search finds several faces.

    .venv/bin/python bench/quick_pass_bench.py [--crops 400] [--cartoons 600]

Face crops: every k-th holoen16-dev crop and every newgame8 crop. Small pictures: iCartoonFace
detection pictures (human-boxed, 1 to many faces) shrunk so their longer side is 240 px.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect import learned as L  # noqa: E402
from animeid.detect.metrics import box_iou  # noqa: E402
from animeid.images import to_array  # noqa: E402

DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data"))


def settle(det: L.LearnedDetector, arrs: list) -> dict:
    pads = [L._crop_pad(a) for a in arrs]
    return det._quick([L._pad(a, p) for a, p in zip(arrs, pads)], pads, [a.shape for a in arrs], det._min_peak())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=400)
    ap.add_argument("--cartoons", type=int, default=600)
    args = ap.parse_args(argv)
    det = L.LearnedDetector()
    holo = sorted((DATA / "holoen16-dev").rglob("*.jpg"))
    sets = {"holoen16-dev": holo[:: max(1, len(holo) // args.crops)][:args.crops],
            "newgame8": sorted((DATA / "newgame8-faces96").rglob("*.jpg"))}
    print("| pictures | n | settled by the quick pass | median IoU with the full search's box | IoU < 0.5 |")
    print("|---|---:|---:|---:|---:|")
    for name, files in sets.items():
        arrs = [to_array(p) for p in files]
        s = settle(det, arrs)
        full = det.raw_arrays(arrs, quick=False)
        ious = np.array([box_iou(s[i][0][:1], full[i][0][:1])[0, 0] for i in s if len(full[i][0])])
        print(f"| {name} crops | {len(arrs)} | {len(s) / len(arrs):.1%} | {np.median(ious):.2f} | {np.mean(ious < 0.5):.1%} |")
    boxes = json.loads((DATA / "icartoon-det-train" / "boxes.json").read_text())
    keys = [k for k in boxes if not k.startswith("_")][:args.cartoons]
    arrs = []
    for k in keys:
        im = Image.open(DATA / "icartoon-det-train" / k).convert("RGB")
        im.thumbnail((240, 240))
        arrs.append(np.asarray(im))
    s = settle(det, arrs)
    thr = det.default_threshold
    several = sum(1 for i in s if np.sum(det.calibrate(det.raw_arrays([arrs[i]], quick=False)[0][1]) >= thr) > 1)
    print(f"\niCartoonFace pictures shrunk to 240 px: {len(arrs)}, square-ish "
          f"{sum(L._quick_candidate(a.shape) for a in arrs)}, settled by the quick pass {len(s)}, of which the "
          f"full search finds several faces in {several}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
