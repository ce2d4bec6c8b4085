"""Fine-tuning benchmark: train on a folder dataset's seeded split, score the held-out part, time ONNX.

    .venv/bin/python bench/train_bench.py                                  # the default recipe on holoen16-dev
    .venv/bin/python bench/train_bench.py --input-size 128 --epochs 6     # a variant
    .venv/bin/python bench/train_bench.py --hist                          # + embedding/colour-histogram probe

Split: ``animeid.evaluate.stratified_split(labels, test_size=0.2, val_size=0.1, seed=0)`` (via
``read_folder_dataset``); 'val' picks the exported epoch, 'test' is only scored. Prints one markdown
table row (top-1/top-5 on 'test', the twins fuwawa/mococo, training wall and CPU seconds, ONNX Runtime
faces/s at batch 32 and batch 1, network only, and batch 32 with preprocessing) and appends it to
``--results``. Timings depend on the machine's other load: the 1-minute load average is printed beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid import backbones as B  # noqa: E402
from animeid.evaluate import evaluate_predictions, read_folder_dataset  # noqa: E402
from animeid.finetune import FinetuneConfig, finetune, onnx_predict  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"


def onnx_speed(onnx_bytes: bytes, x: np.ndarray, batch: int, seconds: float = 4.0) -> float:
    """Faces per second of the graph on preprocessed ``x`` (first batch is a warm-up)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    xb = np.ascontiguousarray(x[:batch])
    sess.run(None, {"pixels": xb})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"pixels": xb})
        n += len(xb)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--config", default="{}", help="FinetuneConfig fields as JSON (applied after the flags)")
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    for name in ("backbone", "input_size", "trainable_blocks", "epochs", "batch_size", "lr", "weight_decay",
                 "augment", "seed", "threads", "time_budget_s"):
        typ = {"backbone": str, "augment": str, "lr": float, "weight_decay": float,
               "time_budget_s": float}.get(name, int)
        ap.add_argument("--" + name.replace("_", "-"), type=typ, default=None)
    ap.add_argument("--no-tta", action="store_true", help="no mirror-image averaging")
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="resumable checkpoints here")
    ap.add_argument("--save-onnx", type=Path, default=None)
    ap.add_argument("--hist", action="store_true",
                    help="also fit LogisticHead on [fine-tuned embedding, colour histogram] of train+val")
    ap.add_argument("--results", type=Path, default=None, help="append the table row(s) to this file")
    ap.add_argument("--name", default="")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    kw = {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}
    if args.no_tta:
        kw["tta_flip"] = False
    kw.update(json.loads(args.config))
    kw.setdefault("threads", 2)
    cfg = FinetuneConfig(**kw)

    ds = read_folder_dataset(args.data, check_images=False, test_size=0.2, val_size=0.1, seed=0)
    (xtr, ytr), (xv, yv), (xte, yte) = (ds.subset(s) for s in ("train", "val", "test"))
    print(f"{args.data.name}: train {len(xtr)}, val {len(xv)}, test {len(xte)}; {cfg}", flush=True)

    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = finetune(xtr, ytr, xv, yv, cfg, checkpoint_dir=args.checkpoint_dir)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()[0]
    if args.save_onnx:
        args.save_onnx.write_bytes(res.onnx_bytes)
    for h in res.history:
        print(f"epoch {h['epoch']}: train acc {h['train_acc']:.3f} loss {h['train_loss']:.3f}  "
              f"val acc {h['val_acc']:.3f} loss {h['val_loss']:.3f}  {h['seconds']:.0f} s")

    x = B.preprocess(xte, res.backbone)
    t = time.perf_counter()
    proba, emb = onnx_predict(res.onnx_bytes, x, res.backbone, batch_size=32)
    t_pred = time.perf_counter() - t
    rep = evaluate_predictions(yte, proba, res.labels)
    t = time.perf_counter()
    onnx_predict(res.onnx_bytes, xte[:256], res.backbone, batch_size=32)
    with_pre = min(256, len(xte)) / (time.perf_counter() - t)
    b32, b1 = onnx_speed(res.onnx_bytes, x, 32), onnx_speed(res.onnx_bytes, x, 1)
    pc = rep.per_class
    name = args.name or f"{cfg.backbone}@{res.backbone.input_size} k={cfg.trainable_blocks} ep={cfg.epochs}"
    row = (f"| {name} | {rep.top1:.2%} | {rep.top5:.2%} | {pc.get('fuwawa', {}).get('accuracy') or 0:.1%} / "
           f"{pc.get('mococo', {}).get('accuracy') or 0:.1%} | "
           f"{wall:.0f} s (cpu {cpu:.0f} s, result {res.seconds:.0f} s) | "
           f"best ep {res.best_epoch} val {res.val_acc or 0:.2%} | {b32:.0f} / {b1:.0f} / pre {with_pre:.0f} faces/s | "
           f"load {load0:.1f}->{load1:.1f} |")
    print(row, flush=True)
    lines = [row]

    if args.hist:
        from animeid.heads import LogisticHead, color_histograms, combine_features

        t = time.perf_counter()
        xfit, yfit = list(xtr) + list(xv), list(ytr) + list(yv)
        e_fit = onnx_predict(res.onnx_bytes, xfit, res.backbone, batch_size=32)[1]
        h_fit, h_te = color_histograms(xfit), color_histograms(xte)
        for w in (0.0, 0.3, 0.5):
            blocks = (e_fit, h_fit) if w else (e_fit,)
            head = LogisticHead(C=1.0).fit(combine_features(*blocks, weights=(1.0, w) if w else None), yfit)
            tb = (emb, h_te) if w else (emb,)
            r2 = evaluate_predictions(yte, head.predict_proba(combine_features(*tb, weights=(1.0, w) if w else None)),
                                      [str(c) for c in head.classes_])
            p2 = r2.per_class
            row2 = (f"| {name} + LogisticHead(emb{f' + {w} hist' if w else ''}) | {r2.top1:.2%} | {r2.top5:.2%} | "
                    f"{p2['fuwawa']['accuracy']:.1%} / {p2['mococo']['accuracy']:.1%} | "
                    f"+{time.perf_counter() - t:.0f} s | | | |")
            print(row2, flush=True)
            lines.append(row2)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write("\n".join(lines) + "\n")
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
