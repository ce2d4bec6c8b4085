"""Recognition through a detector's boxes: do crops cut from the default detector's boxes keep the
accuracy of the crops a model was trained on (issue 11 §3)?

    .venv/bin/python bench/crop_geometry_bench.py MODEL.animeid... [--data ../shared/data/holoen16-dev]
        [--detector FILE] [--fill-with FILE]

MODEL: fine-tuned models of ``bench/openset_bench.py --keep`` (trained on some of the dataset's
characters, the seed in their metadata). Their known characters' test faces (the seeded split they
were trained with; 128 px crops of holoen16, cut with an LFFD detector) are named three ways: read
whole, as trained; searched by the default detector and each face re-cut from its box
(``detect="always"``, margin 0.2; the box scaled to the model's measured crop fill, measured here as
``train`` measures it for models made before it did, unless ``--stored-only``); the same through
AnimeFace 2009. Closed-set top-1 over all the test faces
(a face not found counts as wrong), faces found, top-1 among the found, and the three on the faces
both detectors found. Prints a Markdown table. ``--detector`` searches with another detector file
than the default; ``--fill-with`` measures every model's crop fill again, with another detector than
the one that searches (as a model trained before a new default arrived has it: it holds only where
the searching file lists that detector in its ``crop_fill_from``, otherwise ``crop_scale`` is used).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flip_bench import DEFAULT_DATA, faces_of  # noqa: E402

from animeid.predict import PredictConfig, Recognizer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--stored-only", action="store_true",
                    help="models without a stored crop fill cut crops with the detector's crop_scale (as before)")
    ap.add_argument("--detector", default="default", help="the detector that searches (default: the shipped one)")
    ap.add_argument("--fill-with", default=None, help="measure the crop fill with this detector (default: --detector)")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(f"searching with {args.detector}", file=sys.stderr)
    print("| model | faces | read whole (as trained) | re-cut, learned detector: found | top-1 | top-1 of found "
          "| re-cut, AnimeFace: found | top-1 | top-1 of found | found by both: n | whole | learned | AnimeFace |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in args.models:
        rec = Recognizer.load(path)
        te, te_y, _ = faces_of(rec, args.data)
        # made before train() measured it, or --fill-with: measure it as train() does
        if args.fill_with or (rec.crop_fill is None and not args.stored_only):
            from animeid.detect import measure_crop_fill

            rec.crop_fill = measure_crop_fill(faces_of(rec, args.data, "train")[0], args.fill_with or args.detector)
            print(f"{path.name}: crop fill measured on its training faces: {rec.crop_fill}", file=sys.stderr)
        else:
            print(f"{path.name}: crop fill stored in the model: {rec.crop_fill}", file=sys.stderr)
        row = [path.name, str(len(te))]
        whole = rec.predict_batch(te, PredictConfig(detect="never", unknown=False, flip="always", top=1))
        whole_ok = np.array([r['faces'][0]['name'] == y for r, y in zip(whole, te_y)])
        row.append(f"{whole_ok.mean():.1%}")
        per = {}
        for det in (args.detector, "animeface"):
            res = rec.predict_batch(te, PredictConfig(detect="always", detector=det, unknown=False, flip="always",
                                                      top=1))
            # the face nearest the centre when several are found (a crop's own face)
            def best(r):
                if not r["faces"]:
                    return None
                c = np.array([r["width"], r["height"]]) / 2
                return min(r["faces"], key=lambda f: np.hypot(*(np.add(f["box"][:2], f["box"][2:]) / 2 - c)))["name"]
            names = [best(r) for r in res]
            found = np.array([n is not None for n in names])
            ok = np.array([n == y for n, y in zip(names, te_y)])
            row += [f"{found.mean():.1%}", f"{ok.mean():.1%}", f"{ok[found].mean():.1%}"]
            per["animeface" if det == "animeface" else "learned"] = (found, ok)
        both = per["learned"][0] & per["animeface"][0]
        row += [str(int(both.sum())), f"{whole_ok[both].mean():.1%}", f"{per['learned'][1][both].mean():.1%}",
                f"{per['animeface'][1][both].mean():.1%}"]
        print("| " + " | ".join(row) + " |", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
