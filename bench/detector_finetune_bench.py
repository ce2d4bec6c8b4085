"""Can a user fix the default detector for a style it misses, from a couple of hundred boxed pictures?

The shared data holds no boxed pictures of a real show the default detector misses (held-back
shows are where that is measured), so this bench makes a style it handles badly: **line art**, the
icartoon pictures turned into dark lines on white by an edge filter (:func:`line_art`; sketches,
storyboards and key frames look like this). Then, as a user would, with the CLI:

1. ``--pictures`` (200) pictures of icartoon's training part (the seeded split the shipped detector
   was trained with: seed 0, 5 % validation, 15 % test), turned into line art with their boxes, in
   ``WORK/train/boxes.json``; icartoon's test part turned into line art in ``WORK/test``;
2. ``animeid detector train WORK/train --from default --epochs E --val-fraction 0.1 --test-fraction 0
   --seed 1 --out WORK/lineart.onnx`` (timed: the user's wait; seed 1, as the pictures keep their
   names and seed 0's split, by a hash of the name, put them all in its training part: no
   validation pictures to calibrate on);
3. ``animeid detector evaluate default WORK/lineart.onnx --boxes WORK/test --json`` (the style) and
   the same on icartoon's own test part in colour (what the fine-tuning costs elsewhere).

    .venv/bin/python bench/detector_finetune_bench.py                 # Markdown table on stdout
    .venv/bin/python bench/detector_finetune_bench.py --pictures 200 --epochs 4 --work /tmp/ft-bench

The converted pictures are written under ``--work`` (a temporary folder by default, kept: about
80 MB), never into the repository; an earlier run's detector there is replaced (``--overwrite``:
never a file animeid did not write). Of the
``--pictures``, ``detector train`` keeps 10 % to calibrate the scores (200: 177 train, 23
calibrate). Choose settings with ``--part val``; the test part is for scoring what was chosen.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect.annotations import Annotated, load_boxes, save_boxes_json  # noqa: E402
from animeid.detect.training import split_items  # noqa: E402

DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "icartoon-det-train"
ANIMEID = [sys.executable, "-m", "animeid"]


def line_art(img: Image.Image) -> Image.Image:
    """``img`` as dark lines on white (RGB): edges of its slightly blurred greyscale, inverted."""
    g = ImageOps.grayscale(img).filter(ImageFilter.GaussianBlur(1))
    e = np.asarray(g.filter(ImageFilter.FIND_EDGES), np.float32)
    return Image.fromarray((255 - np.clip(e * 3, 0, 255)).astype(np.uint8)).convert("RGB")


def convert(items: list[Annotated], folder: Path) -> None:
    """``items`` as line art in ``folder`` (JPEG, same names) with their boxes in ``folder/boxes.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for a in items:
        dst = folder / (a.image.stem + ".jpg")
        if not dst.exists():
            line_art(Image.open(a.image).convert("RGB")).save(dst, quality=92)
        out.append(Annotated(dst, a.boxes, a.ignore, a.size))
    save_boxes_json(folder / "boxes.json", out, about="line art made from iCartoonFace pictures (research use)")


def _evaluate(detectors: list[str], boxes: list[str]) -> list[dict]:
    r = subprocess.run(ANIMEID + ["detector", "evaluate", *detectors, "--boxes", *boxes, "--json", "-q"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["detectors"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pictures", type=int, default=200, help="boxed pictures the user gives (default 200)")
    ap.add_argument("--epochs", type=int, default=4, help="detector train --epochs (default 4)")
    ap.add_argument("--lr", type=float, help="detector train --lr (default: its own)")
    ap.add_argument("--frozen-blocks", type=int, help="detector train --frozen-blocks (default: its own)")
    ap.add_argument("--part", default="test", choices=["val", "test"],
                    help="icartoon's part scored (default test; choose settings on val)")
    ap.add_argument("--threads", type=int, default=0, help="detector train --threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0, help="which training pictures are taken (default 0)")
    ap.add_argument("--work", type=Path, help="folder for the pictures and the detector (default: a temporary one)")
    ap.add_argument("--json", help="write the numbers to this file")
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"needs {DATA}", file=sys.stderr)
        return 1
    work = a.work or Path(tempfile.mkdtemp(prefix="animeid-ft-bench-"))
    parts = split_items(load_boxes(DATA), 0.05, 0.15, 0)
    if not 20 <= a.pictures <= len(parts["train"]):
        print(f"--pictures must be from 20 to {len(parts['train'])} (icartoon's training part)", file=sys.stderr)
        return 1
    # an earlier run's training folder would be "resumed" (or refused, with other settings): removed when
    # it holds only what detector train writes there; the detector and its plots are replaced by
    # detector train's own --overwrite, which never replaces a file it did not write
    ckpt = work / "lineart.onnx.work"
    if ckpt.is_dir() and {p.name for p in ckpt.iterdir()} <= {"checkpoint.pt", "history.json"}:
        shutil.rmtree(ckpt)
    rng = np.random.default_rng(a.seed)
    chosen = [parts["train"][i] for i in sorted(rng.choice(len(parts["train"]), a.pictures, replace=False))]
    convert(chosen, work / "train")
    convert(parts[a.part], work / a.part)
    det = work / "lineart.onnx"
    t0 = time.perf_counter()
    subprocess.run(ANIMEID + ["detector", "train", str(work / "train"), "--from", "default", "--epochs", str(a.epochs),
                              "--val-fraction", "0.1", "--test-fraction", "0", "--seed", "1",
                              "--threads", str(a.threads), "--out", str(det), "--overwrite", "-q"]
                   + (["--lr", str(a.lr)] if a.lr is not None else [])
                   + (["--frozen-blocks", str(a.frozen_blocks)] if a.frozen_blocks is not None else []),
                   check=True, stdout=sys.stderr)        # its lines go with the progress, not into the table
    minutes = (time.perf_counter() - t0) / 60
    styled = _evaluate(["default", str(det)], [str(work / a.part)])
    colour = [{**r, "detector": n} for r, n in zip(
        _evaluate(["default", str(det)], [str(DATA), "--split", a.part]), ["default", str(det)])]
    opts = "".join(f", {k} {v}" for k, v in (("lr", a.lr), ("frozen blocks", a.frozen_blocks)) if v is not None)
    print(f"**Fine-tuning the default on {a.pictures} line-art pictures** ({a.epochs} epochs{opts}, "
          f"{minutes:.1f} min; {a.part} part: {len(parts[a.part])} pictures)\n")
    print(f"| detector | {a.part} part | F1 | AP | precision | recall | recall < 32 / 32-64 / 64-128 / >= 128 px |")
    print("|---|---|---:|---:|---:|---:|---|")
    for part, rows in (("line art", styled), ("colour", colour)):
        for r, name in zip(rows, ("default", "fine-tuned on line art")):
            by = " / ".join("-" if v is None else f"{v:.2f}" for v in r["recall_by_size"].values())
            print(f"| {name} | {part} | {r['f1']:.3f} | {r['ap']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} "
                  f"| {by} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"pictures": a.pictures, "epochs": a.epochs, "minutes": round(minutes, 1),
                                            "line_art": styled, "colour": colour}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
