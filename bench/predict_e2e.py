"""End-to-end prediction speed as a user runs it: ``animeid predict MODEL FOLDER --json`` on a folder of
face crops and on a folder of 640x360 frames, timed from the command's start to its exit (Python start,
model load, reading, face detection, naming, JSON out), next to the limits measured in the same run: the
recogniser network alone on the same crops (``Recognizer.predict_faces``: preprocessing, the ONNX graph,
head, open-set layer; no detection, no file reading) and the model's load time.

    .venv/bin/python bench/predict_e2e.py MODEL.animeid [--crops 1000] [--frames FOLDER] [--before DIR]

``--before DIR``: also time the CLI of an older checkout of animeid (``git worktree add DIR COMMIT``),
run as ``python -m animeid`` in DIR with this environment, on the same pictures: before and after in one run.

Crops: every k-th picture of holoen16-dev (linked into a temporary folder; the data is never copied).
Frames: any folder of pictures (e.g. the Saekano clip's frames every 0.5 s, shrunk to 640x360).
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path(os.environ.get("ANIMEID_SHARED_DATA", ROOT.parent / "shared" / "data")) / "holoen16-dev"
ANIMEID = Path(sys.executable).with_name("animeid")


def cli_seconds(model: Path, folder: Path, extra: list[str], checkout: Path | None = None) -> tuple[float, int]:
    """Wall seconds of ``animeid predict MODEL FOLDER --json`` and the number of JSON lines it printed
    (``checkout``: run that checkout's animeid instead)."""
    cmd = [str(ANIMEID)] if checkout is None else [sys.executable, "-m", "animeid"]
    t = time.perf_counter()
    r = subprocess.run([*cmd, "predict", str(model), str(folder), "--json", *extra], capture_output=True,
                       text=True, cwd=checkout)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"animeid predict failed ({r.returncode}): {r.stderr[-500:]}")
    return dt, sum(1 for line in r.stdout.splitlines() if line.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--crops", type=int, default=1000)
    ap.add_argument("--frames", type=Path, help="a folder of frames (640x360) to time as well")
    ap.add_argument("--before", type=Path, help="an older checkout of animeid to time on the same pictures")
    args = ap.parse_args(argv)
    from animeid.images import iter_image_files, to_array
    from animeid.predict import PredictConfig, Recognizer

    files = list(iter_image_files([args.data]))
    files = files[:: max(1, len(files) // args.crops)][:args.crops]
    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict-e2e-") as tmp:
        crops = Path(tmp) / "crops"
        crops.mkdir()
        for i, f in enumerate(files):
            (crops / f"{i:05d}{f.suffix}").symlink_to(f.resolve())
        for label, folder, extra in (("face crops (holoen16), defaults", crops, []),
                                     ("face crops, `--flip always`", crops, ["--flip", "always"]),
                                     ("face crops, `--detect never`", crops, ["--detect", "never"]),
                                     *([(f"frames 640x360 ({args.frames.name}), defaults", args.frames, [])]
                                       if args.frames else [])):
            dt, n = cli_seconds(args.model, folder, extra)
            rows.append((f"`animeid predict` CLI: {label}", n, dt, n / dt))
            if args.before is not None and "--flip" not in extra:
                dt, n = cli_seconds(args.model.resolve(), folder, extra, args.before.resolve())
                rows.append((f"the same, before ({args.before.name})", n, dt, n / dt))
    t = time.perf_counter()
    rec = Recognizer.load(args.model)
    rec.predict_faces([to_array(files[0])])
    load_s = time.perf_counter() - t
    faces = [to_array(f) for f in files]
    rec.predict_faces(faces[:32])
    for flip in ("always", "auto"):
        t = time.perf_counter()
        rec.predict_faces(faces, cfg=PredictConfig(batch_size=32, flip=flip))
        dt = time.perf_counter() - t
        rows.append((f"network alone (`Recognizer.predict_faces`, decoded crops, batch 32, flip {flip})",
                     len(faces), dt, len(faces) / dt))
    print("| what | pictures | seconds | pictures/s |\n|---|---:|---:|---:|")
    for what, n, s, rate in rows:
        print(f"| {what} | {n} | {s:.1f} | {rate:.0f} |")
    print(f"\nModel load (import of the model's modules, the file read, ONNX Runtime sessions, first face): "
          f"{load_s:.1f} s. Load average at the end: {os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
