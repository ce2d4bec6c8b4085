"""CLI: the face-detector options every command shares, and ``animeid detector train|evaluate|quantize``."""
from __future__ import annotations

import sys
from pathlib import Path

from ._util import print_json

__all__ = ["add_detector_opts", "add_commands"]


def _detector_help() -> str:
    from .detect import DETECTORS

    return (f"face detector: {', '.join(DETECTORS)} (default: 'default', animeid's learned detector; "
            "'animeface': the study's AnimeFace 2009), or the path of a detector file from 'animeid detector train'")


def _score(v: str) -> float:
    """``--threshold``: a detector score, 0..1 (the rule :data:`animeid.options.DETECTOR_SCORE`)."""
    from .options import DETECTOR_SCORE

    return DETECTOR_SCORE.arg("--threshold")(v)


def add_detector_opts(p) -> None:
    """``--detector`` and ``--threshold`` (a detector score, 0..1), as every command that finds faces has them;
    both are checked by their rules (:mod:`animeid.options`) while the flags are read."""
    from .options import detector

    p.add_argument("--detector", type=detector().arg("--detector"), default=None, metavar="NAME|FILE",
                   help=_detector_help())
    p.add_argument("--threshold", type=_score, default=None, metavar="P",
                   help="keep faces whose detector score is at least P, 0..1 (default: the detector's own: a "
                        "calibrated probability for the shipped detector and most trained ones, a raw score for "
                        "one whose scores could not be calibrated, which 'animeid detector evaluate' names; 0.7 for "
                        "animeface, the study's)")


# ------------------------------------------------------------------------------------------- detector train

def cmd_train(a) -> int:
    from .detect.annotations import load_many
    from .detect.training import FINETUNE_RECIPE, DetectorTrainConfig, start_metadata, train_detector

    from .outputs import is_animeid_png, prepare_output_file

    from .errors import ConfigError

    # a bad --from is said before anything is read or written; a detector file it names gives the
    # input size (unless --input-size) and its boxes' crop_scale: fine-tuning keeps them
    start = start_metadata(a.init)
    input_size = a.input_size if a.input_size is not None else int(start.get("input_size", 512))
    # fine-tuning (--from) starts gentler: a lower rate and more blocks trained (FINETUNE_RECIPE)
    recipe = FINETUNE_RECIPE if a.init is not None else {}
    lr = a.lr if a.lr is not None else recipe.get("lr", DetectorTrainConfig.lr)
    frozen = a.frozen_blocks if a.frozen_blocks is not None else recipe.get("frozen_blocks",
                                                                            DetectorTrainConfig.frozen_blocks)
    try:                     # the options first: a bad value is said before anything is read or written
        cfg = DetectorTrainConfig(epochs=a.epochs, batch_size=a.batch_size, size=a.size, input_size=input_size,
                                  seed=a.seed, threads=a.threads, max_steps=a.max_steps, lr=lr,
                                  val_fraction=a.val_fraction, test_fraction=a.test_fraction,
                                  frozen_blocks=frozen)
    except ValueError as e:
        raise ConfigError(None, str(e)) from None
    out = Path(a.out)
    # a killed training (its checkpoint there, the detector file not yet written: it is written last)
    # resumes; a finished one's file is refused like any earlier output unless --overwrite
    resuming = (out.parent / (out.name + ".work") / "checkpoint.pt").is_file() and not out.exists()
    if not resuming:  # checked before the pictures are read
        out = prepare_output_file(out, own=_is_detector_file, what="a detector file", overwrite=a.overwrite)
    # the curves drawn beside it replace earlier ones animeid drew, never a picture of the user's
    history_png, pr_png = (prepare_output_file(out.with_suffix(s), own=is_animeid_png, suffix=".png", what="a plot",
                                               overwrite=True) for s in (".history.png", ".pr.png"))
    items = load_many(a.boxes, a.format)
    print(f"{len(items)} pictures, {sum(len(x.boxes) for x in items)} boxed faces", file=sys.stderr)
    r = train_detector(items, out, cfg, init=a.init, progress=None if not a.quiet else False,
                       about={"training_data": ", ".join(str(b) for b in a.boxes),
                              **({"crop_scale": start["crop_scale"]} if "crop_scale" in start else {})},
                       log=(lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr)))
    _draw_history(r.history, history_png)
    print(f"detector written to {out} ({r.seconds / 60:.1f} min); split {r.counts}; "
          f"threshold {r.metadata['threshold']:.2f}")
    _draw_validation_pr(out, pr_png, items, cfg)
    if r.metadata.get("calibrated") is False:
        from .detect.training import uncalibrated_reason

        why = uncalibrated_reason(r.metadata, too_few_hint=" (--val-fraction sets its share)")
        print(f"animeid: warning: its scores are not calibrated probabilities: {why}; the default threshold "
              f"{r.metadata['threshold']:.2f} is on the network's raw scores", file=sys.stderr)
    return 0


def _draw_validation_pr(out: Path, path: Path, items, cfg) -> None:
    """The new detector ``out``'s precision-recall curve on its validation pictures (as the written file
    detects them; where its threshold was chosen), drawn to ``path`` (``OUT.pr.png``) and said on
    stdout; nothing without validation pictures."""
    from .detect.evaluate import draw_pr_curves, evaluate_detector
    from .detect.training import split_items

    val = split_items(items, cfg.val_fraction, cfg.test_fraction, cfg.seed)["val"]
    if not val:
        return
    row = evaluate_detector(str(out), val, progress=False)
    draw_pr_curves([row], path)
    s = row.scores
    print(f"precision-recall curve on the {len(val)} validation pictures in {path}: AP {s.ap:.3f}; at the "
          f"threshold precision {s.precision:.3f}, recall {s.recall:.3f}, F1 {s.f1:.3f}")


def _is_detector_file(path: Path) -> bool:
    from .detect.learned import read_metadata
    from .errors import ModelFileError

    try:
        read_metadata(path)
        return True
    except ModelFileError:
        return False


def _draw_history(history: list, path: Path) -> None:
    """The validation AP and best F1 after each epoch (the training's learning curve) as a PNG; none
    without validation pictures (nothing to draw)."""
    if not any("ap" in h for h in history):
        return
    from matplotlib.figure import Figure

    from ._plot import plot_fonts, save_png

    with plot_fonts():
        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        ep = [h["epoch"] for h in history]
        for key, label in (("ap", "AP at IoU 0.5"), ("best_f1", "best F1 at IoU 0.5")):
            ax.plot(ep, [h.get(key, float("nan")) for h in history], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.set_title("detector training: validation pictures")
        ax.grid(alpha=0.3)
        ax.legend()
        save_png(fig, path)


# ------------------------------------------------------------------------------------------- detector quantize

def cmd_quantize(a) -> int:
    from .detect.annotations import load_many
    from .detect.learned import FLOAT_DETECTOR_FILE
    from .detect.quantize import check_source, quantize_detector
    from .detect.training import MIN_CALIBRATION_FACES, can_calibrate, split_items
    from .errors import ConfigError
    from .outputs import prepare_output_file

    if a.pictures < 1:
        raise ConfigError("pictures", f"must be at least 1, got {a.pictures}")
    if a.val_fraction + a.test_fraction >= 1:
        raise ConfigError(None, "--val-fraction and --test-fraction must leave pictures to calibrate on "
                                f"(their sum is {a.val_fraction + a.test_fraction:g})")
    src = FLOAT_DETECTOR_FILE if a.detector == "default" else Path(a.detector)
    det = check_source(src, a.out)       # before anything is read or written
    out = prepare_output_file(Path(a.out), own=_is_detector_file, what="a detector file", overwrite=a.overwrite)
    parts = split_items(load_many(a.boxes, a.format), a.val_fraction, a.test_fraction, a.seed)
    if not parts["train"]:
        print("animeid: the training part of the seeded split is empty: nothing to calibrate on", file=sys.stderr)
        return 1
    n_val, n_faces = len(parts["val"]), sum(len(x.boxes) for x in parts["val"])
    kept = ("the scores stay uncalibrated, as " if det.meta.get("calibrated") is False
            else "the scores keep the calibration of ") + src.name
    refit = can_calibrate(parts["val"])
    if refit:
        then = f"scores fitted again on {n_val} validation pictures ({n_faces} faces)"
    else:
        then = (f"{kept}: {n_faces} boxed faces in the validation part, "
                f"{MIN_CALIBRATION_FACES} needed to fit them again (--val-fraction sets its share)")
    print(f"calibrating on {min(a.pictures, len(parts['train']))} of {len(parts['train'])} training pictures; "
          f"{then}", file=sys.stderr)
    meta = quantize_detector(src, out, parts["train"], held_out=parts["val"] or None, pictures=a.pictures,
                             seed=a.seed)
    if refit and not meta.get("recalibrated"):
        print(f"animeid: {kept}: nothing could be fitted on the validation part (the detections there were all "
              "faces or all false alarms)", file=sys.stderr)
    size = out.stat().st_size / 1e6
    print(f"int8 detector written to {out} ({size:.1f} MB); threshold {meta['threshold']:.2f}")
    return 0


# ------------------------------------------------------------------------------------------- detector evaluate

def cmd_evaluate(a) -> int:
    from .detect.evaluate import draw_pr_curves, evaluate_detector, format_table

    from .detect.annotations import load_many

    items = load_many(a.boxes, a.format)
    if a.split != "all":
        from .detect.training import split_items

        items = split_items(items, a.val_fraction, a.test_fraction, a.seed)[a.split]
        if not items:
            print(f"animeid: the {a.split} part of the seeded split is empty", file=sys.stderr)
            return 1
    rows = [evaluate_detector(d, items, iou=a.iou, threshold=a.threshold, progress=not a.quiet) for d in a.detector]
    if a.pr_curve:
        draw_pr_curves(rows, a.pr_curve)
    if a.json:
        print_json({"pictures": len(items), "detectors": [r.to_dict() for r in rows]})
    else:
        print(format_table(rows, len(items)))
        if a.pr_curve:
            print(f"precision-recall curves in {a.pr_curve}")
    return 0


def add_commands(sub) -> None:
    from .detect.annotations import FORMATS
    from .options import number, share

    det = sub.add_parser("detector", help="train, evaluate and quantize face detectors")
    dsub = det.add_subparsers(dest="detector_command", required=True, metavar="{train,evaluate,quantize}")

    p = dsub.add_parser("train", help="train a face detector from boxed pictures (resumable: rerun after a kill)")
    p.add_argument("boxes", nargs="+", metavar="BOXES_DIR",
                   help="folders (or files) of boxed pictures: boxes.json, COCO .json, YOLO .txt or VOC .xml")
    p.add_argument("--out", "-o", required=True, help="the detector file to write (.onnx)")
    p.add_argument("--from", dest="init", metavar="DETECTOR",
                   help="fine-tune: start from 'default' (the shipped detector's float32 file), a float32 detector "
                        "file (.onnx) or a checkpoint (OUT.work/checkpoint.pt) instead of ImageNet weights")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="annotation format (default: recognised from the files)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training pictures (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="pictures per step (default 8)")
    p.add_argument("--frozen-blocks", type=int, default=None,
                   help="EfficientNet-Lite0 blocks (and the stem) kept at their ImageNet weights, or at the --from "
                        "detector's (default 5; 2 with --from)")
    p.add_argument("--size", type=int, default=384, help="side of the square training crops, px (default 384)")
    p.add_argument("--input-size", type=int, default=None,
                   help="longer side pictures are resized to for detection, px (default: the --from "
                        "detector's or checkpoint's, 640 for the shipped one; otherwise 512)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.002; 0.0005 with --from)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="pictures held out to calibrate (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.15,
                   help="pictures held out for 'detector evaluate --split test' (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (default: the epochs decide)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing detector file at --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_train)

    p = dsub.add_parser("evaluate", help="precision, recall, F1 and AP of detectors on boxed pictures")
    p.add_argument("detector", nargs="+", metavar="DETECTOR",
                   help="'default', 'animeface' or a detector file; several are compared in one table")
    p.add_argument("--boxes", required=True, nargs="+", metavar="BOXES_DIR", help="boxed pictures (any format)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="annotation format of --boxes (default: recognised from the files)")
    p.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                   help="score only this part of the seeded split 'detector train' makes (default all)")
    p.add_argument("--val-fraction", type=share(hi_open=True).arg("--val-fraction"), default=0.05,
                   help="as given to 'detector train' (default 0.05)")
    p.add_argument("--test-fraction", type=share(hi_open=True).arg("--test-fraction"), default=0.15,
                   help="as given to 'detector train' (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="as given to 'detector train' (default 0)")
    p.add_argument("--iou", type=number(0.0, 1.0, lo_open=True).arg("--iou"), default=0.5,
                   help="IoU a detection needs to count as a hit, above 0 up to 1 (default 0.5)")
    p.add_argument("--threshold", type=_score, default=None,
                   help="score threshold for precision/recall/F1 (default: each detector's own)")
    p.add_argument("--pr-curve", metavar="PNG", help="draw the precision-recall curves here")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = dsub.add_parser("quantize", help="an int8 copy of a detector: about twice as fast on a CPU (needs the "
                                         "full install)")
    p.add_argument("detector", metavar="DETECTOR",
                   help="a float32 detector file from 'detector train', or 'default' (the shipped one's float32 file)")
    p.add_argument("--boxes", required=True, nargs="+", metavar="BOXES_DIR",
                   help="the boxed pictures it was trained on: the training part measures the activations, "
                        "the validation part fits the scores again")
    p.add_argument("--out", "-o", required=True, help="the int8 detector file to write (.onnx)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="annotation format of --boxes (default: recognised from the files)")
    p.add_argument("--pictures", type=int, default=160,
                   help="training pictures to measure on, each at every detection size (default 160: 26 s and "
                        "1.5 GB of memory for a 512 px detector; memory grows with it)")
    p.add_argument("--val-fraction", type=share(hi_open=True).arg("--val-fraction"), default=0.05,
                   help="as given to 'detector train' (default 0.05)")
    p.add_argument("--test-fraction", type=share(hi_open=True).arg("--test-fraction"), default=0.15,
                   help="as given to 'detector train' (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="as given to 'detector train' (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing detector file at --out")
    p.set_defaults(func=cmd_quantize)
