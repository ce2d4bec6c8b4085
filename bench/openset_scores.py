"""Candidate open-set scores on the models ``bench/openset_bench.py --method finetune --keep DIR --json F`` saved:
AUROC (known test faces against the held-out characters' faces) and, at thresholds refusing 2-15 % of
the known *validation* faces, the share of known test faces named right first and of unknown faces
refused. Each candidate is computed from the models' outputs (``probs``, ``embedding``, ``identity``,
cached in ``--cache``), so many can be compared without retraining.

    .venv/bin/python bench/openset_scores.py DIR F.json [--cache DIR2]

``layer score`` is whatever the saved models' open-set layer scores (``animeid.openset.SCORE_WITH_P``
for fine-tuned models made since it; the z-score for older ones). ``z + log p (after the
temperature)`` uses each model's own ``head_temperature``: for models made before it (1.0) it equals
``z + log p``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.calibration import apply_temperature  # noqa: E402
from animeid.evaluate import read_folder_dataset  # noqa: E402
from animeid.heads import color_histograms  # noqa: E402
from animeid.images import to_array  # noqa: E402
from animeid.openset import _auroc, _l2n  # noqa: E402
from animeid.predict import Recognizer  # noqa: E402

RATES = (0.02, 0.03, 0.05, 0.08, 0.15)


def outputs(rec: Recognizer, paths: list, cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        return dict(np.load(cache))
    imgs = [to_array(p) for p in paths]
    P, emb, idn = rec.pipeline.run_outputs(imgs, ["probs", "embedding", "identity"], 32)
    np.savez(cache, P=P, Emb=emb, Idn=idn, H=color_histograms(imgs))
    return dict(np.load(cache))


def load_run(data: Path, row: dict, models: Path, cache: Path) -> dict:
    seed, held = row["seed"], row["held_out"]
    rec = Recognizer.load(models / f"{data.name}-finetune-seed{seed}.animeid")
    chars = sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    with tempfile.TemporaryDirectory() as tmp:
        for c in chars:
            if c not in held:
                (Path(tmp) / c).symlink_to((data / c).resolve(), target_is_directory=True)
        ds = read_folder_dataset(tmp, seed=seed)
        parts = {s: ds.subset(s) for s in ("train", "val", "test")}
        parts = {s: ([data / Path(p).relative_to(tmp) for p in ps], np.asarray(ys)) for s, (ps, ys) in parts.items()}
    hp = [p for c in held for p in sorted((data / c).glob("*"))]
    parts["held"] = (hp, np.asarray([p.parent.name for p in hp]))
    O = {s: outputs(rec, ps, cache / f"{models.name}-s{seed}-{s}.npz") for s, (ps, _) in parts.items()}
    return {"rec": rec, "O": O, "y": {s: ys for s, (_, ys) in parts.items()}, "labels": list(rec.bundle.labels)}


def _feat(R, s):
    L = R["rec"].openset
    inputs = L.inputs or {}
    F = R["O"][s]["Idn"]
    if inputs.get("color_weight"):
        F = np.hstack([F, float(inputs["color_weight"]) * _l2n(R["O"][s]["H"])])
    return L.embed(F)


def z(R, s):
    return R["rec"].openset.zscores(_feat(R, s)).max(axis=1)


def logp(R, s):
    return np.log(np.clip(R["O"][s]["P"].max(axis=1), 1e-12, 1))


def logp_tempered(R, s):
    return np.log(apply_temperature(R["O"][s]["P"].astype(np.float64), R["rec"].head_temperature).max(axis=1))


def layer_score(R, s):
    L = R["rec"].openset
    E = _feat(R, s)
    return L.score(E, L.proba(E, apply_temperature(R["O"][s]["P"].astype(np.float64), R["rec"].head_temperature)))


def knn(k):
    def f(R, s):
        key = ("knn", id(R))
        if key not in R:
            R[key] = _feat(R, "train")
        return -np.sort(-(_feat(R, s) @ R[key].T), axis=1)[:, k - 1]
    return f


def standardised(parts, weights=None):
    def f(R, s):
        out = 0.0
        for w, g in zip(weights or [1.0] * len(parts), parts):
            v = g(R, "val")
            out = out + w * (g(R, s) - v.mean()) / v.std()
        return out
    return f


CANDIDATES = {
    "layer score": layer_score,
    "z-score": z,
    "highest probability": logp,
    "z + log p": standardised([z, logp]),
    "z + log p (after the temperature)": standardised([z, logp_tempered]),
    "z + 0.5 log p": standardised([z, logp], [1.0, 0.5]),
    "z + 2 log p": standardised([z, logp], [1.0, 2.0]),
    "nearest training face (k=1)": knn(1),
    "5th nearest training face": knn(5),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path)
    ap.add_argument("runs", type=Path, help="the --json file of openset_bench.py")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "animeid-openset-scores")
    args = ap.parse_args(argv)
    bench = json.loads(args.runs.read_text())
    data = Path(bench["args"]["data"])
    args.cache.mkdir(parents=True, exist_ok=True)
    runs = [load_run(data, row, args.models, args.cache) for row in bench["seeds"]]
    print("| score | AUROC (per seed) | " + " | ".join(f"{r:.0%} refused: named right / unknown refused"
                                                  for r in RATES) + " |")
    print("|---|---:|" + "---:|" * len(RATES))
    for name, fn in CANDIDATES.items():
        au, cells = [], {r: [] for r in RATES}
        for R in runs:
            ok = np.asarray(R["labels"])[R["O"]["test"]["P"].argmax(1)] == R["y"]["test"]
            sv, st, sh = fn(R, "val"), fn(R, "test"), fn(R, "held")
            au.append(_auroc(st, sh))
            for r in RATES:
                t = np.quantile(sv, r)
                cells[r].append((np.mean((st >= t) & ok), np.mean(sh < t)))
        print(f"| {name} | {np.mean(au):.3f} ({' / '.join(f'{a:.3f}' for a in au)}) | "
              + " | ".join(f"{np.mean([c[0] for c in cells[r]]):.1%} / {np.mean([c[1] for c in cells[r]]):.1%}"
                           for r in RATES) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
