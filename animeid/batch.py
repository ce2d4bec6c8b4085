"""Batch prediction into a results file, and timelines of many videos, locally or on a Dask cluster.

    >>> from animeid.batch import predict_files                                     # doctest: +SKIP
    >>> predict_files("characters.animeid", ["shots/"], "results.jsonl")             # this machine
    >>> predict_files("characters.animeid", ["shots/"], "results.jsonl", client="tcp://head:8786")

:func:`predict_files` writes one record per picture, in input order, to a ``.jsonl`` file (one JSON
object a line: ``path``, ``faces``, ``whole_picture`` when no face was found, or ``error``) or a ``.csv``
file (one row per face: ``path, face, x0, y0, x1, y1, name, p, unknown, error``; a picture without
a face has one row with ``face`` empty). ``path`` is the picture's absolute path. Each finished chunk
is appended in one write call, so the file is always a prefix of the full result (a kill never keeps
part of a chunk; a write that fails midway, a full disk, is undone; a last line cut off anyway, a
power cut, is dropped on the next run). Run it again and the pictures already in the file are
skipped, from any folder and however they are named (``shots/a.png``, ``/home/me/shots/a.png``, a
link). With ``client`` (a ``dask.distributed.Client`` or a scheduler address) the pictures are named
on the cluster's workers (:mod:`animeid.remote`).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import InputError, OutputError

__all__ = ["predict_chunk", "predict_files", "read_done", "read_failed", "timelines", "CSV_FIELDS"]

CSV_FIELDS = ["path", "face", "x0", "y0", "x1", "y1", "name", "p", "unknown", "error"]


def predict_chunk(rec: Any, files: Sequence[str | os.PathLike], cfg: Any) -> list[tuple[str, Any]]:
    """``(file, result dict or error message)`` for each file, in order: the chunk goes through
    ``predict_batch`` at once (detection and recognition batched); a chunk holding an unreadable file
    is redone one by one (:meth:`~animeid.predict.Recognizer.predict_stream`)."""
    files = [os.fspath(f) for f in files]
    return list(_records_of(rec.predict_stream(files, cfg, chunk=max(1, len(files)))))


def _records_of(stream: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """``predict_stream``'s pairs with each InputError as its message: the record's ``path`` names the file."""
    return ((f, r.message if isinstance(r, InputError) else r) for f, r in stream)


def _format(out: Path) -> str:
    ext = out.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".csv":
        return "csv"
    raise OutputError("results file must end in .jsonl or .csv", out)


def _clean_tail(out: Path) -> None:
    """Drop a last line cut off by a kill (no newline at its end), so appending goes on cleanly."""
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(out, "r+b") as f:
            f.truncate(keep)


def _append(f: Any, data: bytes) -> None:
    """Append one chunk's records to the unbuffered file ``f`` in one write call, so that a kill
    cannot leave part of it (a picture's first face rows without the others); a write that fails
    midway (a full disk) is undone before the error goes on."""
    start = f.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
    except BaseException:
        f.truncate(start)
        raise


def _key(path: str | os.PathLike) -> str:
    """A picture's path as a resumed run compares it: ``shots``, ``/home/me/shots`` and a link to it
    are one folder (the file holds absolute paths; relative ones, from older files, are read from here)."""
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def read_done(out: str | os.PathLike) -> set[str]:
    """The pictures an earlier run wrote to the results file ``out`` (empty when there is none);
    those it could not read are among them (:func:`read_failed`)."""
    return set(_read_records(out))


def read_failed(out: str | os.PathLike) -> set[str]:
    """The pictures of the results file ``out`` whose record is an error (an unreadable picture): a
    rerun does not retry them; remove their lines (or the file) to have them read again."""
    return {path for path, failed in _read_records(out).items() if failed}


def _read_records(out: str | os.PathLike) -> dict[str, bool]:
    """``{picture: its record is an error}`` of the results file ``out`` (empty when there is none)."""
    out = Path(out)
    if not out.is_file():
        return {}
    fmt = _format(out)
    _clean_tail(out)
    done: dict[str, bool] = {}
    with open(out, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    done[rec["path"]] = "error" in rec
                except (ValueError, KeyError, TypeError):
                    raise OutputError(f"line {n} is not an animeid result; not a predict results file?", out) from None
        else:
            reader = csv.DictReader(f)
            if reader.fieldnames and reader.fieldnames != CSV_FIELDS:
                raise OutputError(f"columns {reader.fieldnames} are not animeid's; not a predict results file?", out)
            for row in reader:
                done[row["path"]] = bool(row.get("error"))
    return done


def _records(fmt: str, path: str, res: Any) -> str:
    if fmt == "jsonl":
        rec = ({"path": path, "error": res} if isinstance(res, str) else
               {"path": path, **{k: res[k] for k in ("faces", "whole_picture") if k in res}})
        return json.dumps(rec, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if isinstance(res, str):
        w.writerow([path, "", "", "", "", "", "", "", "", res])
    elif not res["faces"]:
        w.writerow([path] + [""] * 9)
    for k, face in enumerate([] if isinstance(res, str) else res["faces"]):
        top = face["candidates"][0] if face.get("candidates") else {"name": "", "p": ""}
        name = "unknown" if face.get("unknown") else face.get("name", top["name"])
        w.writerow([path, k, *face["box"], name, top["p"], int(bool(face.get("unknown"))), ""])
    return buf.getvalue()


def predict_files(model: Any, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, cfg: Any = None,
                  client: Any = None, chunk: int = 32, on_result: Any = None) -> dict[str, int]:
    """Name the characters in every picture of ``inputs`` (files, folders searched) into ``out``
    (``.jsonl`` or ``.csv``), in input order, resumably; see the module docstring.

    ``model``: a model file (or, locally, a loaded :class:`~animeid.predict.Recognizer`). ``client``: a
    ``dask.distributed.Client`` or a scheduler address to run on a cluster (the model is then sent once
    to each worker); None: this process. ``on_result(path, result or error message)`` is called per
    new picture, in order.

    Parameters
    ----------
    model : path or Recognizer
        A model file; locally also a loaded model (on a cluster it must be a path).
    inputs : sequence of paths
        Pictures and folders (searched recursively).
    out : path
        The results file, ``.jsonl`` (``.ndjson``) or ``.csv``; pictures already in it are skipped.
    cfg : PredictConfig, optional
        Prediction options (default ``PredictConfig()``).
    client : dask.distributed.Client or str, optional
        A client or a scheduler address (``animeid[distributed]``); None: this process.
    chunk : int, default 32
        Pictures per batch (and per flush of ``out``).
    on_result : callable, optional
        ``on_result(path, result dict or error message)`` per new picture, in order.

    Returns
    -------
    dict
        ``{"pictures", "skipped", "done", "failed", "failed_before"}`` (``done`` counts the pictures
        handled now, failed ones included; ``failed_before``: pictures skipped because an earlier run
        could not read them, :func:`read_failed`).

    Raises
    ------
    OutputError
        ``out`` does not end in ``.jsonl``/``.csv``, or lies in a workspace.
    InputError
        An input does not exist (unreadable pictures are records, not errors).
    ModelFileError
        The model cannot be read, or (locally) a refusal rate it cannot use.
    animeid.remote.ClusterError
        An unusable cluster, before ``out`` is touched.
    TypeError
        On a cluster, a model that is not a path.

    Examples
    --------
    >>> predict_files("characters.animeid", ["shots/"], "names.jsonl")
    {'pictures': 272, 'skipped': 0, 'done': 272, 'failed': 0, 'failed_before': 0}
    >>> predict_files("characters.animeid", ["shots/"], "names.jsonl", client="tcp://10.0.0.5:8786")
    {'pictures': 272, 'skipped': 272, 'done': 0, 'failed': 0, 'failed_before': 0}
    """
    from .images import iter_image_files
    from .predict import PredictConfig, Recognizer

    from .outputs import check_not_in_workspace

    out = Path(out)
    fmt = _format(out)
    cfg = cfg or PredictConfig()
    check_not_in_workspace(Path(os.path.realpath(out)).parent, "--out")   # as every output: never in a workspace
    files = [os.fspath(f) for f in iter_image_files(inputs)]       # InputError for a missing input
    records = {_key(p): failed for p, failed in _read_records(out).items()}
    keys = [_key(f) for f in files]
    todo = [f for f, k in zip(files, keys) if k not in records]
    summary = {"pictures": len(files), "skipped": len(files) - len(todo), "done": 0, "failed": 0,
               "failed_before": sum(1 for k in keys if records.get(k))}
    if not todo:
        return summary
    cluster = None
    results: Any = None
    if client is not None:
        from .remote import connect

        cluster = connect(client)         # before the results file is touched: an unreachable scheduler writes nothing
    try:
        if cluster is not None:
            from .remote import predict_batches

            if not isinstance(model, (str, os.PathLike)):
                raise TypeError("on a cluster, give the model as a file path (it is sent to each worker)")
            results = predict_batches(cluster, model, todo, cfg, chunk)
        else:
            rec = model if hasattr(model, "predict_batch") else Recognizer.load(model)
            rec._threshold(cfg, rec.openset)
            results = _records_of(rec.predict_stream(todo, cfg, chunk=chunk))
        new = not out.exists() or out.stat().st_size == 0
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab", buffering=0) as f:
            if new and fmt == "csv":
                _append(f, (",".join(CSV_FIELDS) + "\n").encode("utf-8"))
            pending: list[str] = []         # a chunk's records, written at once
            for n, (path, res) in enumerate(results, 1):
                pending.append(_records(fmt, os.path.abspath(path), res))   # true from any folder
                summary["done"] += 1
                summary["failed"] += isinstance(res, str)
                if on_result is not None:
                    on_result(path, res)
                if n % chunk == 0 or n == len(todo):
                    _append(f, "".join(pending).encode("utf-8"))
                    pending.clear()
    finally:
        if cluster is not None:
            if results is not None:
                results.close()    # ends the run on the workers (their copy of the model) before the client goes
            cluster.close()
    return summary


def timelines(model: Any, videos: Sequence[str | os.PathLike], *, every: float = 2.0, cfg: Any = None,
              client: Any = None) -> Iterator[tuple[str, Any]]:
    """``(video, timeline dict or error message)`` for each video, in order
    (:func:`animeid.timeline.build_timeline`); with ``client``, one task per video on the cluster.

    Parameters
    ----------
    model : path or Recognizer
        A model file (or, locally, a loaded model).
    videos : sequence of paths
        Video files (on a cluster, readable by every worker under the same path).
    every : float, default 2.0
        Seconds between sampled frames (> 0).
    cfg : PredictConfig, optional
        Default ``PredictConfig(detect="always")``.
    client : dask.distributed.Client or str, optional
        A client or a scheduler address (``animeid[distributed]``); None: this process.

    Yields
    ------
    tuple
        ``(video path, timeline)``, the timeline as :func:`animeid.timeline.build_timeline` gives it,
        or an error message (str) for a video that cannot be read.

    Raises
    ------
    ConfigError
        A bad ``every`` (at the first item: this is a generator).
    ModelFileError
        The model file cannot be read.
    animeid.remote.ClusterError
        An unusable cluster.

    Examples
    --------
    >>> for video, tl in timelines("characters.animeid", ["ep01.mkv", "ep02.mkv"], every=2):
    ...     print(video, tl if isinstance(tl, str) else list(tl["characters"]))
    """
    from .options import SECONDS
    from .predict import PredictConfig, Recognizer
    from .timeline import build_timeline

    every = SECONDS.check("every", every)
    cfg = cfg or PredictConfig(detect="always")
    if client is not None:
        from .remote import connect, timelines as remote_timelines

        videos = [os.fspath(v) for v in videos]
        found = [os.path.isfile(v) for v in videos]        # a file missing here too is no worker's fault
        with connect(client) as cluster:
            results = remote_timelines(cluster, model, [v for v, ok in zip(videos, found) if ok], every, cfg)
            try:
                for v, ok in zip(videos, found):
                    if ok:
                        yield next(results)
                    else:
                        yield v, str(InputError("no such file" if not os.path.exists(v) else "not a file", v))
            finally:
                results.close()      # its end hands the model back while the cluster is still connected
        return
    rec = model if hasattr(model, "predict_batch") else Recognizer.load(model)
    for v in videos:
        try:
            yield os.fspath(v), build_timeline(rec, v, every=every, cfg=cfg)
        except InputError as e:
            yield os.fspath(v), str(e)
