"""Open-set commands of the ``animeid`` CLI: enroll, forget, cluster, suggest, dataset name (flags -> API calls)."""
from __future__ import annotations

import argparse
import sys

from ._util import plural, print_json

__all__ = ["add_commands"]



def _check_model_out(a) -> None:
    """``--out``: a new file, or a model file (replaced); anything else there is refused before any work."""
    if a.out:
        from .outputs import is_animeid_model, prepare_output_file

        prepare_output_file(a.out, own=is_animeid_model, what="a model file", overwrite=True)


def cmd_enroll(a) -> int:
    from .errors import InputError
    from .images import iter_image_files
    from .predict import PredictConfig, Recognizer

    rec = Recognizer.load(a.model)                  # a file that is not a model: ModelFileError, nothing written
    _check_model_out(a)
    files = list(iter_image_files(a.images))        # a missing path: InputError, nothing written
    if not files:
        raise InputError(f"no pictures to enrol {a.name!r} from (looked in: {', '.join(a.images)})")
    r = rec.enroll(a.name, files, PredictConfig(threshold=a.threshold, detector=a.detector), face_crops=a.face_crops)
    out = rec.save(a.out or a.model)
    what = "new character" if r["new"] else "more pictures of"
    print(f"enrolled {r['name']!r} ({what}) from {plural(r['added'], 'picture')}; "
          f"{plural(r['faces'], 'enrolled picture')} in all; {plural(len(rec.labels), 'character')}; model: {out}")
    if a.json:
        print_json({**r, "model": str(out), "characters": rec.labels})
    return 0


def cmd_forget(a) -> int:
    from .names import normalize_name
    from .predict import Recognizer

    rec = Recognizer.load(a.model)
    _check_model_out(a)
    # the model's own spelling of the name: a model trained from NFD folders by an older animeid has NFD names
    name = next((lab for lab in rec.labels if normalize_name(lab) == normalize_name(a.name)), a.name)
    r = rec.forget(name)
    out = rec.save(a.out or a.model)
    print(f"forgot {r['name']!r}{' (a trained character: masked out)' if r['trained'] else ''}; "
          f"{plural(r['characters'], 'character')} left; model: {out}")
    return 0


def cmd_cluster(a) -> int:
    from .cluster import cluster_workspace

    groups = cluster_workspace(a.workspace, a.model, threshold=a.threshold, min_size=a.min_size,
                               linkage=a.linkage, sheets=not a.no_sheets, progress=not a.quiet)
    if a.json:
        print_json({"groups": [g.to_dict() for g in groups]})
        return 0
    if not groups:
        print("no unlabeled faces to group")
        return 0
    named = [g for g in groups if g.id != -1]
    apart = sum(g.size for g in groups if g.id == -1)
    print(f"{plural(sum(g.size for g in groups), 'unlabeled face')}: {plural(len(named), 'group')}, {apart} left apart "
          f"(run {groups[0].run})")
    for g in groups:
        head = f"group {g.id}" if g.id != -1 else "left apart"
        guess = f", model's guess {g.guess} ({g.guess_share:.0%})" if g.guess else ""
        sheet = f"  {g.sheet}" if g.sheet else ""
        print(f"  {head}: {plural(g.size, 'face')}{guess}{sheet}")
    print("name a group: animeid dataset name WS GROUP NAME")
    return 0


def cmd_dataset_name(a) -> int:
    from .cluster import group_labels, name_group
    from .names import normalize_name

    n = name_group(a.workspace, a.group, a.name)
    if n:
        print(f"{plural(n, 'face')} of group {a.group} labeled {a.name!r}")
        return 0
    now = group_labels(a.workspace, a.group)         # nothing was left to name: say why
    deleted = now.pop("(deleted)", 0)
    named = ", ".join(f"{k!r}: {v}" for k, v in sorted(now.items(), key=lambda kv: -kv[1]))
    why = []
    if named:
        why.append(f"{'all are' if not deleted else 'the others are'} labeled already ({named})")
    if deleted:
        why.append(f"{deleted} {'was' if deleted == 1 else 'were'} deleted")
    total = sum(now.values()) + deleted
    print(f"no face of group {a.group} labeled {a.name!r}: of its {plural(total, 'face')}, {'; '.join(why)}; "
          "a face keeps its label: change one with 'animeid dataset label WS --name NAME ID...', or run "
          "'animeid cluster' again for fresh groups of the unlabeled faces", file=sys.stderr)
    same = set(now) == {normalize_name(a.name)} or set(now) == {a.name}
    return 0 if same else 1


def _suggest_args(a) -> str | None:
    """``suggest MODEL WS`` (the model first, as in every command that needs one); the older
    ``suggest WS --model MODEL`` still works, with a note. Returns a usage error, or None."""
    if a.model_option is not None:
        if a.workspace is not None:
            return "give the model once: suggest MODEL WORKSPACE"
        print("animeid: note: 'suggest WS --model MODEL' is now 'suggest MODEL WS'; the old spelling still works "
              "for now", file=sys.stderr)
        a.model, a.workspace = a.model_option, a.model
    elif a.workspace is None:
        return "needs a model and a workspace: suggest MODEL WORKSPACE"
    return None


def cmd_suggest(a) -> int:
    from .cluster import suggest

    problem = _suggest_args(a)
    if problem:
        print(f"animeid suggest: error: {problem}", file=sys.stderr)
        return 2
    r = suggest(a.workspace, a.model, min_p=a.min_p, accept=a.accept, progress=not a.quiet)
    if a.json:
        print_json(r)
        return 0
    print(f"{plural(r['faces'], 'unlabeled face')}: {r['confident']} confident (p >= {a.min_p:g}), "
          f"{len(r['doubtful'])} doubtful" + (f"; {r['accepted']} labeled" if a.accept else
                                               "; --accept labels the confident ones"))
    for name, (conf, n) in sorted(r["by_name"].items(), key=lambda kv: -kv[1][1]):
        print(f"  {name}: {n} guessed, {conf} confident")
    return 0


def _dataset_actions(sub) -> "argparse._SubParsersAction | None":
    p = sub.choices.get("dataset") if hasattr(sub, "choices") else None
    if p is None:
        return None
    for act in p._actions:
        if isinstance(act, argparse._SubParsersAction):
            return act
    return None


def add_commands(sub) -> None:
    from .cluster import CLUSTER_RULES

    p = sub.add_parser("enroll", help="add a character to a model from a few pictures, no retraining")
    p.add_argument("model", help="model file (.animeid); changed in place unless --out is given")
    p.add_argument("name", help="the character's name (any Unicode; 'unknown' is reserved)")
    p.add_argument("images", nargs="+", help="1-10 face crops or illustrations (the largest face is used), or folders")
    p.add_argument("--out", "-o", help="write the new model here (default: change MODEL in place)")
    from .cli_detect import add_detector_opts

    add_detector_opts(p)
    p.add_argument("--face-crops", action="store_true",
                   help="the pictures are face crops: use each whole, without looking for a face (by default a "
                        "picture in which no face is found is refused)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON object (the last line)")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("forget", help="remove a character from a model (enrolled, or trained: masked out)")
    p.add_argument("model", help="model file (.animeid); changed in place unless --out is given")
    p.add_argument("name", help="the character's name, as the model spells it")
    p.add_argument("--out", "-o", help="write the new model here (default: change MODEL in place)")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("cluster", help="group a workspace's unlabeled faces by identity (labeling help)")
    p.add_argument("workspace", help="the workspace folder whose unlabeled faces are grouped")
    p.add_argument("--model", "-m", help="a model file (optional, so an option): its embedding groups better, and "
                                         "it guesses each group's name")
    p.add_argument("--threshold", type=CLUSTER_RULES["threshold"].arg("--threshold"),
                   help="cosine distance at which groups stop merging, above 0 up to 2 (complete linkage; default: "
                        "the model's calibrated one, 0.4 without a model)")
    p.add_argument("--min-size", type=CLUSTER_RULES["min_size"].arg("--min-size"), default=2,
                   help="smaller groups are left apart (default 2)")
    p.add_argument("--linkage", choices=["complete", "average", "single"], default="complete",
                   help="how far two groups are: their farthest faces (complete, default), the mean, the nearest")
    p.add_argument("--no-sheets", action="store_true", help="no contact sheets (WS/.groups/*.png)")
    p.add_argument("--json", action="store_true", help="print the groups as one JSON object")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (on a terminal) or summary line (otherwise)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("suggest", help="pre-label a workspace's unlabeled faces with a model's guesses")
    p.add_argument("model", help="the model file (.animeid) whose guesses are stored")
    p.add_argument("workspace", nargs="?", help="the workspace whose unlabeled faces are guessed (required)")
    p.add_argument("--model", dest="model_option", metavar="MODEL",
                   help="the old spelling (suggest WS --model MODEL), still accepted with a note")
    p.add_argument("--min-p", type=CLUSTER_RULES["min_p"].arg("--min-p"), default=0.9,
                   help="a guess this probable is confident, 0..1 (default 0.9)")
    p.add_argument("--accept", action="store_true", help="label the confident faces (crops moved to WS/<name>/)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (on a terminal) or summary line (otherwise)")
    p.set_defaults(func=cmd_suggest)

    d = _dataset_actions(sub)
    if d is not None:
        p = d.add_parser("name", help="name a whole group of the latest `animeid cluster` at once")
        p.add_argument("workspace", help="the workspace folder")
        p.add_argument("group", type=int, help="the group's number, as 'animeid cluster' printed it")
        p.add_argument("name", help="the character's name (any Unicode)")
        p.set_defaults(func=cmd_dataset_name)
