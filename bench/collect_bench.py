"""Collect throughput on a 1080p video made from real pictures: frames sampled and faces found per second.

    .venv/bin/python bench/collect_bench.py [--seconds 60] [--every 1] [--workers 1 2]

The video (built once, cached in bench/out/) shows three detect-tadne illustrations side by side
(scaled to 540 px) on a 1920x1080 frame at 24 fps, a new trio every 5 s. ``animeid.dataset.collect``
then samples it every ``--every`` seconds (near-identical frames kept, so every sample is detected)
into a fresh workspace per worker count. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.dataset import CollectConfig, collect  # noqa: E402
from animeid.video import probe, write_video  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "detect-tadne"


def build_video(path: Path, seconds: int, fps: int = 24) -> Path:
    tiles = sorted(DATA.glob("*.jpg"))
    if not tiles:
        raise SystemExit(f"{DATA} is missing: this benchmark needs the real pictures")
    scenes = []
    for s in range(seconds // 5 + 1):
        frame = Image.new("RGB", (1920, 1080), (40 + 7 * s % 60, 50, 70))
        for k in range(3):
            t = Image.open(tiles[(3 * s + k) % len(tiles)]).convert("RGB").resize((540, 540), Image.LANCZOS)
            frame.paste(t, (90 + k * 600, 270))
        scenes.append(np.asarray(frame))

    def frames():
        for i in range(seconds * fps):
            yield scenes[i // (5 * fps)]

    write_video(frames(), path, fps=fps)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--detector", default="default", help="default (learned) or animeface")
    a = ap.parse_args()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    video = out / f"tadne_1080p_{a.seconds}s.mp4"
    if not video.exists():
        t0 = time.perf_counter()
        build_video(video, a.seconds)
        print(f"built {video} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    info = probe(video)
    print(f"Video: {info.width}x{info.height}, {info.fps:.0f} fps, {info.duration:.0f} s, {info.codec}; "
          f"sampled every {a.every:g} s; detector {a.detector} at its default threshold\n")
    print("| workers | frames | faces | seconds | frames/s | faces/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in a.workers:
        ws = out / f"ws_{w}"
        shutil.rmtree(ws, ignore_errors=True)
        # faces counted whether written or dropped as near-duplicates (the trio repeats for 5 s)
        cfg = CollectConfig(every=a.every, workers=w, skip_similar_frames=None, dedupe_distance=0,
                            detector=a.detector)
        t0 = time.perf_counter()
        s = collect([video], ws, cfg, show_progress=False)
        dt = time.perf_counter() - t0
        n_faces = s.faces + s.duplicates
        print(f"| {w} | {s.items} | {n_faces} | {dt:.1f} | {s.items / dt:.2f} | {n_faces / dt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
