"""Reading the mirror image only where the answer is close (``PredictConfig.flip``): the answers of
``auto`` and ``never`` next to ``always`` (every face with its mirror image, what ``evaluate``
measures), on faces held out from the models, and the speed of each.

    .venv/bin/python bench/flip_bench.py MODEL.animeid... [--data ../shared/data/holoen16-dev]

MODEL: fine-tuned models of ``bench/openset_bench.py --method finetune --keep DIR`` (trained on some
of the dataset's characters, with the seed in their metadata). For each: the known characters' test
faces (the seeded split the model was trained with) and every face of the characters it never saw.
Per mode: verdicts (a name or ``unknown``) the same as ``always``'s, known faces named right first,
unknown faces refused, AUROC of the open-set score, faces per second (``Recognizer.identify_faces`` on
decoded crops, batch 32). Prints a Markdown table, one row per model and mode.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.evaluate import read_folder_dataset  # noqa: E402
from animeid.images import to_array  # noqa: E402
from animeid.openset import _auroc  # noqa: E402
from animeid.predict import PredictConfig, Recognizer  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"


def faces_of(rec: Recognizer, data: Path, part: str = "test") -> tuple[list, np.ndarray, list]:
    """(known faces of ``part`` of the split, their names, unknown faces) for a model trained on some of
    ``data``'s characters."""
    seed = int(rec.meta["training"]["seed"])
    chars = sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    known = list(rec.bundle.labels)
    held = [c for c in chars if c not in known]
    with tempfile.TemporaryDirectory() as tmp:
        ds_dir = Path(tmp) / f"known-{seed}"
        ds_dir.mkdir()
        for c in known:
            (ds_dir / c).symlink_to((data / c).resolve(), target_is_directory=True)
        te_p, te_y = read_folder_dataset(ds_dir, seed=seed).subset(part)
        te = [to_array(p) for p in te_p]
    unk = [to_array(p) for c in held for p in sorted((data / c).iterdir())]
    return te, np.asarray(te_y), unk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print("| model | flip | verdicts as `always` | known named right first | unknown refused | AUROC | faces/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.models:
        rec = Recognizer.load(path)
        te, te_y, unk = faces_of(rec, args.data)
        faces = te + unk
        rec.identify_faces(faces[:32])                       # sessions opened, graph split
        base = None
        for flip in ("always", "auto", "never"):
            t = time.perf_counter()
            v = rec.identify_faces(faces, PredictConfig(flip=flip, top=1))
            dt = time.perf_counter() - t
            names = np.asarray([x["name"] for x in v])
            score = np.asarray([x["open_set"]["score"] for x in v])
            base = names if base is None else base
            n = len(te)
            print(f"| {path.name} | {flip} | {np.mean(names == base):.2%} | {np.mean(names[:n] == te_y):.1%} | "
                  f"{np.mean(names[n:] == 'unknown'):.1%} | {_auroc(score[:n], score[n:]):.3f} | {len(faces) / dt:.0f} |",
                  flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
