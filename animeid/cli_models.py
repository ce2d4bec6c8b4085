"""Recogniser commands of the ``animeid`` CLI: train, evaluate, compare, predict (flags -> API calls)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ._util import frame_note, plural, print_json

__all__ = ["add_commands"]

#: the training methods' options that have a flag (``--learning-rate`` for ``learning_rate``...)
_METHOD_FLAGS = ("backbone", "steps", "learning_rate", "batch_size", "label_smoothing", "augment", "n_iter",
                 "epochs", "input_size", "time_budget", "trainable_blocks", "augmentation", "tune")


def _method_options(a) -> dict:
    opts = {}
    for key in _METHOD_FLAGS:
        if key == "tune":
            continue
        v = getattr(a, key, None)
        if v is not None:
            opts[key] = v
    if a.tune:
        opts["tune"] = True
    return opts


def _check_method_flags(method: str, opts: dict) -> None:
    """A flag the chosen ``--method`` has no use for: refused naming the flags it has (the API's own
    message lists Python option names, many of which have no flag)."""
    from .errors import ConfigError
    from .train import METHODS

    m = METHODS.get(method)
    if m is None:
        return                                      # an unknown method: train() says so, listing them
    flag = lambda k: "--" + k.replace("_", "-")     # noqa: E731
    for k in opts:
        if k not in m.defaults:
            mine = [flag(x) for x in _METHOD_FLAGS if x in m.defaults]
            raise ConfigError(None, f"{flag(k)}: method {method!r} takes no such option (its options here: "
                                    f"{', '.join(mine) or 'none'})")


def cmd_train(a) -> int:
    from .train import train

    _check_method_flags(a.method, _method_options(a))
    r = train(a.dataset, a.out, method=a.method, progress=not a.quiet, seed=a.seed,
              overwrite=a.overwrite, **_method_options(a))
    chosen = f" ({r.info['chosen']})" if r.info.get("chosen") else ""
    print(f"trained {r.method}{chosen} on {plural(r.n_train, 'face')} of {plural(len(r.labels), 'character')} "
          f"in {r.seconds:.1f} s "
          f"({r.n_val} validation, {r.n_test} test)")
    if r.test:
        print(f"held-out test: top-1 {r.test['top1']:.1%}, top-5 {r.test['top5']:.1%} on {plural(r.test['n'], 'face')}")
    if r.info.get("oob_score") is not None:
        print(f"out-of-bag score {r.info['oob_score']:.1%}")
    if r.info.get("search"):
        print(f"tuned parameters: {r.info['search']['best_params']} "
              f"(cross-validated {r.info['search']['best_cv_accuracy']:.1%})")
    print(f"model: {r.model_path}")
    for p in (r.curves_png, r.confusion_png):
        if p:
            print(f"plot: {p}")
    if r.skipped:    # each was named above as it was found; the status says the model lacks them
        print(f"animeid: warning: {plural(len(r.skipped), 'file')} of the dataset left out (named above): "
              "the model was trained without them", file=sys.stderr)
    if a.json:
        print_json(r.to_dict())
    return 1 if r.skipped else 0


def _overlap_warning(seen: dict | None, dataset: str) -> str | None:
    """The warning when the evaluated faces are faces the model learnt from (or may be)."""
    if not seen:
        return None
    if seen.get("checked"):
        n_tr, n_va, n = seen.get("train") or 0, seen.get("val") or 0, seen["n"]
        if not (n_tr or n_va):
            return None
        parts = [f"{n_tr} of {n} were its training faces" if n_tr else "",
                 f"{n_va} of {n} its validation faces (which chose its settings)" if n_va else ""]
        return ("animeid: warning: the model has seen these faces: " + "; ".join(p for p in parts if p)
                + ". Accuracy on them says little about new faces: evaluate on faces it was not trained on "
                  "(the dataset's test part: --split test).")
    if seen.get("same_dataset_name"):
        return (f"animeid: warning: the model was trained on a dataset also named {Path(dataset).resolve().name!r} "
                "and, made by an older animeid, does not record which faces; if these are its training faces, "
                "the accuracy says little about new faces (--split test evaluates the held-out part)")
    return None


def cmd_evaluate(a) -> int:
    from .evaluate import evaluate_model, plot_confusion, plot_reliability
    from .outputs import is_animeid_png, prepare_output_file

    out = Path(a.confusion) if a.confusion else Path(a.model).with_name(
        f"{Path(a.model).name}.{Path(a.dataset).resolve().name}.confusion.png")
    confusion = prepare_output_file(out, own=is_animeid_png, suffix=".png", what="a plot", overwrite=True, option="--confusion")
    reliability = None
    if a.reliability:
        from .errors import OutputError

        reliability = prepare_output_file(a.reliability, own=is_animeid_png, suffix=".png", what="a plot", overwrite=True,
                                          option="--reliability")
        if os.path.realpath(reliability) == os.path.realpath(confusion):
            raise OutputError("--reliability names the confusion matrix's file; give it another name", reliability)
    progress = not a.quiet

    if a.unknown:            # open set: known faces of DATASET against faces of characters the model lacks
        from .evaluate import evaluate_open_set

        rep, ds = evaluate_open_set(a.model, a.dataset, a.unknown, split=a.split)
    else:
        rep, ds = evaluate_model(a.model, a.dataset, split=a.split, progress=progress)
    plot_confusion(rep, out, title=f"{Path(a.dataset).name}: top-1 {rep.top1:.1%} (n={rep.n})")
    if reliability is not None:
        plot_reliability(rep, reliability, title=f"{Path(a.dataset).name}: top-1 {rep.top1:.1%}")
    d = rep.to_dict()
    # everything else first: with --json the JSON object is the last line printed
    for p, why in ds.skipped:
        print(f"animeid: {p}: skipped, {why}", file=sys.stderr)
    warning = _overlap_warning(rep.extra.get("seen_in_training"), a.dataset)
    if warning:
        print(warning, file=sys.stderr)
    text = sys.stderr if a.json else sys.stdout
    print(rep.to_markdown(), file=text)
    if a.unknown:
        x = rep.extra
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        auroc = "-" if x["auroc"] is None else f"{x['auroc']:.3f}"
        rate = x.get("unknown_refusal_rate")
        print(f"unknown faces ({x['n_unknown']} in {a.unknown}): AUROC {auroc}; at the model's threshold "
              f"{x['unknown_threshold']}"
              + ("" if rate is None else f" (it refuses {rate:.1%} of the model's known calibration faces)")
              + f": {pct(x['unknown_rejected'])} of unknown faces rejected, "
              f"{pct(x['known_correct'])} of known faces accepted and named correctly", file=text)
    print(f"confusion matrix: {out}", file=text)
    if reliability is not None:
        print(f"reliability diagram: {reliability}", file=text)
    if a.json:
        d["confusion_png"] = str(out)
        d["reliability_png"] = str(reliability) if reliability is not None else None
        d["skipped"] = [[str(p), why] for p, why in ds.skipped]
        sys.stderr.flush()
        print_json(d)
    return 1 if ds.skipped else 0


def cmd_compare(a) -> int:
    from .outputs import prepare_output_dir

    od = prepare_output_dir(a.out, "compare", overwrite=a.overwrite, protect=[a.dataset])
    od.clear()          # an earlier compare output (with --overwrite): only its own files
    try:
        return _compare(a, Path(a.out))
    finally:
        od.finish()


def _compare(a, out: Path) -> int:
    from .train import compare, compare_markdown

    def show(row):
        t1 = f"{row['top1']:.1%}" if row["top1"] is not None else "-"
        print(f"  {row['method']}: top-1 {t1}, {row['train_seconds']:.0f} s", file=sys.stderr, flush=True)

    rows = compare(a.dataset, out, augment=a.augment, include_best=not a.no_best, seed=a.seed,
                   on_row=None if a.quiet else show, progress=not a.quiet)
    md = compare_markdown(rows)
    (out / "compare.md").write_text(md + "\n", encoding="utf-8")
    (out / "compare.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(md)
    print(f"\nmodels and table in {out}/")
    return 0


def cmd_predict(a) -> int:
    if a.scheduler and not a.out:
        if getattr(a, "scheduler_from_env", False):   # set for collect's sake: answering a few pictures here is what was asked
            a.scheduler = None
        else:
            print("animeid predict: error: argument --scheduler: needs --out FILE (.jsonl or .csv) for the results",
                  file=sys.stderr)
            return 2
    if a.out and a.preview:
        print("animeid predict: error: argument --preview: not with --out", file=sys.stderr)
        return 2
    if a.out:
        return _predict_to_file(a)
    claim = None
    if a.preview:            # claimed before any work (outputs.prepare_output_dir)
        from .outputs import prepare_output_dir

        claim = prepare_output_dir(a.preview, "predict --preview", replace=False, protect=a.images,
                                   option="--preview")
    try:
        return _predict(a)
    finally:
        if claim is not None:
            claim.finish()


def _predict(a) -> int:
    import animeid

    animeid._sklearn_standins = True               # predicting needs none of scikit-learn (animeid._sklearn)
    from .detect import draw_faces
    from .errors import InputError
    from .images import iter_image_files, load_image
    from .predict import PredictConfig, Recognizer

    rec = Recognizer.load(a.model)
    cfg = PredictConfig(top=a.top, threshold=a.threshold, detector=a.detector, detect=a.detect, flip=a.flip,
                        **(a.unknown_threshold or {}))
    rec._threshold(cfg, rec.openset)              # a refusal rate the model cannot use: said once, up front
    failed = 0
    files = list(iter_image_files(a.images))      # a missing input: InputError, said by main as any error
    if not files:
        raise InputError("no pictures found in the inputs given")
    used: set[str] = set()                           # preview names given so far
    for f, res in rec.predict_stream(files, cfg):
        if isinstance(res, InputError):
            failed += 1
            print(f"animeid: {res}", file=sys.stderr)
            if a.json:                                   # one JSON line per picture given, a refused one too
                print_json({"path": str(f), "error": res.message})
            continue
        if a.json:
            print_json({k: res[k] for k in ("path", "faces", "whole_picture", "frame", "frames", "searched") if k in res})
        elif not res["faces"]:
            whole = res.get("whole_picture")
            print(f"{res['path']}: no face found" + frame_note(res) + ("; read whole as a face crop: "
                                                                         + verdict_text(whole) if whole else ""))
        else:
            print(f"{res['path']}: {plural(len(res['faces']), 'face')}" + frame_note(res))
            for face in res["faces"]:
                print(f"  {face['box']}: {verdict_text(face)}")
        if a.preview:
            from .detect import Face
            from ._util import save_image_atomic
            from .names import safe_filename

            img = load_image(f, frame=res.get("frame", 0))      # the frame the faces were found in
            faces = [Face(tuple(x["box"]), x["candidates"][0]["p"]) for x in res["faces"]]
            names = ["unknown" if x.get("unknown") else f"{x['candidates'][0]['name']} {x['candidates'][0]['p']:.0%}"
                     for x in res["faces"]]
            stem, n = Path(f).stem, 1
            while stem in used:                      # two pictures named alike: x.png, x~2.png
                n += 1
                stem = f"{Path(f).stem}~{n}"
            used.add(stem)
            save_image_atomic(draw_faces(img, faces, names), Path(a.preview) / safe_filename(stem, ".png"))
    return 1 if failed else 0


def _predict_to_file(a) -> int:
    """predict --out FILE [--scheduler ADDR]: results in input order, resumable (animeid.batch)."""
    from .batch import predict_files
    from .predict import PredictConfig, Recognizer

    cfg = PredictConfig(top=a.top, threshold=a.threshold, detector=a.detector, detect=a.detect, flip=a.flip,
                        **(a.unknown_threshold or {}))
    rec = Recognizer.load(a.model)              # a bad model or setting is said up front, nothing written
    rec._threshold(cfg, rec.openset)

    def said(path, res):
        if isinstance(res, str):
            print(f"animeid: {path}: {res}", file=sys.stderr)

    s = predict_files(rec if not a.scheduler else a.model, a.images, a.out, cfg=cfg, client=a.scheduler or None,
                      on_result=said)
    print(f"{plural(s['pictures'], 'picture')}: {s['done'] - s['failed']} named now, {s['skipped']} already in "
          f"{a.out}" + (f", {s['failed']} failed" if s["failed"] else "")
          + (f", {s['failed_before']} failed in an earlier run (not retried: remove their lines to retry)"
             if s["failed_before"] else "") + f"; results in {a.out}")
    return 1 if s["failed"] or s["failed_before"] else 0


def verdict_text(face: dict) -> str:
    """One face's answer in words: ``yuki 96.2%, aoba 2.1%`` for a named face, ``unknown (closest:
    yuki 62.0%, aoba 20.0%)`` for a face of no known character."""
    cands = ", ".join(f"{c['name']} {c['p']:.1%}" for c in face["candidates"])
    if face.get("unknown"):
        return f"unknown (closest: {cands})" if cands else "unknown"
    return cands


def _threshold_arg(v: str) -> dict:
    from .predict import parse_unknown_threshold

    try:
        return parse_unknown_threshold(v)
    except ValueError as e:
        import argparse

        raise argparse.ArgumentTypeError(str(e)) from None


def add_commands(sub) -> None:
    from .predict import MAX_TOP, _predict_rules
    from .finetune import AUGMENTS
    from .train import METHODS, _option_rules

    rules = _option_rules()

    def rule(option: str, flag: str):         # the flag is checked by the option's rule while it is read
        return rules[option].arg(flag)

    p = sub.add_parser("train", help="train a recogniser on a folder-per-character dataset")
    p.add_argument("dataset", help="folder with one subfolder of face pictures per character (split.csv honoured)")
    p.add_argument("--out", "-o", required=True, help="model file to write (.animeid); checked before training")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier model at --out")
    p.add_argument("--method", default="auto", choices=list(METHODS),
                   help="default auto; " +
                   "; ".join(f"{k}: {m.description}" for k, m in METHODS.items()))
    p.add_argument("--tune", action="store_true", help="forest: search its parameters (successive-halving random search)")
    p.add_argument("--n-iter", type=rule("n_iter", "--n-iter"), help="forest --tune: parameter settings tried (default 12)")
    p.add_argument("--backbone", help="feature extractor (inception_v3, efficientnet_lite0, ...; name@size allowed)")
    p.add_argument("--steps", type=rule("steps", "--steps"), help="softmax: SGD steps (default 10000, as retrain.py)")
    p.add_argument("--learning-rate", type=rule("learning_rate", "--learning-rate"),
                   help="softmax: learning rate (default 0.01)")
    p.add_argument("--batch-size", type=rule("batch_size", "--batch-size"), help="softmax: batch size (default 10)")
    p.add_argument("--label-smoothing", type=rule("label_smoothing", "--label-smoothing"),
                   help="softmax: label smoothing (the study: 0.1)")
    p.add_argument("--augment", type=rule("augment", "--augment"),
                   help="colour-keeping variants per training face (the study: 64)")
    p.add_argument("--epochs", type=rule("epochs", "--epochs"),
                   help="finetune: passes over the training faces (default: 6; from 100 training faces, enough for "
                        "600 steps, at most 18)")
    p.add_argument("--input-size", type=rule("input_size", "--input-size"), help="finetune: input size in pixels")
    p.add_argument("--trainable-blocks", type=rule("trainable_blocks", "--trainable-blocks"),
                   help="finetune: how many top blocks train (default 6; -1: all)")
    p.add_argument("--augmentation", choices=list(AUGMENTS),
                   help="finetune: augmentation strength (default light)")
    p.add_argument("--time-budget", type=rule("time_budget", "--time-budget"),
                   help="finetune: seconds training may take (default 1140); stops early keeping the best epoch")
    p.add_argument("--seed", type=int, default=0, help="seed of the split when the dataset has no split.csv")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress: by default a bar with ETA per stage on a terminal, one line per stage on "
                        "stderr otherwise (feature extraction, fine-tuning epochs, forest tuning, testing)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5, per-character accuracy, calibration error and a "
                                         "confusion matrix")
    p.add_argument("model", help="model file (.animeid) from 'animeid train'")
    p.add_argument("dataset", help="folder with one subfolder of face pictures per character")
    p.add_argument("--split", choices=["train", "val", "test"], help="only this split of the dataset's split.csv")
    p.add_argument("--confusion", help="where to write the confusion matrix PNG")
    p.add_argument("--reliability", metavar="FILE.png",
                   help="also write a reliability diagram PNG: per bin of the top-1 probability, the share of "
                        "faces answered right against the diagonal of honest probabilities, with the expected "
                        "calibration error (ece in the JSON; a PNG animeid did not draw is never replaced)")
    p.add_argument("--unknown", metavar="DIR",
                   help="faces of characters the model does not know (a folder, subfolders allowed): adds the "
                        "known-vs-unknown AUROC and, at the model's threshold, the share of unknown faces "
                        "rejected and of known faces accepted and named correctly (auroc, unknown_rejected, "
                        "known_correct in the JSON)")
    p.add_argument("--json", action="store_true",
                   help="the last line printed is one JSON object (the table goes to stderr)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (on a terminal) or summary line (otherwise)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="the study's Table 7 (forest, tuned forest, softmax, +augmentation) "
                                       "next to animeid's default, on any dataset")
    p.add_argument("dataset", help="folder with one subfolder of face pictures per character (split.csv honoured)")
    p.add_argument("--out", default="compare-output",
                   help="folder for the models and the table: new or empty (or an earlier compare with --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier compare output in --out (only the files it wrote)")
    p.add_argument("--augment", type=rule("augment", "--augment"), default=64,
                   help="variants per face in the augmented row (default 64)")
    p.add_argument("--no-best", action="store_true", help="leave out animeid's default method")
    p.add_argument("--seed", type=int, default=0, help="seed of the split when the dataset has no split.csv (default 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress: neither bars and stage lines nor a line per finished row")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="name the characters in pictures (faces found first)")
    p.add_argument("model", help="model file (.animeid) from 'animeid train'")
    p.add_argument("images", nargs="+", help="pictures or folders")
    p.add_argument("--top", type=_predict_rules()["top"].arg("--top"), default=3,
                   help=f"candidates per face, 1..{MAX_TOP} (default 3)")
    from .cli_detect import add_detector_opts

    add_detector_opts(p)
    p.add_argument("--detect", choices=["auto", "always", "never"], default="auto",
                   help="auto: find faces, a picture that is a face crop is taken whole; never: every picture is a face")
    p.add_argument("--flip", choices=["auto", "always", "never"], default="auto",
                   help="read faces with their mirror image too (models trained so): auto: only faces whose answer "
                        "is close (the same answers, faster); always: every face, as evaluate does; never: none")
    p.add_argument("--preview", help="folder for pictures with boxes and names drawn (new, empty or an earlier "
                                     "predict --preview folder)")
    p.add_argument("--unknown-threshold", type=_threshold_arg, metavar="RATE",
                   help="when a face is answered 'unknown', as the share of known faces refused on the model's "
                        "calibration data: 0.05 or 5%% (more: more faces unknown); 'off': never; 'score:T': a raw "
                        "open-set score threshold (default: the model's calibrated threshold)")
    p.add_argument("--json", action="store_true", help="one JSON object per picture per line")
    p.add_argument("--out", metavar="FILE",
                   help="write the results to FILE (.jsonl: one JSON object per picture; .csv: one row per face) in "
                        "input order, resumably: run again and pictures already in FILE are skipped")
    from .cli import add_scheduler_opt

    add_scheduler_opt(p, "name the pictures on its workers (the model is sent once to each; the pictures must "
                         "be readable by every worker at the same path); needs --out (without it, $ANIMEID_SCHEDULER "
                         "is not used: the pictures are named here)")
    p.set_defaults(func=cmd_predict)
