"""Open-set benchmark: unknown faces, characters enrolled from k pictures, clustering for labelling.

For each seed, ``--held`` characters (default 4 of holoen16-dev's 16) are held out entirely; a model
is trained with :func:`animeid.train.train` (``--method``, default ``logistic``) on the others, with
its usual split (the test faces of the known characters are never used for anything but measuring).
Then, from the saved model:

* **unknown**: the open-set score of the known characters' test faces against every face of the
  held-out characters: AUROC, and at the model's stored threshold the share of unknown faces
  rejected and of known faces accepted *and* named correctly (the head's max probability as a
  reference score);
* **enrolment**: each held-out character enrolled with ``k`` (1, 5, 10) of its pictures, chosen at
  random; accuracy on its pictures after the first 10 (the same faces for every k), each face
  named among *all* characters (known and enrolled), and the known characters' test accuracy after
  the enrolment; per ``--modes`` (``hybrid``: head for the trained characters, prototypes decide
  trained vs enrolled; ``prototype``: prototypes for everyone);
* **clustering**: the held-out characters' faces (characters the model has never seen: what one
  labels) grouped with the model's embedding, and with plain ImageNet features + colour histogram:
  purity, and the user actions labelling takes (name a group 1, fix a wrong face 1, label a face
  left apart 1) against labelling face by face.

Features come from the on-disk cache (:func:`animeid.backbones.extract_features`), so reruns are cheap.

    .venv/bin/python bench/openset_bench.py                      # Markdown table, seeds 0 1 2
    .venv/bin/python bench/openset_bench.py --json out.json      # and the numbers
    .venv/bin/python bench/openset_bench.py --data ../shared/data/newgame8-faces96 --held 2
    .venv/bin/python bench/openset_bench.py --method finetune --seeds 0   # the fine-tuned network's embedding
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.cluster import DEFAULT_THRESHOLD, cluster_embeddings, purity  # noqa: E402
from animeid.evaluate import read_folder_dataset  # noqa: E402
from animeid.features import FeaturePipeline  # noqa: E402
from animeid.images import to_array  # noqa: E402
from animeid.openset import _auroc, fit_openset, raw_features  # noqa: E402
from animeid.predict import Recognizer  # noqa: E402
from animeid.train import train  # noqa: E402

#: the known-face refusal rates reported as operating points
RATES = (0.02, 0.03, 0.05, 0.08, 0.15)
DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"


def _l2n(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _features(rec: Recognizer, paths):
    """(head features, open-set features) of pictures, through the feature cache where possible."""
    imgs = [to_array(p) for p in paths]          # keys the cache as train() does (decoded pixels)
    if rec.spec.kind == "backbone":
        X = FeaturePipeline(rec.spec, rec.bundle.backbone).transform(imgs)
        return X, raw_features(X)
    if rec.spec.kind == "pixels":
        X = rec.pipeline.transform(imgs)
        return X, raw_features(X)
    return rec._features(imgs, 32, True)


def run_seed(data: Path, seed: int, args, work: Path) -> dict:
    chars = sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    rng = np.random.default_rng(seed)
    forced = [c for c in args.hold if c in chars]
    rest = [c for c in chars if c not in forced]
    held = sorted(forced + [str(c) for c in rng.choice(rest, max(0, args.held - len(forced)), replace=False)])
    known = [c for c in chars if c not in held]
    ds_dir = work / f"known-{seed}"
    ds_dir.mkdir()
    for c in known:
        (ds_dir / c).symlink_to((data / c).resolve(), target_is_directory=True)
    model = (args.keep or work) / f"{args.data.name}-{args.method}-seed{seed}.animeid"
    model.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train(ds_dir, model, method=args.method, seed=seed, progress=False, **args.train_options)
    train_s = time.perf_counter() - t0
    rec = Recognizer.load(model)
    ds = read_folder_dataset(ds_dir, seed=seed)
    tr_p, tr_y = ds.subset("train")
    va_p, va_y = ds.subset("val")
    te_p, te_y = ds.subset("test")
    te_y = np.asarray(te_y)
    os_ = rec.openset
    if args.dim is not None or args.shrink is not None or args.far is not None:   # refit with other settings
        Ftr, Fva = _features(rec, tr_p)[1], _features(rec, va_p)[1]
        kw = {k: v for k, v in (("dim", args.dim), ("shrink", args.shrink), ("far", args.far)) if v is not None}
        os_ = fit_openset(Ftr, tr_y, Fva, va_y, classes=list(rec.bundle.labels), **kw)
    Xte, Fte = _features(rec, te_p)
    held_paths = {c: sorted((data / c).glob("*")) for c in held}
    for c in held:
        held_paths[c] = [held_paths[c][i] for i in rng.permutation(len(held_paths[c]))]
    all_h = [p for c in held for p in held_paths[c]]
    all_hy = np.asarray([c for c in held for _ in held_paths[c]])
    Xh, Fh = _features(rec, all_h)
    head = rec.bundle.head
    Pte, Ph = head.predict_proba(Xte), head.predict_proba(Xh)
    trained = np.asarray(rec.bundle.labels)
    head_ok = trained[Pte.argmax(1)] == te_y
    Ete, Eh = os_.embed(Fte), os_.embed(Fh)
    from animeid.calibration import apply_temperature

    T_head = rec.head_temperature
    s_te = os_.score(Ete, os_.proba(Ete, apply_temperature(Pte, T_head)))
    s_h = os_.score(Eh, os_.proba(Eh, apply_temperature(Ph, T_head)))
    T = os_.threshold
    out = {"seed": seed, "held_out": held, "n_known_test": int(len(te_y)), "n_unknown": int(len(all_h)),
           "train_seconds": round(train_s, 1), "closed_set_top1": float(head_ok.mean()),
           "auroc": _auroc(s_te, s_h), "auroc_max_proba": _auroc(Pte.max(1), Ph.max(1)),
           "unknown_rejected": float(np.mean(s_h < T)), "known_accepted": float(np.mean(s_te >= T)),
           "known_correct": float(np.mean((s_te >= T) & head_ok)), "threshold": T,
           "mode_chosen": os_.mode, "calibration": os_.calibration}
    # the operating points a user can choose (--unknown-threshold RATE: known calibration faces refused)
    if os_.known_quantiles is not None:
        for rate in RATES:
            t = os_.threshold_for_rate(rate)
            out[f"at_{rate:g}"] = {"known_correct": float(np.mean((s_te >= t) & head_ok)),
                                   "unknown_rejected": float(np.mean(s_h < t))}
    # calibration of the shown probabilities (the head's, at the model's temperature) on the known test faces
    from animeid.calibration import expected_calibration_error

    shown = apply_temperature(Pte, T_head)
    out["head_temperature"] = rec.head_temperature
    out["ece_raw"] = expected_calibration_error(Pte.max(1), head_ok)
    out["ece"] = expected_calibration_error(shown.max(1), trained[shown.argmax(1)] == te_y)
    # enrolment: the first k pictures of each held-out character, queries after the first 10
    first = {c: np.flatnonzero(all_hy == c) for c in held}
    q = np.concatenate([first[c][10:] for c in held])
    for mode in args.modes:
        base = dataclasses.replace(os_, mode=mode)
        for k in args.shots:
            o = base
            for c in held:
                o = o.enrolled(c, Eh[first[c][:k]])
            labels = np.asarray(o.labels)
            pq = o.proba(Eh[q], Ph[q])
            pk = o.proba(Ete, Pte)
            new_cols = [o.labels.index(c) for c in held]
            out[f"{mode}_k{k}_new"] = float(np.mean(labels[pq.argmax(1)] == all_hy[q]))
            out[f"{mode}_k{k}_new_among_new"] = float(np.mean(np.asarray(held)[pq[:, new_cols].argmax(1)] == all_hy[q]))
            out[f"{mode}_k{k}_known"] = float(np.mean(labels[pk.argmax(1)] == te_y))
            out[f"{mode}_k{k}_all"] = float(np.mean(np.r_[labels[pq.argmax(1)] == all_hy[q], labels[pk.argmax(1)] == te_y]))
    # clustering of the held-out characters' faces
    out["cluster_distance"] = os_.cluster_distance
    for name, E, thr in (("model", Eh, os_.cluster_distance or DEFAULT_THRESHOLD["model"]),
                         ("plain", _l2n(Xh), DEFAULT_THRESHOLD["plain"])):
        if rec.spec.kind != "backbone" and name == "plain":
            continue
        for link in args.linkages:
            todo = [("default", thr)] + [(f"{t:g}", t) for t in args.cluster_sweep.get(name, ())]
            for tag, t in todo:
                pr = purity(cluster_embeddings(E, threshold=t, min_size=2, linkage=link), all_hy)
                out[f"cluster_{name}_{link}_{tag}"] = {**pr, "threshold": t}
    return out


def summarise(rows: list[dict], args) -> str:
    def m(key, sub=None):
        vals = [(r[key][sub] if sub else r[key]) for r in rows if key in r and r[key] is not None]
        return float(np.mean(vals)) if vals else float("nan")

    pct = lambda v: f"{v:.1%}"  # noqa: E731
    n = len(rows)
    lines = [f"**{args.data.name}**, {args.held} characters held out"
             + (f" (always {', '.join(args.hold)})" if args.hold else "") + f", method `{args.method}`, "
             f"mean of {n} seed(s) ({', '.join(str(r['seed']) for r in rows)})", "",
             "| figure | value |", "|---|---:|",
             f"| closed-set top-1, known characters (head) | {pct(m('closed_set_top1'))} |",
             f"| unknown AUROC, open-set score | {m('auroc'):.3f} |",
             f"| unknown AUROC, head's max probability (reference) | {m('auroc_max_proba'):.3f} |",
             f"| at the stored threshold: unknown faces rejected | {pct(m('unknown_rejected'))} |",
             f"| at the stored threshold: known faces accepted | {pct(m('known_accepted'))} |",
             f"| at the stored threshold: known faces accepted and named correctly | {pct(m('known_correct'))} |",
             f"| expected calibration error of the shown probabilities, known test faces (raw head) | "
             f"{m('ece'):.3f} ({m('ece_raw'):.3f}) |",
             "", "| --unknown-threshold (known calibration faces refused) | known faces named right first | "
                 "unknown faces refused |", "|---:|---:|---:|"]
    for rate in RATES:
        if any(f"at_{rate:g}" in r for r in rows):
            lines.append(f"| {rate:.0%} | {pct(m(f'at_{rate:g}', 'known_correct'))} | "
                         f"{pct(m(f'at_{rate:g}', 'unknown_rejected'))} |")
    lines += ["", "| enrolled with | mode | new characters (among all) | new (among the new only) | known after enrolment |",
              "|---:|---|---:|---:|---:|"]
    for mode in args.modes:
        for k in args.shots:
            lines.append(f"| {k} picture(s) | {mode} | {pct(m(f'{mode}_k{k}_new'))} | "
                         f"{pct(m(f'{mode}_k{k}_new_among_new'))} | {pct(m(f'{mode}_k{k}_known'))} |")
    lines += ["", "| clustering the held-out characters' faces | threshold | purity | faces grouped | groups | "
                  "actions | face by face |", "|---|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({k for r in rows for k in r if k.startswith("cluster_") and k != "cluster_distance"},
                  key=lambda k: (k.rsplit("_", 1)[0], k.endswith("default") is False, k))
    for key in keys:
        _, name, link, t = key.split("_", 3)
        if t == "default":
            t = f"{m(key, 'threshold'):.2f} ({'calibrated' if name == 'model' else 'default'})"
        lines.append(f"| {name} embedding, {link} linkage | {t} | {pct(m(key, 'purity'))} | {pct(m(key, 'grouped'))} | "
                     f"{m(key, 'groups'):.0f} | {m(key, 'actions'):.0f} | {m(key, 'actions_face_by_face'):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--held", type=int, default=4, help="characters held out (default 4)")
    ap.add_argument("--hold", nargs="+", default=[], metavar="NAME",
                    help="characters always among the held-out ones (e.g. a look-alike pair: fuwawa mococo)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", default="logistic")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a training option of the method (JSON value), e.g. time_budget=600")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--modes", nargs="+", default=["hybrid", "prototype"], choices=["hybrid", "prototype"])
    ap.add_argument("--dim", type=int, help="refit the open-set layer with this many directions")
    ap.add_argument("--shrink", type=float, help="refit the open-set layer with this shrinkage")
    ap.add_argument("--far", type=float, help="refit the open-set layer for this false-accept rate")
    ap.add_argument("--sweep", action="store_true", help="several clustering thresholds")
    ap.add_argument("--linkages", nargs="+", default=["complete"], choices=["average", "complete", "single"],
                    help="clustering linkages to measure (default: complete, animeid's)")
    ap.add_argument("--json", help="write the numbers to this file ('-': stdout)")
    ap.add_argument("--keep", type=Path, help="keep the trained models in this folder")
    args = ap.parse_args(argv)
    args.train_options = {}
    for kv in args.option:
        k, _, v = kv.partition("=")
        try:
            args.train_options[k] = json.loads(v)
        except json.JSONDecodeError:
            args.train_options[k] = v
    args.cluster_sweep = ({"model": (0.7, 0.8, 0.9, 1.0, 1.1, 1.2), "plain": (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)}
                          if args.sweep else {})
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="openset-bench-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(args.data, seed, args, Path(tmp)))
            print(f"seed {seed}: held out {rows[-1]['held_out']}, AUROC {rows[-1]['auroc']:.3f}, "
                  f"5-shot new {rows[-1].get(f'{args.modes[0]}_k5_new', float('nan')):.1%}", file=sys.stderr, flush=True)
    print(summarise(rows, args))
    if args.json:
        text = json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           "seeds": rows}, indent=2, default=float)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
