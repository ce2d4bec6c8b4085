"""Learned detector next to AnimeFace 2009, in one run: face crops, speed, and a real TV clip.

    python bench/detector_bench.py --crops --speed --clip        # all three (Markdown on stdout)
    python bench/detector_bench.py --speed --json out.json

* ``--crops``: share of the face crops of ``holoen16-dev`` and ``newgame8-faces96`` in which a face
  is found at each detector's default threshold (``detect_faces``, the whole public path);
* ``--speed``: ms per picture at 640x360 and 1920x1080 (real frames of ``clips/saekano-rain.mp4``
  resized), one picture per call and, for the learned detector, 8 frames of one size per call
  (``detect_faces_batch``); wall clock, decoded arrays in, best of 3 rounds after a warm-up;
* ``--clip``: frames of ``clips/saekano-rain.mp4`` every 1 s; faces found per frame by each
  detector; ``--sheet PNG`` draws the frames with the default detector's boxes.

Precision, recall, F1 and AP on boxed pictures come from the CLI itself:
``animeid detector evaluate default animeface --boxes ../shared/data/icartoon-det-train --split test``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect import detect_faces, detect_faces_batch, draw_faces  # noqa: E402
from animeid.images import walk_files  # noqa: E402

DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data"))
DETECTORS = ("default", "animeface")


def crops(detectors=DETECTORS) -> list[dict]:
    rows = []
    for name in ("holoen16-dev", "newgame8-faces96"):
        files = walk_files(DATA / name)
        for det in detectors:
            t0 = time.perf_counter()
            found = sum(1 for f in files if detect_faces(f, detector=det))
            rows.append({"data": name, "detector": det, "crops": len(files), "found": found,
                         "share": round(found / len(files), 4), "seconds": round(time.perf_counter() - t0, 1)})
            print(f"crops {name} {det}: {found}/{len(files)}", file=sys.stderr)
    return rows


def _clip_frames(every: float = 1.0) -> list[tuple[float, np.ndarray]]:
    from animeid.video import sample_frames

    return [(f.time, f.image if isinstance(f.image, np.ndarray) else np.asarray(f.image))
            for f in sample_frames(DATA / "clips" / "saekano-rain.mp4", every=every)]


def speed(detectors=DETECTORS) -> list[dict]:
    from PIL import Image

    frames = [img for _, img in _clip_frames(2.0)][:8]
    rows = []
    for w, h in ((640, 360), (1920, 1080)):
        batch = [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in frames]
        for det in detectors:
            detect_faces(batch[0], detector=det)  # warm-up (loads the detector)
            best = min(_timed(lambda: [detect_faces(b, detector=det) for b in batch]) for _ in range(3))
            rows.append({"size": f"{w}x{h}", "detector": det, "mode": "single", "ms": round(1000 * best / len(batch), 1)})
            if det != "animeface":
                best = min(_timed(lambda: detect_faces_batch(batch, detector=det)) for _ in range(3))
                rows.append({"size": f"{w}x{h}", "detector": det, "mode": "batch of 8",
                             "ms": round(1000 * best / len(batch), 1)})
            print(f"speed {w}x{h} {det}: {rows[-1]['ms']} ms", file=sys.stderr)
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def clip(sheet: str | None, detectors=DETECTORS) -> list[dict]:
    frames = _clip_frames(1.0)
    rows = []
    found: dict[str, list] = {}
    for det in detectors:
        per = [detect_faces(img, detector=det) for _, img in frames]
        found[det] = per
        counts = [len(p) for p in per]
        rows.append({"detector": det, "frames": len(frames), "frames_with_a_face": sum(c > 0 for c in counts),
                     "faces": sum(counts), "per_frame": counts})
    if sheet:
        from PIL import Image

        thumbs = [draw_faces(img, found[detectors[0]][i]).resize((480, 270)) for i, (_, img) in enumerate(frames)]
        cols = 4
        out = Image.new("RGB", (480 * cols, 270 * (-(-len(thumbs) // cols))), "white")
        for i, t in enumerate(thumbs):
            out.paste(t, ((i % cols) * 480, (i // cols) * 270))
        out.save(sheet)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--clip", action="store_true")
    ap.add_argument("--sheet", help="PNG of the clip's frames with the default detector's boxes")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--crop-detectors", default="default,animeface",
                    help="detectors for --crops (AnimeFace takes ~10 min on the 5,203 crops)")
    ap.add_argument("--detectors", default="default,animeface",
                    help="detectors for --speed and --clip (the sheet shows the first one's boxes)")
    a = ap.parse_args()
    res: dict = {}
    if a.crops:
        res["crops"] = crops(tuple(a.crop_detectors.split(",")))
        print("| data | detector | face found in |\n|---|---|---:|")
        for r in res["crops"]:
            print(f"| {r['data']} | {r['detector']} | {r['found']} / {r['crops']} ({100 * r['share']:.1f} %) |")
    if a.speed:
        res["speed"] = speed(tuple(a.detectors.split(",")))
        print("\n| picture | detector | mode | ms per picture |\n|---|---|---|---:|")
        for r in res["speed"]:
            print(f"| {r['size']} | {r['detector']} | {r['mode']} | {r['ms']} |")
    if a.clip:
        res["clip"] = clip(a.sheet, tuple(a.detectors.split(",")))
        print("\n| detector | frames | frames with a face | faces | faces per frame |\n|---|---:|---:|---:|---|")
        for r in res["clip"]:
            print(f"| {r['detector']} | {r['frames']} | {r['frames_with_a_face']} | {r['faces']} | "
                  f"{' '.join(map(str, r['per_frame']))} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
