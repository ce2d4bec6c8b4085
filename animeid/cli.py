"""The ``animeid`` command: a thin layer that turns flags into calls of the Python API.

Exit status: 0 when everything worked, 1 when a file failed or an error occurred (each named on
stderr), 2 for a usage error. No command prints a traceback for a user's mistake.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from ._util import frame_note, missing_extra_hint, plural, print_json, require_extras
from .errors import AnimeidError, ConfigError

__all__ = ["main", "build_parser"]

log = logging.getLogger("animeid")



def _fail_lines(failed) -> None:
    for path, why in failed:
        print(f"animeid: {path}: {why}", file=sys.stderr)


# --------------------------------------------------------------------------- dataset commands

def cmd_frames(a) -> int:
    from .video import write_frames

    summary = write_frames(a.videos, a.every, a.out, skip_similar=a.skip_similar)
    failed = 0
    for v in summary["videos"]:
        line = f"{v['path']}: {v['written']} frames written"
        if v.get("skipped_similar"):
            line += f", {v['skipped_similar']} near-identical skipped"
        print(line)
        if v.get("error"):
            failed += 1
            print(f"animeid: {v['path']}: {v['error']}", file=sys.stderr)
    print(f"frames in {a.out}" if Path(a.out).is_dir() else "no frame written: no folder made")
    return 1 if failed else 0


def _claim_detect_folders(a) -> list:
    """detect --out/--preview claimed before any picture is read (outputs.prepare_output_dir)."""
    from .outputs import prepare_output_dir

    from .errors import OutputError

    if a.out is not None and a.preview is not None and \
            os.path.realpath(os.fspath(a.out)) == os.path.realpath(os.fspath(a.preview)):
        # crops (NAME_0.png) and previews (NAME.png) of pictures named x.png and x_0.png would collide
        raise OutputError("--out and --preview name the same folder: give them two folders", os.fspath(a.out))
    claims: dict = {}
    for opt, path in (("--out", a.out), ("--preview", a.preview)):
        if path is None:
            continue
        od = prepare_output_dir(path, "detect", replace=False, protect=a.inputs, option=opt)
        claims[od.path] = od
    return list(claims.values())


def cmd_detect(a) -> int:
    claims = _claim_detect_folders(a)
    try:
        return _detect(a)
    finally:
        for od in claims:
            od.finish()


def _detect(a) -> int:
    from .detect import detect_files

    failed = 0
    n_pics = n_faces = 0
    for rec in detect_files(a.inputs, out=a.out, preview=a.preview, threshold=a.threshold, margin=a.margin,
                            size=a.crop_size, detector=a.detector):
        if rec.get("error"):
            failed += 1
            print(f"animeid: {rec['path']}: {rec['error']}", file=sys.stderr)
            continue
        n_pics += 1
        n_faces += len(rec["faces"])
        if a.json:
            print_json({k: rec[k] for k in ("path", "width", "height", "faces", "frame", "frames", "searched") if k in rec})
        else:
            print(f"{rec['path']}: {plural(len(rec['faces']), 'face')}" + frame_note(rec))
    if not a.json:
        print(f"{plural(n_faces, 'face')} in {plural(n_pics, 'picture')}" + (f"; crops in {a.out}" if a.out else "")
              + (f"; previews in {a.preview}" if a.preview else ""))
    return 1 if failed else 0


def _collect_cfg(a):
    from .dataset import CollectConfig

    video = {} if not hasattr(a, "every") else {       # import reads no videos: no frame options
        "every": a.every, "skip_similar_frames": None if a.keep_similar else a.skip_similar}
    return CollectConfig(threshold=a.threshold, detector=a.detector, margin=a.margin, crop_size=a.crop_size,
                         dedupe_distance=a.dedupe, workers=a.workers, **video)


def _print_summary(s, ws) -> int:
    print(f"{plural(s.sources, 'source')} ({s.skipped_sources} already done), "
          f"{plural(s.items, 'frame or picture', 'frames or pictures')} processed, {plural(s.faces, 'new face')}, "
          f"{plural(s.duplicates, 'near-duplicate')} dropped, {s.seconds:.1f} s; "
          + (f"workspace {ws}" if (Path(ws) / "manifest.sqlite").exists() else "nothing read: no workspace made"))
    if s.skipped_files:
        print(f"{plural(s.skipped_files, 'file')} in the folders skipped: neither pictures nor videos by their ending")
    _fail_lines(s.failed)
    return 0 if s.ok else 1


class _FailuresInSummary(logging.Filter):
    """animeid.dataset logs each file that fails as a warning (for API users); collect and import print
    every failure from their summary, so while they run those warnings are dropped: each is said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.module == "dataset")


def _workspace_run(a, run) -> int:
    """collect / import: nothing is created when no input exists or holds a video or picture (the
    library's rule: ``summary.nothing_to_read``)."""
    quiet = _FailuresInSummary()
    log.addFilter(quiet)
    try:
        s = run()
    finally:
        log.removeFilter(quiet)
    if s.nothing_to_read:
        _fail_lines(s.failed)
        ws = "workspace left as it was" if Path(a.workspace).exists() else "no workspace created"
        print(f"animeid: error: nothing to read (no video or picture among the inputs); {ws}", file=sys.stderr)
        return 1
    return _print_summary(s, a.workspace)


def cmd_collect(a) -> int:
    from .dataset import collect

    cfg = _collect_cfg(a)
    return _workspace_run(a, lambda: collect(a.inputs, a.workspace, cfg, client=a.scheduler or None))


def cmd_import(a) -> int:
    from .dataset import _check_character, import_illustrations

    cfg = _collect_cfg(a)
    _check_character(a.character)           # a bad name is refused before any picture is read
    return _workspace_run(a, lambda: import_illustrations(a.inputs, a.workspace, a.character, cfg,
                                                          whole_if_none=not a.detect_only,
                                                          client=a.scheduler or None))


def cmd_dataset_sync(a) -> int:
    from .dataset import sync

    s = sync(a.workspace)
    print(f"{s.labeled} labeled, {s.unlabeled} unlabeled, {s.moved} moved, {s.deleted} deleted, {s.added} added by hand")
    for name, n in sorted(s.characters.items()):
        print(f"  {name}: {n}")
    return 0


def cmd_dataset_export(a) -> int:
    from .dataset import export

    r = export(a.workspace, a.out, size=a.crop_size, seed=a.seed, val=a.val, test=a.test, overwrite=a.overwrite)
    print(f"{plural(r['faces'], 'face')} of {plural(len(r['characters']), 'character')}, {r['size']}x{r['size']}, "
          f"written to {r['out']} "
          "(split in split.csv)")
    for name, c in r["characters"].items():
        print(f"  {name}: train {c['train']}, val {c['val']}, test {c['test']}")
    return 1 if r["missing"] else 0


def cmd_dataset_stats(a) -> int:
    from .dataset import stats

    r = stats(a.path, sheet=a.sheet)
    if a.json:
        print_json(r)
        return 0
    present = {k for c in r["characters"].values() for k in c}
    cols = [k for k in ("all", "train", "val", "test") if k in present]
    width = max(len(n) for n in r["characters"]) + 2
    print("character".ljust(width) + "".join(c.rjust(8) for c in cols))
    for name, c in r["characters"].items():
        print(name.ljust(width) + "".join(str(c.get(k, 0)).rjust(8) for k in cols))
    print(f"total {plural(r['total'], 'face')}; contact sheet: {r['contact_sheet']}")
    return 0


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def cmd_dataset_label(a) -> int:
    """``dataset label WS --name NAME ID...`` (``--unlabel ID...``); the older ``dataset label WS NAME ID...``
    still works when NAME is not a number, with a note."""
    from .dataset import label_faces

    words, name = list(a.ids), a.name
    if name is None and not a.unlabel and words and _whole(words[0]) is None:
        name = words.pop(0)
        print(f"animeid: note: 'dataset label WS NAME ID...' is now 'dataset label WS --name NAME ID...'; "
              f"read as --name {name!r}", file=sys.stderr)
    if name is not None and a.unlabel:
        print("animeid dataset label: error: give --name NAME or --unlabel, not both", file=sys.stderr)
        return 2
    if name is None and not a.unlabel:
        hint = (f"; to name {'face' if len(words) == 2 else 'faces'} {' '.join(words[1:])} the character {words[0]!r}: --name {words[0]} "
                f"{' '.join(words[1:])}" if len(words) > 1 else "")
        print("animeid dataset label: error: no name given (every word after WS is read as a face id): "
              f"dataset label WS --name NAME ID...{hint}", file=sys.stderr)
        return 2
    ids = [_whole(w) for w in words]
    bad = [w for w, i in zip(words, ids) if i is None]
    if bad or not ids:
        print(f"animeid dataset label: error: face ids are whole numbers (see the manifest), got "
              f"{', '.join(repr(w) for w in bad) or 'none'}", file=sys.stderr)
        return 2
    n = label_faces(a.workspace, ids, name)
    print(f"{plural(n, 'face')} labeled {name!r}" if not a.unlabel else f"{plural(n, 'face')} unlabeled")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(a.out, quick=a.quick)


# --------------------------------------------------------------------------- parser

def renamed(new: str, *old: str, note: str = "") -> type:
    """An argparse action for an option ``new`` that also answers to its older spellings ``old``: they
    keep working, with a one-line note on stderr (``animeid: note: --size is now --crop-size``)."""

    class _Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in old:
                print(f"animeid: note: {option_string} is now {new}{note}; the old spelling still works for now",
                      file=sys.stderr)
            setattr(namespace, self.dest, self.const if self.nargs == 0 else values)

    return _Renamed


def _add_detect_opts(p, size_default: int) -> None:
    from .cli_detect import add_detector_opts
    from .options import MARGIN

    add_detector_opts(p)
    p.add_argument("--margin", type=MARGIN.arg("--margin"), default=0.2,
                   help="margin around the face, share of its size, 0..4 (default 0.2)")


def _add_collect_opts(p, video: bool = True) -> None:
    """The options of ``collect`` and ``import`` (``video=False``: without the frame options, ``import``
    reads no videos)."""
    p.add_argument("--workspace", "-w", required=True, help="workspace folder (created if needed)")
    from . import options as o

    if video:
        p.add_argument("--every", type=o.SECONDS.arg("--every"), default=5.0,
                       help="seconds between sampled frames (default 5)")
    from .cli_detect import add_detector_opts

    add_detector_opts(p)
    p.add_argument("--margin", type=o.MARGIN.arg("--margin"), default=0.2, help="crop margin, 0..4 (default 0.2)")
    p.add_argument("--crop-size", type=o.SIDE.arg("--crop-size"), default=128,
                   help="side of the square crops stored in the workspace, px (default 128: larger than detect's "
                        "96 so that 'dataset export --size' can make any size up to it)")
    p.add_argument("--dedupe", type=o.HASH_BITS.arg("--dedupe"), default=6,
                   help="perceptual-hash distance under which a crop is a near-duplicate (default 6 of 64 bits)")
    if video:
        p.add_argument("--skip-similar", type=o.HASH_BITS.arg("--skip-similar"), default=4,
                       help="skip a frame within this hash distance of the previous kept one (default 4)")
        p.add_argument("--keep-similar", action="store_true", help="keep near-identical consecutive frames")
    p.add_argument("--workers", type=o.whole(1, 1024).arg("--workers"), default=None,
                   help="detection processes (default: all cores; not used with --scheduler)")
    add_scheduler_opt(p, ("decoding, " if video else "") + "detection, cropping and hashing run on its workers; "
                         "this process stays the only writer of the workspace. Inputs must be readable by every "
                         "worker at the same path (a shared folder)")


def add_scheduler_opt(p, what: str) -> None:
    """``--scheduler ADDR`` (default ``$ANIMEID_SCHEDULER``): run on a Dask cluster (animeid[distributed])."""
    from .remote import SCHEDULER_ENV

    p.add_argument("--scheduler", metavar="ADDR", default=None,
                   help=f"a Dask scheduler's address, tcp://HOST:8786 (default ${SCHEDULER_ENV}; needs "
                        f"pip install 'animeid[distributed]'): {what}")


def _resolve_scheduler(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """``a.scheduler``: the flag's address, else ``$ANIMEID_SCHEDULER`` (unset or blank: None, run here);
    ``a.scheduler_from_env`` says which. An empty ``--scheduler ''`` is a usage error."""
    from .remote import SCHEDULER_ENV

    a.scheduler_from_env = False
    if a.scheduler is not None:
        if not a.scheduler.strip():
            _subparser(ap, a).error("argument --scheduler: an empty address; give tcp://HOST:8786, or leave the "
                                    "option out to run on this machine")
        return
    env = os.environ.get(SCHEDULER_ENV, "").strip()
    a.scheduler, a.scheduler_from_env = (env or None), bool(env)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="animeid", description="Recognise anime characters by their faces.")
    ap.add_argument("--version", action="version", version=f"animeid {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="more log output")
    ap.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                    help="largest picture decoded, width x height (default 64000000, or $ANIMEID_MAX_PIXELS); "
                         "raise it to read a huge illustration (the guard against decompression bombs stays)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on a generated sample (no downloads)")
    p.add_argument("--out", default="demo-output",
                   help="folder for the sample and results (default demo-output): new, empty or an earlier demo "
                        "output, which is replaced")
    p.add_argument("--quick", action="store_true", help="a smaller sample, for a fast check")
    p.set_defaults(func=cmd_demo)

    from . import options as o

    p = sub.add_parser("frames", help="sample frames from videos (the study's ffmpeg fps=1/5)")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--every", type=o.SECONDS.arg("--every"), default=5.0, help="seconds between frames (default 5)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty or an earlier frames output (frames are added)")
    p.add_argument("--skip-similar", type=o.HASH_BITS.arg("--skip-similar"), default=None,
                   help="skip frames within this perceptual-hash distance of the previous kept one (0..64)")
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser("detect", help="find anime faces and crop them")
    p.add_argument("inputs", nargs="+", help="pictures or folders of pictures")
    _add_detect_opts(p, 96)
    p.add_argument("--crop-size", "--size", dest="crop_size", type=o.SIDE.arg("--crop-size"), default=96,
                   action=renamed("--crop-size", "--size"),
                   help="side of the square crops, px (default 96, the study's; --size is the old spelling)")
    p.add_argument("--out", help="folder for face crops (new, empty or an earlier detect output)")
    p.add_argument("--preview", help="folder for pictures with boxes and scores drawn (same rule as --out)")
    p.add_argument("--json", action="store_true", help="one JSON object per picture per line")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("collect", help="frames, faces, crops and de-duplication into a workspace (resumable)")
    p.add_argument("inputs", nargs="+", help="videos, pictures or folders")
    _add_collect_opts(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("import", help="add illustrations of one character to a workspace")
    p.add_argument("inputs", nargs="+", help="pictures or folders of pictures")
    p.add_argument("--character", "-c", required=True, help="the character's name (any Unicode)")
    p.add_argument("--detect-only", action="store_true",
                   help="never take a whole picture as a face when no face is detected in it")
    _add_collect_opts(p, video=False)
    p.set_defaults(func=cmd_import)

    d = sub.add_parser("dataset", help="workspace tools: sync, export, stats, label").add_subparsers(
        dest="dataset_command", metavar="ACTION", required=True)
    p = d.add_parser("sync", help="record labels from the character folders you sorted crops into")
    p.add_argument("workspace", help="the workspace folder (from collect or import)")
    p.set_defaults(func=cmd_dataset_sync)
    p = d.add_parser("export", help="write the folder-per-character dataset with a leak-free split")
    p.add_argument("workspace", help="the workspace folder whose labeled faces are written")
    p.add_argument("--out", required=True, help="output folder: new or empty (or an earlier export with --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out (only the files it wrote; anything else there is refused)")
    p.add_argument("--crop-size", "--size", dest="crop_size", type=o.SIDE.arg("--crop-size"), default=96,
                   action=renamed("--crop-size", "--size"),
                   help="side of the exported faces in pixels (default 96; --size is the old name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--val", type=o.share(hi_open=True).arg("--val"), default=0.1,
                   help="validation share, 0 up to 1 (default 0.1)")
    p.add_argument("--test", type=o.share(hi_open=True).arg("--test"), default=0.1,
                   help="test share, 0 up to 1; val + test below 1 (default 0.1)")
    p.set_defaults(func=cmd_dataset_export)
    p = d.add_parser("stats", help="faces per character and a contact sheet")
    p.add_argument("path", help="a workspace or a folder-per-character dataset")
    p.add_argument("--sheet", help="where to write the contact sheet PNG")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_dataset_stats)
    p = d.add_parser("label", help="name faces by id (see the manifest): dataset label WS --name NAME ID...")
    p.add_argument("workspace", help="the workspace folder")
    p.add_argument("ids", nargs="+", metavar="ID", help="face ids (the manifest's faces.id)")
    p.add_argument("--name", "-n", help="the character's name (any Unicode, numbers too)")
    p.add_argument("--unlabel", action="store_true", help="make the faces unlabeled again (crops back to unlabeled/)")
    p.set_defaults(func=cmd_dataset_label)

    _add_model_commands(sub)
    from .cli_serve import add_commands as _add_serve_commands  # serve, timeline
    _add_serve_commands(sub)
    from .cli_openset import add_commands as _add_openset_commands  # enroll, forget, cluster, suggest, dataset name
    _add_openset_commands(sub)
    from .cli_detect import add_commands as _add_detector_commands  # detector train, detector evaluate
    _add_detector_commands(sub)
    return ap


def _add_model_commands(sub) -> None:
    """Recogniser commands (train, evaluate, compare, predict) live in cli_models to keep this file short."""
    try:
        from .cli_models import add_commands
    except ImportError:  # pragma: no cover - during development only
        return
    add_commands(sub)


#: Python option names (config fields, keyword arguments) whose flag is not ``--`` + the name with dashes
_FLAGS = {"dedupe_distance": "--dedupe", "skip_similar_frames": "--skip-similar", "time_budget_s": "--time-budget",
          "lr": "--learning-rate", "unknown_rate": "--unknown-threshold"}


def _flag(option: str) -> str:
    """The command-line flag of the Python option ``option`` (``crop_size`` -> ``--crop-size``)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def _pixels(text: str) -> int:
    try:
        n = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number of pixels: {text!r}")
    return n


#: The extras (pyproject.toml) each command needs beyond the prediction-only install; a command that
#: needs one only for some options (a plot, --scheduler) says so when it gets there (missing_extra_hint).
NEEDS: dict[str, tuple[str, ...]] = {
    "demo": ("train", "video"), "frames": ("video",), "collect": ("video", "dataset"), "import": ("dataset",),
    "train": ("train",), "compare": ("train",), "evaluate": ("plot",), "cluster": ("dataset",),
    "timeline": ("video", "plot"), "serve": ("serve",), "detector train": ("train",),
    "detector quantize": ("train",),
}


def _subparser(ap: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``a`` is for (``detector train``, ``dataset export``...), for its errors."""
    p = ap
    for dest in ("command", "detector_command", "dataset_command"):
        name = getattr(a, dest, None)
        subs = [x for x in p._actions if isinstance(x, argparse._SubParsersAction)]
        if name and subs and name in subs[0].choices:
            p = subs[0].choices[name]
    return p


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a, extra = ap.parse_known_args(argv)
    if extra:                         # said by the command's own parser: its usage, `animeid CMD: error:`
        _subparser(ap, a).error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(a, "scheduler"):
        _resolve_scheduler(ap, a)
    if a.max_pixels is not None:      # through the environment: worker processes see it too
        from .images import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(a.max_pixels)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="animeid: %(message)s", stream=sys.stderr)
    try:
        from .images import max_pixels

        max_pixels()                  # a bad $ANIMEID_MAX_PIXELS is said once, before any work
        command = " ".join(filter(None, [a.command, getattr(a, "detector_command", None)]))
        require_extras(f"animeid {command}", *NEEDS.get(command, ()))   # a light install: which extra, up front
        return int(a.func(a) or 0)
    except ConfigError as e:         # an option's value: a usage error, said with the flag's name
        where = f"{_flag(e.option)}: " if e.option else ""
        print(f"{_subparser(ap, a).prog}: error: {where}{e.problem}", file=sys.stderr)
        return 2
    except AnimeidError as e:        # `animeid train: error: ...`, as argparse says its own errors
        print(f"{_subparser(ap, a).prog}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        hint = missing_extra_hint(e)
        if hint is None:
            raise
        print(f"{_subparser(ap, a).prog}: error: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("animeid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
