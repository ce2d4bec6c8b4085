"""Past one machine: collect, batch prediction and timelines on a Dask cluster (``animeid[distributed]``).

A cluster is a Dask scheduler and workers started by the user::

    dask scheduler                              # on one machine: listens on tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1    # on each machine, as many as wanted

and animeid is given its address (``--scheduler tcp://HOST:8786``, ``$ANIMEID_SCHEDULER``, or a
``dask.distributed.Client`` / an address as ``client=`` in Python). What runs where:

* the *workers* decode, detect, crop, hash and name: every input must be readable by every worker
  under the same path as on the driver (a shared folder); a worker that cannot read a file says so,
  naming itself, and that file is reported as failed;
* the *driver* (the animeid command) stays the only writer of its outputs: a workspace's
  ``manifest.sqlite`` and crops (near-duplicate removal, atomic crop writes, one commit per frame, in
  the same order as a local run, so the workspace is the same as a local run's and stays resumable),
  or a predict results file (lines in input order).

Videos are cut into segments of :attr:`~animeid.dataset.CollectConfig.segment_frames` sampled
frames, one task each, so that one long episode spreads over many workers; the similar-frame chain
starts again at each segment border, locally as well (:func:`animeid.video.sample_frames`'s
``similar_restart``), so both give the same frames. A model is read once on the driver and its bytes
shipped once to each worker (``Client.scatter(..., broadcast=True)``), where it is loaded once per
worker process and kept (a worker needs no copy of the model file).

Every worker must run the same animeid version as the driver: checked when connecting and again by
each task. A worker that dies mid-task has its task run again elsewhere by Dask.
"""
from __future__ import annotations

import collections
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ._version import __version__
from .errors import AnimeidError

__all__ = ["ClusterError", "SCHEDULER_ENV", "connect", "Cluster"]

#: the environment variable the CLI reads for ``--scheduler``'s default
SCHEDULER_ENV = "ANIMEID_SCHEDULER"
#: seconds to wait for a scheduler to answer, and for a first worker to join it
CONNECT_TIMEOUT = 5.0
WORKER_TIMEOUT = 60.0
EXTRA = "pip install 'animeid[distributed]'"


class ClusterError(AnimeidError):
    """The Dask cluster cannot be used: Dask is not installed, the scheduler does not answer, it has no
    workers, a worker runs another animeid, or a task failed on every worker it was tried on."""


def _dask():
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"running on a cluster needs Dask distributed, which is not installed: {EXTRA}") from None
    return distributed


# --------------------------------------------------------------------------- worker side

def _worker_version() -> str:
    return __version__


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this machine"


def _check_version(expected: str) -> None:
    """Every task starts with this: a worker with another animeid refuses the work, saying so."""
    if __version__ != expected:
        raise ClusterError(f"{_worker_name()} runs animeid {__version__}, the driver {expected}: install the same "
                           f"animeid version on every worker")


def _unreadable(path: str | os.PathLike) -> str | None:
    """Why a worker cannot read an input (None when it can), naming the worker (not the file)."""
    p = Path(path)
    if p.is_file() and os.access(p, os.R_OK):
        return None
    why = "no such file" if not p.exists() else ("not a file" if not p.is_file() else "permission denied")
    return (f"cannot be read on {_worker_name()} ({why}); inputs must lie on a path every worker "
            f"can read (a shared folder mounted at the same place)")


def _detect_jobs_task(jobs: list, cfg: Any, version: str) -> list:
    """Pictures (or frames of animated pictures): one detection job each, as the local pool runs them."""
    from .dataset import _detect_job, _Result

    _check_version(version)
    out = []
    for job in jobs:
        why = _unreadable(job.path) if job.path is not None else None
        out.append(_Result([], f"{job.path}: {why}") if why else _detect_job(job, cfg))
    return out


def _probe_task(path: str, version: str) -> tuple[float | None, str | None]:
    """``(duration, None)`` for a video, ``(None, why)`` when this worker cannot read it or it is no video."""
    from .errors import InputError
    from .video import probe

    _check_version(version)
    why = _unreadable(path)
    if why:
        return None, why
    try:
        return probe(path).duration, None
    except InputError as e:
        return None, e.message


def _segment_task(path: str, source_id: int, index: int, start: float, stop: float | None, done_ms: list[int],
                  cfg: Any, version: str) -> tuple[list, str | None]:
    """One segment of a video: its sampled frames (those not done already), each detected, cropped
    and hashed. Returns ``([(job without picture, result), ...], error or None)``; an error met in a
    segment after the first one that yielded no frame (a segment after the video's real end) is no error."""
    from .dataset import _detect_job, _DetectJob, _time_key
    from .errors import InputError
    from .video import sample_frames

    _check_version(version)
    why = _unreadable(path)
    if why:
        return [], why
    out: list = []
    known = [ms / 1000 for ms in done_ms]
    error = None
    try:
        for fr in sample_frames(path, cfg.every, start=start, stop=stop, skip_similar=cfg.skip_similar_frames,
                                similar_restart=cfg.every * cfg.segment_frames, skip_times=known):
            job = _DetectJob(source_id, _time_key(fr.time), round(fr.time, 3), None, image=fr.image)
            res = _detect_job(job, cfg)
            job.image = None
            out.append((job, res))
    except InputError as e:
        if index == 0 or out:
            error = e.message
    return out, error


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _worker_model(data: bytes, sha: str) -> Any:
    """The model shipped as ``data``, loaded once per worker process (kept by its SHA-256)."""
    from .predict import Recognizer

    with _MODELS_LOCK:
        rec = _MODELS.get(sha)
        if rec is None:
            folder = Path(tempfile.gettempdir()) / "animeid-models"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{sha}.animeid"
            if not path.is_file():
                from ._util import atomic_write

                with atomic_write(path, "wb") as f:
                    f.write(data)
            rec = _MODELS[sha] = Recognizer.load(path)
        return rec


def _predict_task(data: bytes, sha: str, files: list[str], cfg: Any, version: str) -> list:
    from .batch import predict_chunk

    _check_version(version)
    rec = _worker_model(data, sha)
    bad = {f: _unreadable(f) for f in files}
    readable = [f for f in files if not bad[f]]
    got = dict(predict_chunk(rec, readable, cfg))
    return [(f, f"{f}: {bad[f]}" if bad[f] else got[f]) for f in files]


def _timeline_task(data: bytes, sha: str, video: str, every: float, cfg: Any, version: str) -> Any:
    from .errors import InputError
    from .timeline import build_timeline

    _check_version(version)
    why = _unreadable(video)
    if why:
        return f"{video}: {why}"
    try:
        return build_timeline(_worker_model(data, sha), video, every=every, cfg=cfg)
    except InputError as e:
        return str(e)


# --------------------------------------------------------------------------- driver side

class Cluster:
    """A connected, checked Dask client and the work animeid sends it (results always in input order)."""

    def __init__(self, client: Any, owned: bool):
        self.client = client
        self.owned = owned

    def close(self) -> None:
        if self.owned:
            self.client.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def threads(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:       # noqa: BLE001 - only a sizing hint
            return 1

    def result(self, future: Any) -> Any:
        """A task's result; a failure on the cluster (not the input's) as :class:`ClusterError`."""
        distributed = _dask()
        try:
            return future.result()
        except ClusterError:
            raise
        except distributed.KilledWorker as e:
            raise ClusterError(f"a task failed on every worker it was tried on (each died running it): {e}") from None
        except (OSError, distributed.TimeoutError, distributed.CancelledError) as e:
            raise ClusterError(f"lost the scheduler at {self.address} ({type(e).__name__}: {e})") from None

    def ordered(self, calls: Iterable[tuple[Callable, tuple]], window: int | None = None) -> Iterator[Any]:
        """Submit ``(function, args)`` calls, at most ``window`` in flight, and yield results in order."""
        window = window or max(4, 2 * self.threads())
        pending: collections.deque = collections.deque()
        for fn, args in calls:
            pending.append(self.client.submit(fn, *args, pure=False))
            if len(pending) >= window:
                yield self.result(pending.popleft())
        while pending:
            yield self.result(pending.popleft())

    def ship(self, path: str | os.PathLike) -> tuple[Any, str]:
        """A model file's bytes, sent once to each worker: ``(future, sha256)`` for the tasks."""
        from .modelfile import read_model

        read_model(path)                  # a bad model fails here, before any work is sent
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        return self.client.scatter(data, broadcast=True, hash=False), sha


def connect(scheduler: Any, *, timeout: float = CONNECT_TIMEOUT, worker_timeout: float = WORKER_TIMEOUT) -> Cluster:
    """A checked connection to a Dask cluster, for ``collect``, ``import``, ``predict_files`` and ``timelines``.

    Parameters
    ----------
    scheduler : dask.distributed.Client or str
        A client (used as it is, not closed by :meth:`Cluster.close`) or a scheduler address
        (``tcp://HOST:8786``; ``HOST:8786`` is read as TCP; connected here, closed by :meth:`Cluster.close`).
    timeout : float
        Seconds to wait for the scheduler to answer.
    worker_timeout : float
        Seconds to wait for a first worker to join the scheduler.

    Returns
    -------
    Cluster
        A context manager: ``with connect(...) as cluster: ...`` closes what it opened.

    Raises
    ------
    ClusterError
        Dask distributed is not installed (the message names ``animeid[distributed]``); an empty
        address; no scheduler answers within ``timeout``; no worker within ``worker_timeout``; a worker
        runs another animeid version, or cannot import animeid (each worker named).

    Examples
    --------
    >>> from animeid.remote import connect
    >>> with connect("tcp://10.0.0.5:8786") as cluster:                # doctest: +SKIP
    ...     print(cluster.address, cluster.threads())
    tcp://10.0.0.5:8786 16
    """
    distributed = _dask()
    if isinstance(scheduler, distributed.Client):
        client, owned = scheduler, False
    else:
        address = str(scheduler).strip()
        if not address:
            raise ClusterError("empty scheduler address; give tcp://HOST:8786")
        if "://" not in address:
            address = f"tcp://{address}"
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, distributed.TimeoutError, ValueError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClusterError(f"no Dask scheduler answers at {address} within {timeout:g} s ({why}); start one with "
                               f"`dask scheduler` and give its address") from None
        owned = True
    cluster = Cluster(client, owned)
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except (distributed.TimeoutError, TimeoutError):
            raise ClusterError(f"the scheduler at {cluster.address} has no workers (waited {worker_timeout:g} s); "
                               f"start some with `dask worker {cluster.address}`") from None
        check_versions(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def check_versions(cluster: Cluster, expected: str = __version__) -> None:
    """Every worker runs animeid ``expected``, else :class:`ClusterError` naming the others."""
    got = cluster.client.run(_worker_version, on_error="return")
    bad = []
    for worker, v in sorted(got.items()):
        if isinstance(v, BaseException):
            bad.append(f"{worker}: cannot run animeid ({type(v).__name__}: {v})")
        elif v != expected:
            bad.append(f"{worker}: animeid {v}")
    if bad:
        raise ClusterError(f"every worker must run animeid {expected}, as the driver does: " + "; ".join(bad))


def cluster_or_none(client: Any) -> Cluster | None:
    """:func:`connect` for ``client`` (a Client or an address), None for None (work locally)."""
    return None if client is None else connect(client)


# --------------------------------------------------------------------------- collect's runner

class DaskRunner:
    """:class:`animeid.dataset._Runner`'s interface on a cluster: detection jobs and video segments
    run on the workers, results come back in input order for the driver to store."""

    #: pictures per task
    BATCH = 8

    def __init__(self, cluster: Cluster, cfg: Any):
        self.cluster = cluster
        self.cfg = cfg

    def map(self, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        jobs = list(jobs)
        batches = [jobs[i:i + self.BATCH] for i in range(0, len(jobs), self.BATCH)]
        calls = ((_detect_jobs_task, (b, self.cfg, __version__)) for b in batches)
        for batch, results in zip(batches, self.cluster.ordered(calls)):
            yield from zip(batch, results)

    def videos(self, todo: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """``(job, result)`` per sampled frame not done yet, video after video, each in time order
        (``todo``: :class:`animeid.dataset._VideoTodo` items; a video's first error goes to its
        ``errors``). Every video is probed at once, then all their segments form one stream of tasks,
        so that the next video's segments run while the last ones of a video are still running."""
        from .video import _ms

        probes = [self.cluster.client.submit(_probe_task, str(v.path), __version__, pure=False) for v in todo]
        span = self.cfg.every * self.cfg.segment_frames
        plan: list[tuple[Any, tuple]] = []            # (video, task arguments), in the order stored
        for v, probe in zip(todo, probes):
            duration, why = self.cluster.result(probe)
            if why:
                v.errors.append(why)
                continue
            n = 1 if not duration else max(1, int(-(-duration // span)))
            done_ms = sorted(int(round(float(k[2:]) * 1000)) for k in v.done)
            for j in range(n):
                start, stop = j * span, ((j + 1) * span if j < n - 1 else None)   # the last one runs to the end
                mine = [ms for ms in done_ms if ms >= _ms(start) and (stop is None or ms < _ms(stop))]
                plan.append((v, (str(v.path), v.source_id, j, start, stop, mine, self.cfg, __version__)))
        results = self.cluster.ordered((_segment_task, args) for _, args in plan)
        for (v, _), (frames, error) in zip(plan, results):
            yield from frames
            if error and not v.errors:
                v.errors.append(error)

    def close(self) -> None:
        pass


def predict_batches(cluster: Cluster, model: str | os.PathLike, files: Sequence[str], cfg: Any,
                    chunk: int = 32) -> Iterator[tuple[str, Any]]:
    """``(file, result or error message)`` per file, in order, named on the workers."""
    data, sha = cluster.ship(model)
    chunks = [list(files[i:i + chunk]) for i in range(0, len(files), chunk)]
    calls = ((_predict_task, (data, sha, c, cfg, __version__)) for c in chunks)
    for results in cluster.ordered(calls):
        yield from results


def timelines(cluster: Cluster, model: str | os.PathLike, videos: Sequence[str], every: float, cfg: Any
              ) -> Iterator[tuple[str, Any]]:
    """``(video, timeline dict or error message)`` per video, in order: one task per video."""
    data, sha = cluster.ship(model)
    calls = ((_timeline_task, (data, sha, str(v), every, cfg, __version__)) for v in videos)
    yield from zip([str(v) for v in videos], cluster.ordered(calls))
