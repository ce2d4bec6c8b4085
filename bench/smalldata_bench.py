"""Small-data benchmark: the study's regime (60-70 training faces per character), the study's methods
and animeid's default side by side on the same splits, several seeds.

For each seed, each character of ``--data`` gets ``--per-char`` training faces and ``--val-per-char``
validation faces drawn at random; all its other faces are the test part. The split is written as a
``split.csv`` beside links to the character folders (the data is never copied), and
:func:`animeid.train.compare` trains every row of the study's table and ``auto`` on it, each measured
on the same test faces. The study's augmented row uses ``--augment`` variants per face (the study: 64,
hours of Inception V3 on a CPU).

    .venv/bin/python bench/smalldata_bench.py                                  # holoen16-dev, 65 a character, seeds 0 1 2
    .venv/bin/python bench/smalldata_bench.py --data ../shared/data/newgame8-faces96 --per-char 0
    .venv/bin/python bench/smalldata_bench.py --json out.json --rows auto       # only animeid's default

``--per-char 0`` keeps the dataset's own seeded split (newgame8 has 10-57 faces a character: its
70 % training part is already the study's regime or smaller).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.images import iter_image_files  # noqa: E402
from animeid.train import STUDY_TABLE, compare  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"


def make_split(data: Path, work: Path, per_char: int, val_per_char: int, seed: int) -> dict[str, int]:
    """Links to ``data``'s character folders in ``work`` and a ``split.csv``; counts per part."""
    rng = np.random.default_rng(seed)
    rows, counts = [], {"train": 0, "val": 0, "test": 0}
    for char in sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith(".")):
        (work / char).symlink_to((data / char).resolve(), target_is_directory=True)
        files = sorted(Path(p).relative_to(data) for p in iter_image_files([data / char]))
        order = rng.permutation(len(files))
        for k, i in enumerate(order):
            part = "train" if k < per_char else "val" if k < per_char + val_per_char else "test"
            rows.append((files[i].as_posix(), char, part))
            counts[part] += 1
    with open(work / "split.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-char", type=int, default=65, help="training faces a character (0: the dataset's own split)")
    ap.add_argument("--val-per-char", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--augment", type=int, default=2, help="variants a face for the study's augmented row")
    ap.add_argument("--rows", nargs="+", default=["study", "auto"], choices=["study", "auto"])
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 1
    table = STUDY_TABLE if "study" in args.rows else []
    results = []
    with tempfile.TemporaryDirectory(prefix="smalldata-") as tmp:
        for seed in args.seeds:
            work = Path(tmp) / f"seed{seed}" / args.data.name
            work.mkdir(parents=True)
            if args.per_char > 0:
                counts = make_split(args.data, work, args.per_char, args.val_per_char, seed)
            else:
                for d in args.data.iterdir():
                    if d.is_dir():
                        (work / d.name).symlink_to(d.resolve(), target_is_directory=True)
                counts = {}
            t0 = time.perf_counter()
            rows = compare(work, Path(tmp) / f"seed{seed}" / "models", augment=args.augment, rows=table,
                           include_best="auto" in args.rows, seed=seed, progress=False,
                           on_row=lambda r: print(f"seed {seed}: {r['method']}: top-1 {r['top1']:.1%} "
                                                  f"({r['train_seconds']:.0f} s)", file=sys.stderr, flush=True))
            for r in rows:
                results.append({**r, "seed": seed, "split": counts, "seconds_all": round(time.perf_counter() - t0)})
    methods = list(dict.fromkeys(r["method"].split(": ")[0] for r in results))
    print(f"**{args.data.name}**, " + (f"{args.per_char} training + {args.val_per_char} validation faces a "
                                       "character, the rest tested" if args.per_char else "its own seeded split")
          + f", seeds {', '.join(map(str, args.seeds))}\n")
    print("| method | top-1 (mean) | per seed | top-5 | training time (mean) |\n|---|---:|---:|---:|---:|")
    for m in methods:
        rs = [r for r in results if r["method"].split(": ")[0] == m]
        chosen = sorted({r["method"].split(": ")[1] for r in rs if ": " in r["method"]})
        print(f"| {m}{' (' + ', '.join(chosen) + ')' if chosen else ''} | {np.mean([r['top1'] for r in rs]):.1%} | "
              + " / ".join(f"{r['top1']:.1%}" for r in rs) + f" | {np.mean([r['top5'] for r in rs]):.1%} | "
              f"{np.mean([r['train_seconds'] for r in rs]):.0f} s |")
    if results:
        print(f"\nTest faces per seed: {results[0]['n_test']}.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
