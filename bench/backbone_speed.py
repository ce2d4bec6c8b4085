"""Backbone speed: faces per second, ONNX Runtime vs torch, batch 1 and batch 32, on real face crops.

    .venv/bin/python bench/backbone_speed.py                       # 64 crops of holoen16-dev
    .venv/bin/python bench/backbone_speed.py --backbones efficientnet_lite0 efficientnet_lite0@128
    .venv/bin/python bench/backbone_speed.py --accuracy 20          # + a quick linear-probe accuracy

Times cover the network only (preprocessed float32 input); preprocessing (load, resize, normalise) is
timed separately. The first batch of each run is a warm-up and is not counted. ``--accuracy K`` also
fits a logistic regression on the features of K crops per character (5-fold cross-validation), to see
what a smaller input size costs. Numbers are indicative: they depend on the CPU and its other load.
Needs torch (``animeid[train]``) for the torch columns and for the first ONNX export.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid import backbones as B  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"
DEFAULT_BACKBONES = ["inception_v3", "efficientnet_lite0", "efficientnet_lite2", "efficientnet_lite0@128"]


def pick_faces(data: Path, n: int) -> list[Path]:
    """``n`` crops spread evenly over the characters (sorted, deterministic)."""
    chars = sorted(d for d in data.iterdir() if d.is_dir())
    per = [sorted(c.glob("*.jpg")) for c in chars]
    out: list[Path] = []
    i = 0
    while len(out) < n and any(i < len(p) for p in per):
        out += [p[i] for p in per if i < len(p)]
        i += 1
    return out[:n]


def faces_per_second(run, x: np.ndarray, batch: int, min_seconds: float) -> float:
    """Throughput of ``run`` over ``x`` in batches: one warm-up batch, then whole passes until ``min_seconds``."""
    run(x[:batch])
    done, spent = 0, 0.0
    while done == 0 or spent < min_seconds:
        for i in range(0, len(x), batch):
            t = time.perf_counter()
            run(x[i:i + batch])
            spent += time.perf_counter() - t
            done += len(x[i:i + batch])
    return done / spent


def speed_table(names: list[str], faces: list[Path], threads: int, min_seconds: float,
                engines: list[str]) -> str:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for name in names:
        cfg = B.get_config(name)
        t = time.perf_counter()
        x = B.preprocess(faces, cfg)
        prep = len(faces) / (time.perf_counter() - t)
        row = {"backbone": name, "size": cfg.input_size, "dim": cfg.feature_dim, "prep": prep}
        if "onnx" in engines:
            ext = B.FeatureExtractor(cfg, providers=["CPUExecutionProvider"], intra_op_threads=threads)
            ext.session  # export (first time) and load outside the timing
            for b in (1, 32):
                row[f"onnx{b}"] = faces_per_second(ext.run, x, b, min_seconds)
        if "torch" in engines:
            model = B.create_torch_model(cfg)

            def run_torch(a, model=model):
                with torch.inference_mode():
                    return model(torch.from_numpy(a)).numpy()

            for b in (1, 32):
                row[f"torch{b}"] = faces_per_second(run_torch, x, b, min_seconds)
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)),
              file=sys.stderr, flush=True)

    cols = [("backbone", "backbone"), ("size", "input px"), ("dim", "dim")]
    cols += [(f"{e}{b}", f"{'ONNX Runtime' if e == 'onnx' else 'torch'} b={b}") for e in engines for b in (1, 32)]
    cols += [("prep", "preprocess")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" if k == "backbone" else "---:"
                                                                      for k, _ in cols) + "|"]
    for r in rows:
        cells = [f"{r[k]:.1f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(names: list[str], data: Path, per_class: int, threads: int) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    files, labels = [], []
    for i, c in enumerate(sorted(d for d in data.iterdir() if d.is_dir())):
        picked = sorted(c.glob("*.jpg"))[:per_class]
        files += picked
        labels += [i] * len(picked)
    y = np.array(labels)
    lines = [f"| backbone | linear probe accuracy ({len(files)} crops, {len(set(labels))} characters, 5-fold) |",
             "|---|---:|"]
    for name in names:
        ext = B.FeatureExtractor(name, providers=["CPUExecutionProvider"], intra_op_threads=threads)
        feats = ext.extract(files, batch_size=32)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        acc = cross_val_score(clf, feats, y, cv=cv)
        lines.append(f"| {name} | {acc.mean():.3f} ± {acc.std():.3f} |")
        print(f"  {name}: accuracy {acc.mean():.3f}", file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <character>/*.jpg crops")
    ap.add_argument("--n", type=int, default=64, help="number of crops to time (default 64)")
    ap.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES, help="names, 'name@size' allowed")
    ap.add_argument("--engines", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both engines")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="least time measured per cell")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed table (with --accuracy)")
    ap.add_argument("--accuracy", type=int, default=0, metavar="K",
                    help="also a linear-probe accuracy on K crops per character (0: skip)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: no such folder (the shared real data sits beside the repo)", file=sys.stderr)
        return 1
    faces = pick_faces(args.data, args.n)
    if not args.no_speed:
        print(f"## Backbone speed: faces per second ({len(faces)} crops of {args.data.name}, "
              f"{args.threads} threads, {os.cpu_count()} CPUs)\n")
        print(speed_table(args.backbones, faces, args.threads, args.min_seconds, args.engines))
        print()
    if args.accuracy:
        print(accuracy_table(args.backbones, args.data, args.accuracy, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
