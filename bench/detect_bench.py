"""Face detection benchmark on ../shared/data/detect-tadne (36 pictures, 39 reference faces).

Scoring (boxes.json, see its ``_doc``):

* a detection *hits* a reference face when their IoU is >= 0.3 (``--iou``); each reference face
  is hit at most once (detections are matched best score first, each to the unmatched reference
  face it overlaps most); a second detection of an already-hit face is a false alarm;
* a detection that hits nothing but overlaps (any common area) an ``ignore`` region counts
  neither way;
* any other detection is a false alarm.

Every picture is detected once at threshold 0; each threshold of the sweep then filters those
faces (the result equals a run at that threshold). The time is the wall time of
``detect_faces(path)``, decoding included, one picture after the other on one thread.

    python bench/detect_bench.py                 # Markdown table
    python bench/detect_bench.py --json out.json # also the numbers as JSON ('-' for stdout)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from animeid.detect import AUTO_UPSCALE_TO, Face, detect_faces, get_detector, iou  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "detect-tadne"
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def score_picture(dets: list[Face], faces: list[dict], ignore: list, min_iou: float) -> dict:
    """Hits, misses and false alarms of one picture's detections (already thresholded)."""
    hit_iou: dict[int, float] = {}
    false_alarms = ignored = 0
    for d in sorted(dets, key=lambda f: -f.score):
        cands = [(iou(d.box, f["box"]), i) for i, f in enumerate(faces) if i not in hit_iou]
        best = max(cands, default=(0.0, -1))
        if best[0] >= min_iou:
            hit_iou[best[1]] = best[0]
        elif any(overlaps(d.box, r) for r in ignore):
            ignored += 1
        else:
            false_alarms += 1
    return {
        "hits": len(hit_iou),
        "hard_hits": sum(1 for i in hit_iou if faces[i].get("hard")),
        "ious": list(hit_iou.values()),
        "false_alarms": false_alarms,
        "ignored": ignored,
        "missed": [f["box"] for i, f in enumerate(faces) if i not in hit_iou],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the pictures and boxes.json")
    ap.add_argument("--threshold", type=float, default=0.7, help="the main threshold (default 0.7)")
    ap.add_argument("--iou", type=float, default=0.3, help="IoU for a hit (default 0.3)")
    ap.add_argument("--detector", default="animeface")
    ap.add_argument("--upscale-to", type=int, default=None,
                    help=f"detect_faces' upscale_to (default: its own, {AUTO_UPSCALE_TO}; 0: never)")
    ap.add_argument("--no-sweep", action="store_true", help="only the main threshold")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH", help="also write the numbers as JSON ('-': stdout)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list missed faces and false alarms")
    args = ap.parse_args(argv)

    boxes_file = args.data / "boxes.json"
    if not boxes_file.is_file():
        print(f"{boxes_file}: not found (the real data sits beside the repository: ../shared/data)", file=sys.stderr)
        return 2
    ref = {k: v for k, v in json.loads(boxes_file.read_text(encoding="utf-8")).items() if not k.startswith("_")}
    names = sorted(ref)
    n_faces = sum(len(ref[n]["faces"]) for n in names)
    n_hard = sum(1 for n in names for f in ref[n]["faces"] if f.get("hard"))

    get_detector(args.detector)  # load the library outside the timing
    raw: dict[str, list[Face]] = {}
    times = []
    for name in names:
        t = time.perf_counter()
        raw[name] = detect_faces(args.data / name, threshold=0.0, detector=args.detector, upscale_to=args.upscale_to)
        times.append((time.perf_counter() - t) * 1000)
    ms = statistics.mean(times)

    thresholds = sorted({args.threshold} | (set() if args.no_sweep else set(SWEEP)))
    rows = []
    for th in thresholds:
        per = {n: score_picture([f for f in raw[n] if f.score >= th], ref[n]["faces"], ref[n].get("ignore", []), args.iou)
               for n in names}
        hits = sum(p["hits"] for p in per.values())
        ious = [x for p in per.values() for x in p["ious"]]
        rows.append({
            "threshold": th,
            "faces": n_faces,
            "hits": hits,
            "recall": hits / n_faces if n_faces else 0.0,
            "hard_faces": n_hard,
            "hard_hits": sum(p["hard_hits"] for p in per.values()),
            "false_alarms": sum(p["false_alarms"] for p in per.values()),
            "ignored": sum(p["ignored"] for p in per.values()),
            "mean_iou": statistics.mean(ious) if ious else 0.0,
            "missed": {n: p["missed"] for n, p in per.items() if p["missed"]},
            "false_alarm_pictures": sorted(n for n, p in per.items() if p["false_alarms"]),
        })

    main_row = next(r for r in rows if r["threshold"] == args.threshold)
    up = AUTO_UPSCALE_TO if args.upscale_to is None else args.upscale_to
    print(f"Face detection on {args.data.name}: {len(names)} pictures, {n_faces} reference faces "
          f"({n_hard} hard); detector {args.detector}, upscale_to {up}; hit = IoU >= {args.iou}\n")
    print("| threshold | found | recall | false alarms | ignored | mean IoU of hits | ms / picture |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = "**" if r is main_row else ""
        print(f"| {mark}{r['threshold']:g}{mark} | {r['hits']} / {r['faces']} | {r['recall'] * 100:.1f} % | "
              f"{r['false_alarms']} | {r['ignored']} | {r['mean_iou']:.2f} | {ms:.0f} |")
    print(f"\nms / picture: mean of {len(names)} (decode + detect, one thread); "
          f"min {min(times):.0f}, max {max(times):.0f}.")
    if args.verbose or main_row["missed"]:
        print(f"\nMissed at {args.threshold:g}: " + (", ".join(
            f"{n} {b}" for n, bs in main_row["missed"].items() for b in bs) or "none"))
    if args.verbose:
        print(f"False alarms at {args.threshold:g} in: {', '.join(main_row['false_alarm_pictures']) or 'none'}")

    if args.json:
        out = {
            "data": str(args.data), "detector": args.detector, "upscale_to": up, "iou": args.iou,
            "pictures": len(names), "ms_per_picture": round(ms, 1), "main_threshold": args.threshold,
            "rows": rows,
            "detections": {n: [f.to_dict() for f in raw[n]] for n in names},
        }
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
