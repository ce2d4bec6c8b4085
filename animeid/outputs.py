"""Claiming output folders and files: a command replaces only what animeid wrote itself.

Every command that writes a folder (``dataset export``, ``frames``, ``detect --out/--preview``,
``predict --preview``, ``compare``, ``demo``, ``cluster``'s sheets) claims it first with
:func:`prepare_output_dir`, before any work starts. The folder is fine when it does not exist yet
(it is made, parents too), when it is empty, or when it holds only an earlier output of the same
command: the files listed in its marker file ``.animeid-output`` (JSON: the kind of output and the
files written). Anything else is refused with an :class:`~animeid.errors.OutputError` that names
the folder, a few of the files animeid did not write, and what to do, and nothing is changed:

* a folder holding files animeid did not write there (a user's episodes, notes, ...), also when
  they were added to an earlier output: refused even with ``overwrite`` (they are never deleted);
* a workspace (a folder holding ``manifest.sqlite``), and a folder that holds the command's own
  inputs (the workspace it exports, the videos it samples, the pictures it reads);
* an earlier output of another command;
* an earlier output of the same command that replaces its folder as a whole (``replace=True``:
  export, compare) unless ``overwrite``; then :meth:`OutputDir.clear` removes only the files the
  marker lists.

Commands that add files to a folder (``replace=False``: frames, detect, predict's previews) write
into their own earlier output without ``overwrite``; they never touch a file they did not write.

Single output files (a model, a PNG) are checked by :func:`prepare_output_file`: an existing
folder at that path, or an existing file that is not what animeid writes there (a model file, a
PNG animeid drew), is refused.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from ._util import atomic_write_json
from .errors import OutputError

__all__ = ["MARKER", "OutputDir", "prepare_output_dir", "prepare_output_file", "is_animeid_model", "is_animeid_png",
           "PNG_SOFTWARE"]

MARKER = ".animeid-output"
#: the PNG text chunk ``Software`` animeid writes into its pictures (how :func:`is_animeid_png` knows them)
PNG_SOFTWARE = "animeid"
_TMP_PREFIX = ".animeid-tmp-"
_ATOMIC_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")   # a leftover of _util.atomic_write killed midway
_OLD_OUTPUT_HINT = ("(an output of an animeid older than this one carries no {marker} file: remove such a "
                    "folder yourself)")


def _ignored(rel: str) -> bool:
    """Entries that belong to animeid's own machinery, never a user's: the marker, temporary files."""
    name = rel.rsplit("/", 1)[-1]
    return rel == MARKER or name.startswith(_TMP_PREFIX) or bool(_ATOMIC_TMP.match(name))


def _scan(root: Path) -> tuple[set[str], set[str]]:
    """``(files, empty folders)`` under ``root`` as relative POSIX paths (links are files, never followed)."""
    files: set[str] = set()
    empty: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel_d = d.relative_to(root).as_posix()
        keep = []
        for name in dirnames:
            rel = name if rel_d == "." else f"{rel_d}/{name}"
            if (d / name).is_symlink():
                files.add(rel)
            elif not _ignored(rel):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            files.add(name if rel_d == "." else f"{rel_d}/{name}")
        if rel_d != "." and not dirnames and not filenames:
            empty.add(rel_d)
    return {f for f in files if not _ignored(f)}, empty


def _parents(files: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def _read_marker(root: Path) -> dict | None:
    try:
        m = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(m, dict) or not isinstance(m.get("kind"), str) or not isinstance(m.get("files", []), list)
            or not isinstance(m.get("dirs", []), list)):
        return None
    return m


def _stat(p: Path) -> list[int] | None:
    """``[size, modification time in ns]`` of a file (not following a link), None when it is not there."""
    try:
        st = p.lstat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _list(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def workspace_around(path: str | os.PathLike) -> Path | None:
    """The animeid workspace that ``path`` is or lies inside (the nearest folder up from it that holds
    ``manifest.sqlite``), or None."""
    p = Path(os.path.realpath(os.path.expanduser(os.fspath(path))))     # through links: where it really is
    for q in (p, *p.parents):
        if (q / "manifest.sqlite").is_file():
            return q
    return None


def check_not_inside_inputs(path: Path, inputs: Iterable[str | os.PathLike], option: str, what: str,
                            holds: bool = True) -> None:
    """Refuse (:class:`OutputError`) an output ``path`` that is or lies inside an input folder of the
    command (its next run would read its own output as input), or, with ``holds``, that holds an input."""
    path = Path(os.path.realpath(path))
    for q in inputs:
        q = Path(os.path.realpath(os.path.expanduser(os.fspath(q))))
        if holds and _inside(q, path):
            held = "is" if q == path else f"holds {q}, which is"
            raise OutputError(f"{held} an input of this command; give {option} a folder that does not hold "
                              "its inputs (a new folder beside them)", str(path))
        if q.is_dir() and _inside(path, q):
            raise OutputError(f"is inside {q}, an input folder of this command: the next run would read "
                              f"{what} back as input; give {option} a folder outside it", str(path))


def check_not_in_workspace(path: Path, option: str) -> None:
    """Refuse (:class:`OutputError`) an output inside an animeid workspace: ``dataset sync`` would read
    files there as faces, and the workspace's own folders are animeid's."""
    ws = workspace_around(path)
    if ws is not None:
        where = "is" if ws == path else f"is inside {ws}, which is"
        raise OutputError(f"{where} an animeid workspace (it holds manifest.sqlite); a command never writes its "
                          f"output into a workspace, where it would be taken for faces: give {option} a folder "
                          "outside it", str(path))


class OutputDir:
    """A claimed output folder: ``path`` (absolute) and the files animeid has written there.

    :meth:`record` adds files (call it *before* writing them, so that a run killed midway leaves
    no file unaccounted for), :meth:`finish` records every file that appeared since the claim,
    :meth:`clear` removes the recorded files (and the folders they leave empty), nothing else.
    """

    def __init__(self, path: Path, kind: str, files: set[str], dirs: set[str] = frozenset(),
                 stamps: dict[str, list[int]] | None = None):
        self.path, self.kind, self.files, self.dirs = path, kind, set(files), set(dirs)
        self.stamps: dict[str, list[int]] = {k: v for k, v in (stamps or {}).items() if k in self.files}
        self._before, _ = _scan(path)

    def _save(self) -> None:
        from ._version import __version__

        atomic_write_json(self.path / MARKER, {"animeid": __version__, "kind": self.kind,
                                               "files": sorted(self.files), "dirs": sorted(self.dirs),
                                               "stamps": {k: self.stamps[k] for k in sorted(self.stamps)}})

    def _stamp(self, rels: Iterable[str]) -> None:
        """Note size and modification time of files as written now: a later change (a user saving over
        one) makes the file theirs, never replaced."""
        for rel in rels:
            st = _stat(self.path / rel)
            if st is not None:
                self.stamps[rel] = st

    def _rel(self, p: str | os.PathLike) -> str:
        p = Path(p)
        if p.is_absolute():
            p = Path(os.path.abspath(p)).relative_to(self.path)
        return p.as_posix()

    def record(self, *paths: str | os.PathLike) -> None:
        """Note files (absolute, or relative to the folder) as written by this output."""
        new = {self._rel(p) for p in paths} - self.files
        if new:
            self.files |= new
            self._save()

    def finish(self) -> None:
        """Record every file (and empty folder) that appeared since the claim: this run wrote them."""
        now, empty = _scan(self.path)
        fresh = now - self._before
        self.files |= fresh
        self.dirs |= empty
        self._stamp(fresh | {f for f in self.files if f not in self.stamps})
        self._before = now
        self._save()

    def clear(self) -> None:
        """Remove the files of the earlier output (only those the marker lists) and the folders they emptied."""
        for rel in sorted(self.files):
            p = self.path / rel
            if p.is_file() or p.is_symlink():
                p.unlink()
        for rel in sorted(_parents(self.files) | self.dirs | _parents(self.dirs), key=lambda r: -r.count("/")):
            try:
                (self.path / rel).rmdir()        # only when empty: a folder that still holds something stays
            except OSError:
                pass
        self.files, self.dirs, self.stamps = set(), set(), {}
        self._before, _ = _scan(self.path)
        self._save()


def prepare_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False, replace: bool = True,
                       protect: Iterable[str | os.PathLike] = (), legacy: Callable[[str], bool] | None = None,
                       option: str = "--out", remedy: str | None = None, in_workspace: bool = False) -> OutputDir:
    """Claim the folder ``path`` for an output of ``kind`` (e.g. ``"export"``); see the module's notes.

    ``replace``: the command replaces the folder as a whole, so an earlier output of the same kind
    needs ``overwrite`` (the caller then calls :meth:`OutputDir.clear` when it is ready to put the
    new output in place); ``replace=False``: the command adds files beside its earlier ones.
    ``protect``: the command's inputs; a folder that is or holds one of them is refused.
    ``legacy(rel)``: without a marker, files for which it is true count as animeid's own (an
    output folder of an older animeid whose names are known). ``option`` names the flag in messages;
    ``remedy`` replaces "give --out a new or empty folder, or move those files away" in them.
    A folder inside an animeid workspace is refused unless ``in_workspace`` (``cluster``'s sheets,
    which belong to the workspace); so is a folder inside an input folder (read back next time).
    Raises :class:`OutputError` (nothing changed) when the folder cannot be used.
    """
    p = Path(os.path.realpath(os.path.expanduser(os.fspath(path))))   # where links lead, existing or not
    shown = str(p)
    if p.exists() and not p.is_dir():
        raise OutputError(f"is a file, not a folder; give {option} a new or empty folder", shown)
    if (p / "manifest.sqlite").exists():
        raise OutputError(f"is an animeid workspace (it holds manifest.sqlite); a command never writes its "
                          f"output over a workspace: give {option} a new folder", shown)
    if not in_workspace:
        check_not_in_workspace(p, option)
    check_not_inside_inputs(p, protect, option, "its own output")
    files: set[str] = set()
    dirs: set[str] = set()
    stamps: dict[str, list[int]] = {}
    if p.is_dir():
        present, empty = _scan(p)
        marker = _read_marker(p)
        if marker is not None and marker["kind"] != kind and (present or empty):
            raise OutputError(f"holds the output of `animeid {marker['kind']}`, not of `animeid {kind}`; nothing "
                              f"was changed: give {option} another folder", shown)
        if marker is not None:
            files = {str(f) for f in marker.get("files", [])}
            dirs = {str(d) for d in marker.get("dirs", [])}
            stamps = {str(k): v for k, v in (marker.get("stamps") or {}).items() if isinstance(v, list)}
            changed = {f for f in files & present if f in stamps and _stat(p / f) != stamps[f]}
            files -= changed                       # saved over since animeid wrote it: the user's now
        elif legacy is not None:
            files = {f for f in present if legacy(f)}
        ours = files & present
        known_dirs = _parents(files) | dirs | _parents(dirs)
        foreign = (present - files) | {d for d in empty if d not in known_dirs}
        if foreign:
            hint = "" if marker is not None else " " + _OLD_OUTPUT_HINT.format(marker=MARKER)
            what = remedy or f"give {option} a new or empty folder, or move those files away"
            raise OutputError(f"holds files animeid did not write there ({_list(foreign)}); nothing was changed, "
                              f"and animeid never deletes or replaces files it did not write: {what}{hint}", shown)
        if ours and replace and not overwrite:
            raise OutputError(f"holds an earlier `animeid {kind}` output; add --overwrite to replace it (only the "
                              f"files it wrote are removed), or give {option} another folder", shown)
        files = ours
    else:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot make the folder: {e.strerror or e}", shown) from None
    od = OutputDir(p, kind, files, dirs, stamps)
    try:
        od._save()
    except OSError as e:
        raise OutputError(f"cannot write into the folder: {e.strerror or e}", shown) from None
    return od


# --------------------------------------------------------------------------- single files

def is_animeid_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an animeid model file (a ZIP whose description says so); cheap, reads no arrays."""
    from .modelfile import FORMAT, META_NAME

    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read(META_NAME))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def is_animeid_png(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PNG animeid drew: its ``Software`` text says animeid. (Any Matplotlib PNG is
    not: a user's own chart must never be replaced; an untagged plot of an old animeid is refused too.)"""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return False
            sw = str(getattr(im, "text", {}).get("Software", ""))
    except Exception:
        return False
    return sw.startswith(PNG_SOFTWARE)


def prepare_output_file(path: str | os.PathLike, *, own: Callable[[Path], bool], what: str,
                        overwrite: bool = False, option: str = "--out", in_workspace: bool = False,
                        suffix: str | None = None) -> Path:
    """Check the output file ``path`` before any work: returns it (absolute) when it may be written.

    Refused (:class:`OutputError`, nothing changed): a name not ending in ``suffix`` (e.g. ``".png"``:
    a picture is not written under a ``.txt`` name); an existing folder at ``path``; an existing file
    for which ``own(path)`` is false (not ``what`` animeid writes, e.g. "a model file"); an existing
    own file without ``overwrite``; a parent that is a file; a file inside an animeid workspace.
    Changes nothing (the writer makes the folder).
    """
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    shown = str(p)
    if suffix and p.suffix.lower() != suffix.lower():
        raise OutputError(f"{what} is written as {suffix[1:].upper()}: give {option} a file name ending in {suffix}",
                          shown)
    if p.is_dir():
        raise OutputError(f"is a folder, not {what}; give {option} the path of a file to write", shown)
    if not in_workspace:                   # (a workspace's own contact sheet lives in it)
        check_not_in_workspace(Path(os.path.realpath(p)).parent, option)       # through links too
    if p.exists() or p.is_symlink():
        if not own(p):
            raise OutputError(f"exists and is not {what} animeid wrote; nothing was changed: remove it or give "
                              f"{option} another name", shown)
        if not overwrite:
            raise OutputError(f"holds an earlier {what.split(' ', 1)[-1]}; add --overwrite to replace it, or give "
                              f"{option} another name", shown)
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{parent} is a file, not a folder", shown)
            break
    return p
