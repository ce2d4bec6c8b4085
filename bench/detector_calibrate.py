"""Choose a detector file's detection sizes on the validation part of icartoon-det-train (the seeded
split of `animeid detector train`), then fit its calibration there; the test part is never used.

    .venv/bin/python bench/detector_calibrate.py animeid-faces-v1.onnx            # F1 / AP per set of sizes
    .venv/bin/python bench/detector_calibrate.py animeid-faces-v1.onnx 512        # recalibrate for one pass at 512
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect.annotations import load_boxes  # noqa: E402
from animeid.detect.learned import LearnedDetector  # noqa: E402
from animeid.detect.metrics import score_detections  # noqa: E402
from animeid.detect.training import recalibrate, split_items  # noqa: E402
from animeid.images import load_image  # noqa: E402

DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "icartoon-det-train"
CANDIDATES = ([512], [640], [384, 768], [512, 768], [512, 1024], [640, 1024])


def main(path: str, chosen: list[int] | None) -> int:
    items = split_items(load_boxes(DATA), 0.05, 0.15, 0)["val"]
    if chosen:
        m = recalibrate(path, items, chosen)
        print(f"calibration {m['calibration']}, threshold {m['threshold']}, test_sizes {m['test_sizes']}")
        return 0
    det = LearnedDetector(path)
    rgbs = [np.asarray(load_image(a.image, "RGB")) for a in items]
    print("| sizes | AP | best F1 |\n|---|---:|---:|")
    for sizes in CANDIDATES:      # the detector's own passes and merging, before calibration
        dets = det.raw_arrays(rgbs, sizes, 0.01, quick=False)
        sc = score_detections(dets, [a.boxes for a in items], [a.ignore for a in items])
        print(f"| {sizes} | {sc.ap:.3f} | {sc.best_f1:.3f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], [int(v) for v in sys.argv[2:]] or None))
