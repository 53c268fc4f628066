"""One evaluation of one model: read the window, profile it, run the detectors.

The reference profile is built once per (reference data, columns, detector
configuration) and cached in memory and in ``STATE_DIR/references``; a
change of any of them — new files, a changed file, a different detector
parameter — gives a new cache key and a rebuild.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import pickle
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from detectors.base import Context, Detector, Finding
from detectors.errors import AtalaiaError, SourceError, SourceTimeout
from detectors.profile import Profile
from detectors.registry import Registry

from .config import Config, ModelConfig
from .cpus import usable_cpus
from .durations import floor_time
from .logs import source_fields
from .partition_store import PartitionStore
from .profiles import Columns, WindowProfiler, reference_profile
from .sources.parquet import ColumnKind, FileEntry, ParquetSink, coalesce, prefetch

__all__ = ["Evaluator", "Evaluation", "PROFILE_VERSION", "REFERENCE_FILE", "ReferenceBuildTimeout", "RunProgress",
           "cache_version", "limit_blas_threads"]

log = logging.getLogger("atalaia.evaluate")

#: bump when the profile layout or its meaning changes, so cached references are rebuilt
#: (2: PSI bins of a value holding more than a tenth of the reference; 3: a grid bin of its own for a
#: value holding more than a thousandth; 4: that bin holds its float32 neighbours, and a PSI bin of its own
#: for one holding half a tenth; 5: an atom's bin is one float64 wide, widened only for float32 data, and
#: float64 windows of a float32 reference are rounded to float32; 6: the multivariate model keeps the
#: eigenvectors it leaves out; 7: the counts keep distances beyond the edges, not sums of the values, and a
#: float64 value beyond float32 range is binned at float32's largest value instead of leaving its batch in float64)
PROFILE_VERSION = 7


@functools.cache
def cache_version() -> str:
    """What profiles cached on disk are tagged with: the layout version and the atalaia release, so an
    upgrade never reads profiles an older release counted."""
    try:
        release = importlib.metadata.version("atalaia")
    except importlib.metadata.PackageNotFoundError:  # a checkout that is not installed
        release = "unknown"
    return f"{PROFILE_VERSION}/{release}"


#: a cached reference profile: ``<model>-<the first 24 hex digits of its key>.pkl`` in ``STATE_DIR/references``
REFERENCE_FILE = re.compile(r"(?P<model>.+)-[0-9a-f]{24}\.pkl")


#: partition profiles kept per model for the next run, the newest first: at most two days of hourly
#: partitions and at most 64 MiB (each holds the grid counts of every column, about 16 KB per numeric
#: column: 64 MiB is 48 partitions of a model with about 80 numeric features); the rest are read every run
MAX_REUSED_PARTITIONS = 48
MAX_REUSED_BYTES = 64 * 2**20

#: rows per counted batch: small files are joined up to it, large ones cut to it (the per-batch
#: cost of a grid search is then small, and memory stays a few batches)
BATCH_ROWS = 262_144


def limit_blas_threads(threads: int = 1) -> None:
    """Keep the BLAS library (OpenBLAS, MKL) of this process at ``threads`` threads.

    The evaluator parallelises by column on its own pool.  A multi-threaded BLAS
    under it runs a second pool that busy-waits after every ``np.dot``: on two
    cores that doubled the CPU time of an evaluation (10.4 s against 6.0 s on
    a 10M-row window) and took the cycles from the model server beside us.
    Process-wide, so the commands call it once at start.  It reaches only the
    libraries already loaded: scipy ships its own OpenBLAS, loaded with
    ``scipy.special``, so that is imported first.
    """
    import scipy.special  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


@dataclass(kw_only=True)
class Evaluation:
    """What one run produced."""

    model: str
    window_start: datetime
    window_end: datetime
    findings: list[Finding]
    rows: int
    reference_rows: int
    errors: list[SourceError] = field(default_factory=list)
    duration_seconds: float = 0.0
    reference_cached: bool = False
    #: partitions whose profile was reused rather than read (see :class:`Evaluator`)
    partitions_reused: int = 0
    #: detectors that raised while scoring (logged with their traceback); the others' findings stand
    detector_failures: list[str] = field(default_factory=list)
    #: files of the reference or the window left out of this run as still being written (no footer yet,
    #: modified within ``in_progress_grace``): a later run reads them
    pending_files: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return "partial" if self.errors or self.detector_failures else "success"


class ReferenceBuildTimeout(AtalaiaError, TimeoutError):
    """The run's deadline passed while its reference profile was being built.

    Not a :class:`SourceError`: the build has no deadline, it went on and was cached, and the source
    answered throughout; the run ends as a timeout without a window read that could not finish."""


@dataclass
class RunProgress:
    """How far one run got, for the daemon to tell a slow reference build from a hung source when the
    run outlasts its timeout: ``reference_ready`` is set once the run has its reference profile."""

    reference_ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Reference:
    key: str
    profile: Profile
    summaries: list[Any]
    #: files skipped while building it: such a reference is used for its run only, never cached
    errors: list[SourceError] = field(default_factory=list)
    #: files left out as still being written (no footer yet, within ``in_progress_grace``)
    pending: list[str] = field(default_factory=list)


class Evaluator:
    """Evaluates one model; reusable across runs.

    It keeps the reference profile in memory and, with ``reuse_partitions``,
    the profile of every hive partition that lies wholly inside the window:
    a sliding window then reads only its edge partitions and the ones whose
    files changed (partition profiles merge like batches).  A partition is
    reused while its files keep their paths, sizes and modification times and
    the reference is the same; one with a skipped file is read again next run.
    With a ``partition_store`` the kept profiles are also written to disk and
    read back on the first run, so a restart does not read the whole window.
    """

    def __init__(self, *, config: Config, model: ModelConfig, registry: Registry | None = None,
                 monotonic: Callable[[], float] = time.monotonic, pool: Executor | None = None,
                 reuse_partitions: bool = True, partition_store: PartitionStore | None = None,
                 on_state_error: Callable[[str], None] | None = None) -> None:
        #: called with the store's name (``reference_cache``) when a write to the state dir fails
        self.on_state_error = on_state_error
        #: counts columns in parallel (NumPy releases the GIL); the daemon shares one across models
        self.pool = pool or ThreadPoolExecutor(max_workers=max(2, usable_cpus()),
                                               thread_name_prefix=f"atalaia-count-{model.name}")
        self.config = config
        self.model = model
        self.registry = registry or Registry()
        self.detectors: list[Detector] = [self.registry.create(d.type, **d.params) for d in model.detectors]
        self.monotonic = monotonic
        p = model.predictions
        self.columns = Columns(
            numeric=list(model.features.numeric), categorical=list(model.features.categorical),
            sensitive=list(model.sensitive), timestamp=p.timestamp, score=p.score, prediction=p.prediction,
            prediction_is_class=p.task != "regression")
        self._reference: _Reference | None = None
        self._building = False
        self._warned_empty: _Reference | None = None  # the reference of no rows last warned about
        storage = config.storage
        self._fs_options = {"endpoint_url": storage.endpoint_url, "region": storage.region,
                            "anonymous": storage.anonymous,
                            "connect_timeout": storage.connect_timeout.total_seconds(),
                            "request_timeout": storage.request_timeout.total_seconds()}
        self._reference_lock = threading.Lock()
        self.reuse_partitions = reuse_partitions
        self._partitions: dict[tuple[Any, ...], Profile] = {}
        self._partitions_lock = threading.Lock()
        self._store = partition_store
        self._store_loaded = False
        # of the files a reference range may take later rows into: whether each holds rows of the range
        self._holds_range: tuple[datetime, datetime] | None = None
        self._holds: dict[tuple[str, int, int], bool] = {}

    def predictions(self) -> ParquetSink:
        """A fresh handle on the prediction sink (one per run: an abandoned run keeps its own)."""
        p = self.model.predictions
        return ParquetSink.open(self.config.resolve(p.path), timestamp=p.timestamp,
                                in_progress_grace=_seconds(p.in_progress_grace), **self._fs_options)

    # -- columns --------------------------------------------------------------
    def window_columns(self) -> dict[str, ColumnKind]:
        c = self.columns
        cols: dict[str, ColumnKind] = {c.timestamp: "timestamp"} if c.timestamp else {}
        cols |= {n: "numeric" for n in c.numeric_targets}
        cols |= {n: "categorical" for n in c.categorical_targets}
        if any(d.uses_batches and "sensitive" in d.batch_fields for d in self.detectors):
            for n in c.sensitive:  # asked for only by a detector that reads them; a feature keeps its kind
                cols.setdefault(n, "categorical")
        return cols

    def config_key(self) -> str:
        """What the model's findings depend on in the configuration: its window, columns and detectors
        (types and parameters).  Findings stored under another key are not restored after a restart."""
        doc = {"window": self.model.window.total_seconds(), "columns": sorted(self.window_columns().items()),
               "roles": sorted(self.columns.roles().items()), "detectors": [d.key for d in self.detectors]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    # -- reference ------------------------------------------------------------
    def reference_range(self, at: datetime) -> tuple[datetime, datetime] | None:
        ref = self.model.reference
        if ref.rolling is not None:
            end = floor_time(at - self.model.window, self.model.reference_refresh)
            return end - ref.rolling, end
        if ref.start is not None and ref.end is not None:
            return ref.start, ref.end
        return None

    def _reference_sink(self, at: datetime) -> tuple[ParquetSink, datetime | None, datetime | None]:
        ref = self.model.reference
        if ref.path is not None:
            sink = ParquetSink.open(self.config.resolve(ref.path), timestamp=None,
                                    in_progress_grace=_seconds(ref.in_progress_grace), **self._fs_options)
            return sink, None, None
        start, end = self.reference_range(at)  # type: ignore[misc]
        return self.predictions(), start, end

    def describe_reference(self, at: datetime) -> str:
        """The reference of a run at ``at`` in words: its path, or its range of the prediction sink."""
        ref = self.model.reference
        if ref.path is not None:
            return f"reference {self.config.resolve(ref.path)}"
        start, end = self.reference_range(at)  # type: ignore[misc]
        kind = "rolling reference" if ref.rolling is not None else "reference"
        return f"{kind} {_iso(start)}..{_iso(end)} of {self.config.resolve(self.model.predictions.path)}"

    @property
    def building_reference(self) -> bool:
        """Whether a reference profile of this model is being built (its batches read and counted) now."""
        return self._building

    def reference(self, at: datetime) -> tuple[_Reference, bool]:
        """The reference profile and detector summaries; ``True`` when it came from a cache.

        A build has no deadline: when it outlasts the run's timeout the run is abandoned (outcome
        ``timeout``, reported as a reference build, not as a source error), but the build goes on and
        is cached for the next run.  One build at a time per model.  A reference of no rows is logged
        at WARNING each time it is built or read from the state dir.  Errors reading the reference's
        files say ``reference:``.
        """
        ref, cached, _ = self._reference_waited(at)
        return ref, cached

    def _reference_waited(self, at: datetime) -> tuple[_Reference, bool, bool]:
        """:meth:`reference`, and whether it waited for another run's build (one abandoned on its timeout)."""
        waited = not self._reference_lock.acquire(blocking=False)
        if waited:
            self._reference_lock.acquire()
        try:
            try:
                ref, cached = self._reference_locked(at)
            except SourceError as exc:
                if isinstance(exc, SourceTimeout):
                    raise
                raise _sink_error(exc, prefix="reference: ") from exc
            if ref.profile.n_rows == 0 and ref is not self._warned_empty:
                self._warned_empty = ref
                if ref.pending:  # its files are there, still being written: not "no rows"
                    log.warning("model %s: the %s has no rows yet: %d file(s) still being written were left out "
                                "(%s); every finding is insufficient_data until they are complete", self.model.name,
                                self.describe_reference(at), len(ref.pending), ", ".join(ref.pending[:3]))
                else:
                    log.warning("model %s: the %s has no rows: every finding is insufficient_data until it has "
                                "some", self.model.name, self.describe_reference(at))
            return ref, cached, waited
        finally:
            self._reference_lock.release()

    def _reference_locked(self, at: datetime) -> tuple[_Reference, bool]:
        sink, start, end = self._reference_sink(at)
        files = sink.files(start, end)
        key = self._reference_key(sink, files, start, end)
        if self._reference is not None and self._reference.key == key:
            return self._reference, True
        cache = self.config.state_path / "references" / f"{self.model.name}-{key[:24]}.pkl"
        if cache.exists():
            try:
                with cache.open("rb") as fh:
                    profile = pickle.load(fh)
                self._reference = _Reference(key, profile, [d.summarise(profile) for d in self.detectors])
                return self._reference, True
            except Exception as exc:  # a damaged cache is rebuilt, never fatal
                log.warning("rebuilding damaged reference cache %s: %s", cache, exc)
        columns = {n: k for n, k in self.window_columns().items() if not (k == "timestamp" and start is None)}
        if start is not None:
            columns[self.columns.timestamp] = "timestamp"  # type: ignore[index]
        # batch by batch: files may differ in column types (int and float, dictionary or not, timestamp units)
        self._building = True
        try:
            batches = list(sink.batches(columns=columns, start=start, end=end))
            profile = reference_profile(batches, columns=self.columns, detectors=self.detectors)
            del batches
        finally:
            self._building = False
        if sink.errors:
            for err in sink.errors:
                log.error("reference for model %s: skipped %s", self.model.name, err, extra=source_fields(err))
            # a file short of a column (or holding it under another type) is so for as long as its path, size
            # and modification time, which the key holds: the build is kept in memory under the key, its errors
            # reported on every run (and built once more after a restart, not cached on disk).  A reference
            # short of a file (a transient object-store error) is used for this run and built again on the
            # next: kept under the key of the complete files, it would stand for good
            # (a pending file makes it a build of this run only, as below: it is read, or reported, next run)
            lasting = all(e.reason in LASTING_REASONS for e in sink.errors) and not sink.pending
            self._reference = _Reference(key if lasting else f"{key}-partial-{uuid.uuid4().hex}", profile,
                                         [d.summarise(profile) for d in self.detectors], list(sink.errors),
                                         list(sink.pending))
            return self._reference, False
        if sink.pending:
            # a file still being written was left out: built again next run rather than cached without it, so
            # that it is read once complete, or reported corrupt should its writer die
            self._reference = _Reference(f"{key}-pending-{uuid.uuid4().hex}", profile,
                                         [d.summarise(profile) for d in self.detectors], pending=list(sink.pending))
            return self._reference, False
        tmp = cache.with_suffix(".tmp")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                pickle.dump(profile, fh, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(cache)
        except Exception as exc:  # a full or read-only disk: the profile is used from memory, rebuilt after a restart
            log.warning("cannot cache the reference profile in %s: %s", cache, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if self.on_state_error is not None:
                self.on_state_error("reference_cache")
        else:
            self._drop_other_references(cache)
        self._reference = _Reference(key, profile, [d.summarise(profile) for d in self.detectors])
        log.info("built reference profile for model %s from %d rows (%d files)", self.model.name,
                 profile.n_rows, len(files))
        return self._reference, False

    def _drop_other_references(self, cache: Path) -> None:
        """Remove this model's other cached references: a rolling reference is rebuilt every
        ``reference_refresh``, and each build would otherwise stay in the state dir for good."""
        with contextlib.suppress(OSError):
            for old in cache.parent.iterdir():
                if old != cache and (m := REFERENCE_FILE.fullmatch(old.name)) and m["model"] == self.model.name:
                    with contextlib.suppress(OSError):
                        old.unlink()

    def _reference_key(self, sink: ParquetSink, files: Sequence[FileEntry], start: datetime | None,
                       end: datetime | None) -> str:
        """What a reference build depends on: every file that holds rows of its range.

        A partition that ends by the range's end, or a file without partition keys last written
        before it, counts whatever it holds.  A partition holding the range's end (today's, in a sink
        partitioned by day) and files written since take new files all the time, mostly of later rows:
        each of those counts when its footer's timestamp statistics reach into the range (a late
        writer, a backfill, a corrected file), so new data after the range leaves the key, and the
        cached reference, alone.  The answer is kept per file and range (one footer read per file);
        the files not asked about yet are asked on up to :data:`FOOTER_READERS` threads of their own
        (one round trip each on an object store).  ``in_progress_grace`` is left out: a build short of
        a file (pending or skipped) is never cached, so the grace never changes a cached profile.
        """
        if end is not None:
            end_ns = int(end.timestamp()) * 10**9 + end.microsecond * 1000
            lo = start if start is not None else datetime.min.replace(tzinfo=UTC)
            if self._holds_range != (lo, end):
                self._holds_range, self._holds = (lo, end), {}

            def settled(f: FileEntry) -> bool:
                return f.span[1] <= end if f.span is not None else f.mtime_ns <= end_ns

            asks = {(f.path, f.size, f.mtime_ns): f for f in files if not settled(f)}
            asks = {k: f for k, f in asks.items() if k not in self._holds}
            self._holds |= _each(lambda f: sink.holds_rows(f, lo, end), asks, threads=FOOTER_READERS)
            files = [f for f in files if settled(f) or self._holds[(f.path, f.size, f.mtime_ns)]]
        doc = {
            "version": cache_version(),
            "reference": self.model.reference.model_dump(mode="json", exclude={"in_progress_grace"}),
            "range": [start.isoformat() if start else None, end.isoformat() if end else None],
            "files": [(f.path, f.size, f.mtime_ns) for f in files],
            "columns": sorted(self.window_columns().items()),
            "detectors": [d.key for d in self.detectors],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    # -- the run --------------------------------------------------------------
    def evaluate(self, *, at: datetime, deadline: float | None = None,
                 progress: RunProgress | None = None) -> Evaluation:
        """Evaluate the window ``[at - window, at)``.

        ``deadline`` (on the sink's clock, ``time.monotonic()``) bounds the window's reads; when it has passed
        by the time a reference profile this run built or waited for is ready (a slow build),
        :class:`ReferenceBuildTimeout` is raised rather than a source timeout on the window's first file."""
        t0 = self.monotonic()
        start, end = at - self.model.window, at
        ref, cached, waited = self._reference_waited(at)
        if progress is not None:
            progress.reference_ready.set()
        sink = self.predictions()
        if deadline is not None and (waited or not cached) and sink.clock() >= deadline:
            raise ReferenceBuildTimeout(
                f"the reference profile was ready only after {self.monotonic() - t0:.1f}s, past the run's timeout "
                f"({_duration(self.model.timeout)}): its build has no deadline and is kept, so the next run "
                f"reads only the window")
        try:
            files = sink.files(start, end)
        except SourceError as exc:
            if isinstance(exc, SourceTimeout):
                raise
            raise _sink_error(exc) from exc
        groups = self._groups(files, ref.key, start, end)
        # labels keep arriving for old partitions: a profile with labels joined is never reused; nor
        # are raw samples kept across runs (an exact test's memory would grow with every partition)
        reuse = self.reuse_partitions and self.columns.label is None \
            and not any(d.keeps_raw_values for d in self.detectors)
        with self._partitions_lock:
            if self._store is not None and not self._store_loaded:
                self._store_loaded = True
                if reuse:  # what this process kept already is as good and newer
                    self._partitions = self._store.load() | self._partitions
                else:  # nothing will be kept: stored profiles of an earlier configuration go
                    self._store.clear()
            known = {g.key: self._partitions[g.key] for g in groups if reuse and g.key in self._partitions}
        todo = [g for g in groups if g.key not in known]
        # the partitions a run may keep (see _kept: at most the newest MAX_REUSED_PARTITIONS of the window)
        spans = sorted((g for g in groups if g.key[0] is not None), key=lambda g: g.key[0][0], reverse=True)
        keepable = {g.key for g in spans[:MAX_REUSED_PARTITIONS]} if reuse else set()
        columns = self.window_columns()
        # the timestamp chooses the rows; its values only a detector reading them per batch needs
        need_timestamp = any(d.uses_batches and "timestamp" in d.batch_fields for d in self.detectors)

        def read() -> Iterator[tuple[int, pa.RecordBatch]]:
            for i, group in enumerate(todo):
                batches = sink.batches(columns=columns, start=start, end=end, deadline=deadline,
                                       batch_size=BATCH_ROWS, files=group.files, need_timestamp=need_timestamp)
                for batch in coalesce(batches, rows=BATCH_ROWS):
                    yield i, batch
                group.errors = list(sink.errors)
                group.pending = list(sink.pending)

        # each group is merged into the window's profile, in file order, as soon as it is complete (one
        # merge order whether a partition was read now or earlier): a run holds the group being counted and
        # those it may keep, not a profile per partition of the window
        profile = WindowProfiler(reference=ref.profile, columns=self.columns).profile
        complete = {n: known[g.key] for n, g in enumerate(groups) if g.key in known}
        position = {id(g): n for n, g in enumerate(groups)}
        merged = 0
        fresh: dict[tuple[Any, ...], Profile] = {}
        counting, profiler = -1, None

        def count_until(i: int) -> None:
            """Finish every group before ``todo[i]`` (a group without batches is empty) and start ``todo[i]``."""
            nonlocal profile, merged, counting, profiler
            while counting < i:
                if profiler is not None:
                    group = todo[counting]
                    complete[position[id(group)]] = profiler.profile
                    # a partition short of a file still being written is read again next run, not kept: were the
                    # writer to die, the file would be reported corrupt then instead of hidden behind a kept profile
                    if group.key in keepable and not group.errors and not group.pending:
                        fresh[group.key] = profiler.profile
                counting += 1
                profiler = WindowProfiler(reference=ref.profile, columns=self.columns, detectors=self.detectors,
                                          pool=self.pool) if counting < len(todo) else None
            while merged in complete:
                profile = profile.merge(complete.pop(merged))
                merged += 1

        try:
            # the read-ahead thread is named after the model (a thread dump of a daemon says whose read hangs)
            for i, batch in prefetch(read(), name=f"atalaia-read-{self.model.name}"):
                count_until(i)
                profiler.add(batch)  # type: ignore[union-attr]
            count_until(len(todo))
        except SourceTimeout:
            # the partitions finished before the deadline are kept: the next run goes on from them, so a
            # window that takes longer than the timeout to read cold is read over several runs
            if reuse:
                self._keep(fresh, ref.key, start)
            raise
        errors = [e for g in todo for e in g.errors]
        if reuse:
            self._keep(fresh, ref.key, start)
        for err in errors:
            log.error("model %s: skipped %s", self.model.name, err, extra=source_fields(err))
        errors = [*ref.errors, *errors]  # the reference's were logged as it was built
        ctx = Context(model=self.model.name, window_start=start, window_end=end)
        findings: list[Finding] = []
        failed: list[str] = []
        for det, summary in zip(self.detectors, ref.summaries, strict=True):
            try:
                findings += det.score(summary, profile, context=ctx)
            except Exception as exc:  # one failing detector (a plugin's, a kernel's edge case) costs only its findings
                log.exception("model %s: detector %s failed", self.model.name, det.name, extra={"detector": det.name})
                failed.append(f"detector {det.name} failed: {type(exc).__name__}: {exc}")
        return Evaluation(model=self.model.name, window_start=start, window_end=end, findings=findings,
                          rows=profile.n_rows, reference_rows=ref.profile.n_rows, errors=errors,
                          duration_seconds=self.monotonic() - t0, reference_cached=cached,
                          partitions_reused=len(known), detector_failures=failed,
                          pending_files=[*ref.pending, *(f for g in todo for f in g.pending)])

    def _keep(self, fresh: dict[tuple[Any, ...], Profile], reference_key: str, start: datetime) -> None:
        with self._partitions_lock:
            latest = self._reference.key if self._reference is not None else reference_key
            self._partitions = self._kept(self._partitions, fresh, reference_key=latest, start=start)
            if self._store is not None:
                self._store.sync(self._partitions)

    @staticmethod
    def _kept(kept: dict[tuple[Any, ...], Profile], new: dict[tuple[Any, ...], Profile], *, reference_key: str,
              start: datetime) -> dict[tuple[Any, ...], Profile]:
        """The partition profiles to keep after a run: the earlier ones and this run's finished ones
        (``new``; a group with a skipped file is left out by the caller), less those of another reference than
        ``reference_key`` (the evaluator's latest) or already slid out of the window, and of one span only this
        run's; the newest ``MAX_REUSED_PARTITIONS`` within ``MAX_REUSED_BYTES``.  Merging rather than replacing,
        against the latest reference rather than the run's, keeps a run abandoned on a timeout, which finishes
        later, from dropping what a newer run kept."""
        new = {k: v for k, v in new.items() if k[0] is not None and k[1] == reference_key}
        fresh_spans = {k[0] for k in new}
        out = {k: v for k, v in kept.items()
               if k[1] == reference_key and k[0][1] > start and k[0] not in fresh_spans}
        out |= new
        chosen: dict[tuple[Any, ...], Profile] = {}
        held = 0
        for k in sorted(out, key=lambda k: k[0][0], reverse=True)[:MAX_REUSED_PARTITIONS]:
            held += out[k].approx_bytes()
            if held > MAX_REUSED_BYTES:
                break
            chosen[k] = out[k]
        return chosen

    def _groups(self, files: Sequence[FileEntry], reference_key: str, start: datetime,
                end: datetime) -> list[_Group]:
        """The window's files in groups, in file order: one per hive partition wholly inside the
        window, and one for the rest.  Each group is profiled on its own and the groups are merged
        in order, so a result is the same to the last bit whether a partition was reused or read."""
        by_span: dict[Any, list[FileEntry]] = {}
        for f in files:
            inside = f.span is not None and start <= f.span[0] and f.span[1] <= end
            by_span.setdefault(f.span if inside else None, []).append(f)
        return [_Group(key=(span, reference_key, tuple((f.path, f.size, f.mtime_ns) for f in members))
                       if span is not None else (None,), files=members)
                for span, members in by_span.items()]


#: source errors a file keeps for as long as it is the same file (path, size, modification time): a reference
#: build with only these is kept (in memory) and its errors are reported on every run
LASTING_REASONS = frozenset({"missing_column", "retyped_column"})

#: at most this many footers are read at once for a reference's cache key (each is mostly waiting on IO)
FOOTER_READERS = 8


def _each(fn: Callable[[FileEntry], bool], files: dict[Any, FileEntry], *, threads: int) -> dict[Any, bool]:
    """``fn`` of each file, by key: on a pool of at most ``threads`` threads of its own, shut when done.

    Not the evaluator's counting pool: that one is sized for CPU work and shared by every model of a
    daemon, and a task waiting on tasks queued behind it in the same pool could wait for good."""
    if len(files) <= 1:
        return {k: fn(f) for k, f in files.items()}
    with ThreadPoolExecutor(max_workers=min(threads, len(files)), thread_name_prefix="atalaia-footer") as pool:
        return dict(zip(files, pool.map(fn, files.values()), strict=True))


#: the reasons of a :class:`SourceError` about a sink as a whole (a folder, a prefix or a file), not one of its files
_SINK_REASONS = ("missing", "unreachable")


def _sink_error(exc: SourceError, *, prefix: str = "") -> SourceError:
    """``exc`` said as ``prefix`` + its message, a sink as a whole labelled ``path=`` (SourceError labels any
    path ``file=``, and a sink is mostly a folder); ``path``, ``column`` and ``reason`` are kept."""
    text = str(exc)
    if exc.path and exc.reason in _SINK_REASONS and exc.column is None and text.endswith(f"(file={exc.path})"):
        text = text.removesuffix(f"(file={exc.path})") + f"(path={exc.path})"
    out = SourceError(prefix + text, reason=exc.reason)
    out.path, out.column = exc.path, exc.column
    return out


def _duration(d: timedelta) -> str:
    seconds = d.total_seconds()
    return f"{seconds:g}s"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seconds(d: timedelta | None) -> float | None:
    return None if d is None else d.total_seconds()


@dataclass
class _Group:
    """Files profiled together; ``key[0]`` is the partition span, ``None`` for files read every run."""

    key: tuple[Any, ...]
    files: list[FileEntry]
    errors: list[SourceError] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # files left for a later run (still being written)
