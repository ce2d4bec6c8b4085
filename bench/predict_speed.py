"""Prediction speed of saved models: faces per second through :meth:`animeid.predict.Recognizer.predict_faces`
(face crops in, names out: preprocessing, the ONNX graph, the head and the open-set layer with its
``unknown`` answer), batch 32, after one warm-up batch.

    .venv/bin/python bench/predict_speed.py MODEL.animeid [MODEL.animeid ...] [--faces 256] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.images import to_array  # noqa: E402
from animeid.predict import Recognizer  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="face crops to time (any folder of pictures)")
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = ap.parse_args(argv)
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        print(f"no pictures under {args.data}", file=sys.stderr)
        return 1
    faces = [to_array(p) for p in files[:: max(1, len(files) // args.faces)][:args.faces]]
    print(f"| model | open-set input | faces/s (batch 32, best of {args.repeat}) |\n|---|---|---:|")
    for m in args.models:
        rec = Recognizer.load(m)
        rec.predict_faces(faces[:32])
        best = min(_timed(rec, faces) for _ in range(args.repeat))
        os_ = rec.openset
        inputs = "-" if os_ is None else "not stored (older model)" if os_.inputs is None else \
            os_.inputs.get("output", "head features")
        print(f"| {m.name} | {inputs} | {len(faces) / best:.0f} |", flush=True)
    return 0


def _timed(rec: Recognizer, faces: list) -> float:
    t = time.perf_counter()
    rec.predict_faces(faces)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
