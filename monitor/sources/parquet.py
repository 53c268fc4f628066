"""Parquet sinks: hive partitions pruned to a window, only the needed columns, streamed.

A sink is a directory of Parquet files (optionally hive-partitioned by time,
e.g. ``date=2026-11-27/hour=13``), a single file, or an ``s3://`` prefix.  A
directory's files are read when named ``*.parquet``, ``*.parq`` or ``*.pq`` in
any case, or without an extension (:func:`parquet_name`).
:meth:`ParquetSink.batches` yields record batches of the requested columns
for rows whose timestamp lies in ``[start, end)``.  Files whose partition
keys place them wholly outside the window are never opened.

Each file is checked against the expected columns before it is read.  A
column the file lacks, holds twice or holds under an unusable type is left
out of that file's batches and reported as a
:class:`~detectors.errors.SourceError` naming the file and column; the
file's other columns are read.  A file that is corrupt, or whose timestamp
column is unusable, is *skipped* and reported the same way — the rest of the
window is still read.  Batches are handed on as they are read, so a file that
fails part way has had its earlier batches counted: its error says how many
of its rows were read and counted before the failure.

A requested column a file does not hold but its directories name as a hive
key (Spark's ``partitionBy("country")`` writes ``country=US/part-0.parquet``
without the column) is read from the key: the same value on every row.

Rows are taken to honour their partition keys: a partition whose span lies
wholly inside the window is read without a row filter.  In other files the
timestamp statistics of each row group drop the groups outside the window
and spare the filter for those wholly inside it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from detectors.errors import SourceError, SourceTimeout

from ..arrow import compute, scalar

log = logging.getLogger("atalaia.sources")

__all__ = ["ColumnKind", "FileEntry", "ParquetSink", "coalesce", "join_labels", "label_lookup", "make_filesystem",
           "parquet_name", "partition_range", "prefetch"]

ColumnKind = Literal["timestamp", "numeric", "categorical", "any"]

#: A file without a readable footer modified less than this long ago is taken as still being written
#: (a ``ParquetWriter`` appending row groups writes the footer when it closes): it is left for a later
#: run without a source error.  Older, it is ``corrupt``.  The default of a sink's ``in_progress_grace``
#: (:attr:`ParquetSink.in_progress_grace`, the configuration key of the same name).
IN_PROGRESS_SECONDS = 300.0

#: the extensions of the files a sink directory reads, in any case; a name without an extension is read too
PARQUET_EXTENSIONS = ("parquet", "parq", "pq")
#: which files a sink directory reads, in words (said when a window's files are all passed over by name)
READ_NAMES = ("a sink reads names ending in .parquet, .parq or .pq (any case) and names without an extension "
              "(as Hive, Trino and Athena write), not other extensions, empty extension-less files, nor names "
              "starting with _ or .")

_DAY_KEYS = ("date", "dt", "day", "ds")
_KEY_VALUE = re.compile(r"^([^=/]+)=([^/]*)$")


def make_filesystem(uri: str, *, endpoint_url: str | None = None, region: str | None = None,
                    anonymous: bool = False, connect_timeout: float = 10.0,
                    request_timeout: float = 30.0) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path for a local path or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        kwargs: dict[str, object] = {"connect_timeout": connect_timeout, "request_timeout": request_timeout,
                                     "anonymous": anonymous}
        if region:
            kwargs["region"] = region
        if endpoint_url:
            scheme, _, host = endpoint_url.partition("://")
            if not host:
                scheme, host = "https", endpoint_url
            kwargs["endpoint_override"] = host.rstrip("/")
            kwargs["scheme"] = scheme
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):].rstrip("/")
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def partition_range(keys: Mapping[str, str]) -> tuple[datetime, datetime] | None:
    """The time span a hive partition covers, from keys like date=/dt=/year=/month=/day= and hour=.

    >>> partition_range({"date": "2026-11-27", "hour": "13"})[0].isoformat()
    '2026-11-27T13:00:00+00:00'
    >>> partition_range({"region": "eu"}) is None
    True
    """
    day: date | None = None
    try:
        for k in _DAY_KEYS:
            if k in keys and ("-" in keys[k] or len(keys[k]) == 8):
                v = keys[k]
                day = date.fromisoformat(v if "-" in v else f"{v[:4]}-{v[4:6]}-{v[6:]}")
                break
        if day is None and "year" in keys:
            y = int(keys["year"])
            if "month" not in keys:
                return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
            m = int(keys["month"])
            if "day" not in keys:
                start = datetime(y, m, 1, tzinfo=UTC)
                return start, datetime(y + m // 12, m % 12 + 1, 1, tzinfo=UTC)
            day = date(y, m, int(keys["day"]))
        if day is None:
            return None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if "hour" in keys:
            hour = int(keys["hour"])
            if not 0 <= hour <= 23:  # not an hour of that day: read with the row filter, not pruned by a guess
                return None
            start += timedelta(hours=hour)
            return start, start + timedelta(hours=1)
        return start, start + timedelta(days=1)
    except ValueError:
        return None


def parquet_name(name: str, size: int | None = None) -> bool:
    """Whether a file of a sink directory named ``name`` (and of ``size`` bytes, where known) is read as Parquet:
    ``.parquet``, ``.parq`` or ``.pq`` in any case, or no extension at all (Hive's ``000000_0``, Trino's and
    Athena's ``20261127_110512_00042_abcde``; one that is no Parquet is then reported ``corrupt``).  Other
    extensions (``.json``, ``.csv``, ``.crc``) are another format; an empty extension-less file is a marker
    (Hadoop's ``hour=11_$folder$``, a flag), and a Parquet file holds at least 12 bytes.  (Names starting with
    ``_`` or ``.``, bookkeeping and temporary files, are left out before the name is looked at.)

    >>> [parquet_name(n) for n in ("part-0.parquet", "part-1.PARQUET", "x.Pq", "20261127_110512_00042_abcde")]
    [True, True, True, True]
    >>> [parquet_name(n) for n in ("schema.json", "rows.csv", "part-0.parquet.crc", "part-0.c000")]
    [False, False, False, False]
    >>> parquet_name("hour=11_$folder$", 0), parquet_name("000000_0", 0), parquet_name("000000_0", None)
    (False, False, True)
    """
    stem, dot, extension = name.rpartition(".")
    if dot and stem:
        return extension.lower() in PARQUET_EXTENSIONS
    return size != 0


#: the value Hive and Spark write for a null partition key
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int
    span: tuple[datetime, datetime] | None
    #: the hive ``key=value`` pairs of the directories above the file (a column written with Spark's
    #: ``partitionBy`` lives only there): a requested column the file lacks is read from them
    keys: tuple[tuple[str, str], ...] = ()


@dataclass
class ParquetSink:
    """One Parquet sink (predictions, ground truth or a reference dataset).

    ``errors`` collects the files skipped by the last call to :meth:`batches`.
    ``deadline`` (a ``time.monotonic()`` value) makes reads give up with a
    :class:`SourceTimeout` between files and batches.
    """

    uri: str
    timestamp: str | None
    filesystem: pafs.FileSystem
    root: str
    errors: list[SourceError] = field(default_factory=list)
    #: files the last call to :meth:`batches` left for a later run (still being written)
    pending: list[str] = field(default_factory=list)
    #: files in the span the last call to :meth:`files` listed that were not read for their name (see
    #: :func:`parquet_name`); said in a warning when they leave nothing to read
    passed_over: list[str] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    #: the wall clock files' modification times are compared with (see :data:`IN_PROGRESS_SECONDS`)
    wall_clock: Callable[[], float] = time.time
    #: seconds a file without a footer is taken as still being written after its last modification;
    #: ``None``: :data:`IN_PROGRESS_SECONDS`; ``0``: never (every footerless file is ``corrupt``)
    in_progress_grace: float | None = None

    @classmethod
    def open(cls, uri: str, *, timestamp: str | None, in_progress_grace: float | None = None,
             **fs_options: object) -> ParquetSink:
        fs, root = make_filesystem(uri, **fs_options)  # type: ignore[arg-type]
        return cls(uri=uri, timestamp=timestamp, filesystem=fs, root=root, in_progress_grace=in_progress_grace)

    # -- discovery ------------------------------------------------------------
    def files(self, start: datetime | None = None, end: datetime | None = None) -> list[FileEntry]:
        """Parquet files under the sink whose partition span overlaps ``[start, end)``."""
        try:
            info = self.filesystem.get_file_info(self.root)
        except OSError as exc:
            raise SourceError(f"cannot reach the sink: {exc}", path=self.uri, reason="unreachable") from None
        if info.type == pafs.FileType.NotFound:
            raise SourceError("the sink does not exist", path=self.uri, reason="missing")
        if info.type == pafs.FileType.File:
            infos = [info]
        else:
            try:
                infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True))
            except OSError as exc:
                raise SourceError(f"cannot list the sink: {exc}", path=self.uri, reason="unreachable") from None
        out: list[FileEntry] = []
        passed_over: list[str] = []
        for fi in infos:
            if fi.type != pafs.FileType.File:
                continue
            rel = fi.path[len(self.root):].lstrip("/") if fi.path.startswith(self.root) else fi.base_name
            parts = rel.split("/")
            if any(p.startswith((".", "_")) for p in parts):
                continue  # bookkeeping (_SUCCESS, .part-0.parquet.crc), hidden and temporary names: never read
            # hive and Spark escape a key's value in the directory name (a/b as a%2Fb): values are unescaped
            keys = {k: unquote(v) for p in parts[:-1] if (m := _KEY_VALUE.match(p)) for k, v in [m.groups()]}
            span = partition_range(keys)
            if start is not None and end is not None and span is not None and (span[1] <= start or span[0] >= end):
                continue
            if info.type != pafs.FileType.File and not parquet_name(fi.base_name, fi.size):
                passed_over.append(fi.path)  # in the window, but not read for its name
                continue
            out.append(FileEntry(fi.path, fi.size or 0, fi.mtime_ns or 0, span, tuple(keys.items())))
        out.sort(key=lambda f: f.path)
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            out = _without_aliases(out)
        self.passed_over = sorted(passed_over)
        if self.passed_over:
            n = len(self.passed_over)
            shown = ", ".join(os.path.basename(f) for f in self.passed_over[:3]) + (f" and {n - 3} more" if n > 3 else "")
            # beside Parquet files they are mostly a writer's other output (a schema .json, a manifest .csv);
            # alone they leave the run nothing to read, and it says why
            if out:
                log.debug("%s: %d file%s passed over by name (%s)", self.uri, n, "" if n == 1 else "s", shown)
            else:
                when = "" if start is None or end is None else f" for {_iso(start)}..{_iso(end)}"
                log.warning("%s: no Parquet file to read%s: %d file%s passed over by name (%s); %s", self.uri, when,
                            n, "" if n == 1 else "s", shown, READ_NAMES)
        return out

    # -- reading --------------------------------------------------------------
    def batches(self, *, columns: Mapping[str, ColumnKind], start: datetime | None = None,
                end: datetime | None = None, batch_size: int = 262_144, deadline: float | None = None,
                files: Sequence[FileEntry] | None = None, need_timestamp: bool = True) -> Iterator[pa.RecordBatch]:
        """Record batches of ``columns`` for rows with ``start <= timestamp < end``.

        ``files``: read these (from :meth:`files`) instead of listing the sink.
        ``need_timestamp=False``: the caller wants the timestamp column only to choose the rows, so it is not
        decoded where the footer settles that: row groups wholly inside the window (a partition inside it, or
        a group whose statistics lie inside it) that the footer counts no null timestamps in come without
        the column (decoding timestamps costs about a fifth of reading a wide table).
        Bad files are skipped and appended to :attr:`errors`.
        """
        self.errors = []
        self.pending = []
        names = list(dict.fromkeys(columns))
        if self.timestamp and (start is not None or end is not None) and self.timestamp not in names:
            raise ValueError("the timestamp column must be among the requested columns to filter on it")
        for entry in self.files(start, end) if files is None else files:
            self._check_deadline(deadline, entry.path)
            try:
                source = self.filesystem.open_input_file(entry.path)
            except OSError as exc:
                self.errors.append(SourceError(f"unreadable Parquet file: {_short(exc)}", path=entry.path,
                                               reason="corrupt"))
                continue
            with source:
                yield from self._file_batches(entry, source, columns=columns, names=names, start=start, end=end,
                                              batch_size=batch_size, deadline=deadline,
                                              need_timestamp=need_timestamp)

    def holds_rows(self, entry: FileEntry, start: datetime, end: datetime) -> bool:
        """Whether a file holds rows with ``start <= timestamp < end``: by its footer's timestamp
        statistics, and for row groups they cannot settle (no statistics, as Spark's INT96
        timestamps have, or groups straddling an end) by their timestamp column.  An unreadable
        file may."""
        if not self.timestamp:
            return True
        try:
            with self.filesystem.open_input_file(entry.path) as source:
                pf = pq.ParquetFile(source)
                whole, partly = _row_groups(pf, self.timestamp, start, end)
                if whole:
                    return True
                for batch in pf.iter_batches(columns=[self.timestamp], row_groups=partly) if partly else ():
                    if compute().any(self._mask(batch, start, end)).as_py():
                        return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, AttributeError, KeyError, TypeError,
                ValueError):  # unreadable, or no timestamp column there: the read of the reference says which
            return True
        return False

    def _file_batches(self, entry: FileEntry, source: pa.NativeFile, *, columns: Mapping[str, ColumnKind],
                      names: list[str], start: datetime | None, end: datetime | None, batch_size: int,
                      deadline: float | None, need_timestamp: bool = True) -> Iterator[pa.RecordBatch]:
        # an object store: a row group's column chunks fetched in a few coalesced requests (one row group at a
        # time, below, so a file is never buffered whole); a local file is read as it is decoded
        remote = not isinstance(self.filesystem, pafs.LocalFileSystem)
        try:
            pf = pq.ParquetFile(source, pre_buffer=remote)
            schema = pf.schema_arrow
        except (pa.ArrowInvalid, OSError) as exc:
            age = self.wall_clock() - entry.mtime_ns / 1e9
            grace = IN_PROGRESS_SECONDS if self.in_progress_grace is None else self.in_progress_grace
            if grace > 0 and age < grace:  # a writer appending row groups writes the footer last
                log.info("%s: no readable footer yet, modified %.0f s ago (in_progress_grace %.0f s): taken as "
                         "still being written and left for a later run (%s)", entry.path, max(age, 0.0), grace,
                         _short(exc), extra={"file": entry.path})
                self.pending.append(entry.path)
                return
            # a name without an extension is read as Parquet (Hive, Trino, Athena): such a file may be another
            # format, which the message says
            why = "" if "." in entry.path.rsplit("/", 1)[-1].lstrip(".") else \
                " (a name without an extension is read as Parquet)"
            self.errors.append(SourceError(f"unreadable Parquet file{why}: {_short(exc)}", path=entry.path,
                                           reason="corrupt"))
            return
        if pf.metadata.num_rows == 0:  # a job that wrote nothing (often no columns either): nothing to read
            return
        keys = {k: v for k, v in entry.keys if schema.get_field_index(k) < 0 and k in columns}
        problems = _schema_problems(schema, {n: k for n, k in columns.items() if n not in keys}, entry.path)
        constants, bad_keys = _key_columns(keys, columns, entry.path)
        problems += bad_keys
        names = [n for n in names if n not in keys]
        if problems:
            # a column the file lacks or holds unusably costs that column, not the file: the model's other
            # columns keep its rows.  Without its timestamp (or with nothing left) the file is skipped.
            self.errors.extend(problems)
            bad = {e.column for e in problems}
            names = [n for n in names if n not in bad]
            if self.timestamp in bad or not names:
                return
        # a partition whose span lies wholly inside the window needs no row filter: its rows are
        # taken to honour their partition keys (the filter costs 20-50 % of the decode)
        inside = entry.span is not None and start is not None and end is not None \
            and start <= entry.span[0] and entry.span[1] <= end
        if inside or not self.timestamp or (start is None and end is None):
            plan = [(list(range(pf.metadata.num_row_groups)), False)]
        else:
            whole, partly = _row_groups(pf, self.timestamp, start, end)
            plan = [(whole, False), (partly, True)]
        windowed = bool(self.timestamp) and (start is not None or end is not None)
        undated = 0  # rows without a timestamp belong to no window: left out, and said
        # a file that fails part way has had its earlier batches counted by the consumer (a stream cannot take
        # them back): its error says how many rows were read and counted, not that it was skipped
        decoded = counted = 0
        try:
            for groups, needs_filter in plan:
                if not groups:
                    continue
                read = names
                if not need_timestamp and not needs_filter and self.timestamp in names and len(names) > 1 \
                        and (not windowed or _all_dated(pf, self.timestamp, groups)):
                    read = [n for n in names if n != self.timestamp]
                batches = (b for chunk in ([[g] for g in groups] if remote else [groups])
                           for b in pf.iter_batches(batch_size=batch_size, row_groups=chunk, columns=read,
                                                    use_threads=True))
                for batch in batches:
                    decoded += batch.num_rows
                    if windowed and read is names and (nulls := batch.column(self.timestamp).null_count):
                        undated += nulls
                        if not needs_filter:
                            batch = batch.filter(compute().is_valid(batch.column(self.timestamp)))
                    if needs_filter:
                        batch = batch.filter(self._mask(batch, start, end))
                    for name, value in constants.items():
                        batch = batch.append_column(name, pa.repeat(value, batch.num_rows))
                    if batch.num_rows:
                        counted += batch.num_rows
                        yield batch
                    self._check_deadline(deadline, entry.path)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            if isinstance(exc, SourceTimeout):
                raise
            self.errors.append(SourceError(_read_failure(exc, decoded=decoded, counted=counted,
                                                         rows=pf.metadata.num_rows), path=entry.path,
                                           reason="corrupt"))
        if undated:
            log.warning("%s: left out %d rows whose %s is null", entry.path, undated, self.timestamp,
                        extra={"file": entry.path, "column": self.timestamp})

    def read_table(self, *, columns: Mapping[str, ColumnKind], start: datetime | None = None,
                   end: datetime | None = None, deadline: float | None = None) -> pa.Table:
        """All matching rows as one table, for bounded data (label lookups).  The batches are joined as they
        come, so the files must agree on column types; the reference is profiled batch by batch instead."""
        batches = list(self.batches(columns=columns, start=start, end=end, deadline=deadline))
        schema = batches[0].schema if batches else pa.schema([(c, pa.null()) for c in columns])
        return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()

    def _mask(self, batch: pa.RecordBatch, start: datetime | None, end: datetime | None) -> pa.Array:
        """``start <= timestamp < end`` for each row (null timestamps are left out)."""
        col = batch.column(self.timestamp)  # type: ignore[arg-type]
        typ = col.type
        mask = None
        if start is not None:
            mask = compute().greater_equal(col, scalar(_in_unit(start, typ.unit, ceil=True), typ))
        if end is not None:
            below = compute().less(col, scalar(_in_unit(end, typ.unit, ceil=True), typ))
            mask = below if mask is None else compute().and_(mask, below)
        return mask

    def _check_deadline(self, deadline: float | None, path: str) -> None:
        if deadline is not None and self.clock() > deadline:
            raise SourceTimeout("the source did not finish within its timeout", path=path)


def _without_aliases(files: list[FileEntry]) -> list[FileEntry]:
    """Local files reached twice through a symbolic link (a ``latest`` link to the newest partition, a link
    loop) counted once: under their real path when it is listed, else under the first path."""
    chosen: dict[str, FileEntry] = {}
    for f in files:
        real = os.path.realpath(f.path)
        held = chosen.get(real)
        if held is None or (f.path == real and held.path != real):
            chosen[real] = f
    if len(chosen) == len(files):
        return files
    log.debug("%d files listed more than once through symbolic links, each counted once",
              len(files) - len(chosen))
    return sorted(chosen.values(), key=lambda f: f.path)


def _read_failure(exc: BaseException, *, decoded: int, counted: int, rows: int) -> str:
    """The message of a file that failed while its row groups were read, after ``decoded`` of its ``rows`` rows
    had been read and ``counted`` of them (those in the window) handed on.  The run logs it after "skipped ":
    a file that handed nothing on was skipped; one that did was skipped only from the failure on.

    >>> _read_failure(OSError("bad page"), decoded=0, counted=0, rows=600_000)
    'the file, which failed while reading: bad page'
    >>> _read_failure(OSError("bad page"), decoded=262_144, counted=262_144, rows=600_000)
    'the rest of the file: 262,144 of its 600,000 rows were read and counted, then it failed: bad page'
    >>> _read_failure(OSError("bad page"), decoded=262_144, counted=1_000, rows=600_000)
    'the rest of the file: 262,144 of its 600,000 rows were read (1,000 of them in the window, counted), then it failed: bad page'
    """
    if not counted:
        return f"the file, which failed while reading: {_short(exc)}"
    read = "were read and counted" if counted == decoded else f"were read ({counted:,} of them in the window, counted)"
    return f"the rest of the file: {decoded:,} of its {rows:,} rows {read}, then it failed: {_short(exc)}"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _in_unit(t: datetime, unit: str, *, ceil: bool) -> int:
    """``t`` as an integer count of ``unit`` since the epoch, rounded up when ``ceil``.

    With ``n = _in_unit(t, unit, ceil=True)``: ``v >= n`` exactly when the time ``v`` is at or
    after ``t``, and ``v < n`` exactly when it is before ``t``.
    """
    us = (t.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    if unit == "ns":
        return us * 1000
    per = {"s": 1_000_000, "ms": 1000, "us": 1}[unit]
    return -(-us // per) if ceil else us // per


_PARQUET_UNITS = {"MILLIS": "ms", "MICROS": "us", "NANOS": "ns", "milliseconds": "ms", "microseconds": "us",
                  "nanoseconds": "ns"}


def _leaf(md: pq.FileMetaData, name: str) -> int | None:
    """The index of the top-level column ``name`` among the file's leaf columns."""
    return next((j for j in range(md.num_columns) if md.schema.column(j).path == name), None)


def _all_dated(pf: pq.ParquetFile, timestamp: str, groups: Sequence[int]) -> bool:
    """Whether the footer counts no null ``timestamp`` in any of the row ``groups`` (no statistics: unknown)."""
    md = pf.metadata
    leaf = _leaf(md, timestamp)
    if leaf is None:
        return False
    for i in groups:
        st = md.row_group(i).column(leaf).statistics
        if st is None or not st.has_null_count or st.null_count != 0:
            return False
    return True


def _row_groups(pf: pq.ParquetFile, timestamp: str, start: datetime | None,
                end: datetime | None) -> tuple[list[int], list[int]]:
    """The row groups of a file as (wholly inside ``[start, end)``, partly inside), by their timestamp
    statistics; groups wholly outside are left out.  Without usable statistics every group is "partly"."""
    md = pf.metadata
    groups = list(range(md.num_row_groups))
    leaf = _leaf(md, timestamp)
    unit = None
    if leaf is not None and md.schema.column(leaf).physical_type == "INT64":
        logical = json.loads(md.schema.column(leaf).logical_type.to_json() or "{}")
        unit = _PARQUET_UNITS.get(logical.get("timeUnit", "")) if logical.get("Type") == "Timestamp" else None
    if unit is None:
        return [], groups
    lo = _in_unit(start, unit, ceil=True) if start is not None else None
    hi = _in_unit(end, unit, ceil=True) if end is not None else None
    whole, partly = [], []
    for i in groups:
        st = md.row_group(i).column(leaf).statistics
        if st is None or not st.has_min_max:
            partly.append(i)
            continue
        first, last = st.min_raw, st.max_raw
        if (hi is not None and first >= hi) or (lo is not None and last < lo):
            continue
        if (lo is None or first >= lo) and (hi is None or last < hi) and st.null_count == 0:
            whole.append(i)
        else:
            partly.append(i)
    return whole, partly


def _key_columns(keys: Mapping[str, str], columns: Mapping[str, ColumnKind], path: str
                 ) -> tuple[dict[str, pa.Scalar], list[SourceError]]:
    """The requested columns a file holds only as hive keys, as constants of their kind: a category as
    the string, a number parsed (``__HIVE_DEFAULT_PARTITION__`` is null); and an error per key that is
    no number where a number is expected, or names the timestamp."""
    out: dict[str, pa.Scalar] = {}
    problems: list[SourceError] = []
    for name, text in keys.items():
        kind = columns[name]
        null = text == HIVE_NULL
        if kind == "numeric":
            try:
                out[name] = pa.scalar(None if null else float(text), pa.float64())
            except ValueError:
                problems.append(SourceError(f"partition key {name}={text!r} is no number", path=path, column=name,
                                            reason="retyped_column"))
        elif kind in ("categorical", "any"):
            out[name] = pa.scalar(None if null else text, pa.string())
        else:
            problems.append(SourceError(f"column is only a partition key ({name}={text!r}), expected {kind}",
                                        path=path, column=name, reason="retyped_column"))
    return out, problems


def _schema_problems(schema: pa.Schema, columns: Mapping[str, ColumnKind], path: str) -> list[SourceError]:
    """Every requested column the file lacks, holds twice or holds under an unusable type, one error each."""
    out: list[SourceError] = []
    for name, kind in columns.items():
        found = schema.get_all_field_indices(name)
        if not found:
            out.append(SourceError("missing column", path=path, column=name, reason="missing_column"))
            continue
        if len(found) > 1:
            out.append(SourceError(f"column appears {len(found)} times (which one is meant?)", path=path,
                                   column=name, reason="retyped_column"))
            continue
        typ = schema.field(found[0]).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if pa.types.is_null(typ) and kind in ("numeric", "categorical"):
            continue  # every value missing (pandas writes an all-None column so): counted as missing
        ok = {
            "timestamp": pa.types.is_timestamp(typ),
            "numeric": pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)
            or pa.types.is_decimal(typ),
            # floats too: an integer column with a missing value is float64 from pandas (whole numbers are
            # read as the integers, NaN as missing: monitor.arrow.float_categories)
            "categorical": pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)
            or pa.types.is_boolean(typ) or pa.types.is_floating(typ),
            "any": True,
        }[kind]
        if not ok:
            out.append(SourceError(f"column has type {typ}, expected {kind}", path=path, column=name,
                                   reason="retyped_column"))
    return out


def label_lookup(table: pa.Table, *, id_column: str, label_column: str,
                 timestamp: str | None = None) -> tuple[pa.Array, pa.Array]:
    """Unique ids and their labels; when an id has several labels the latest arrival wins."""
    if table.num_rows == 0:
        return pa.nulls(0, type=table.schema.field(id_column).type), pa.nulls(0, type=pa.float64())
    if timestamp:
        table = table.sort_by([(timestamp, "descending")])
    ids = table.column(id_column).combine_chunks()
    labels = table.column(label_column).combine_chunks()
    # index_in on the unique ids, then keep the first (latest) occurrence of each id
    uniq = compute().unique(ids)
    first = compute().index_in(uniq, value_set=ids)
    return uniq, compute().take(labels, first)


def join_labels(ids: pa.Array, lookup: tuple[pa.Array, pa.Array]) -> pa.Array:
    """The label of each prediction id (null where no label has arrived)."""
    uniq, labels = lookup
    if len(uniq) == 0:
        return pa.nulls(len(ids), type=labels.type if len(labels) else pa.float64())
    idx = compute().index_in(ids, value_set=uniq)
    return compute().take(labels, idx)


def coalesce(batches: Iterable[pa.RecordBatch], *, rows: int) -> Iterator[pa.RecordBatch]:
    """Consecutive batches joined until each holds at least ``rows`` rows (the last may hold fewer).

    Small files give small batches, and each batch costs its consumer a fixed
    amount (a search of every grid edge per column): joining them keeps that
    cost per ``rows`` rows.  A change of schema between files ends a batch;
    dictionary columns are unified.  Memory: at most ``rows`` plus one batch.

    >>> b = pa.record_batch({"x": [1.0, 2.0]})
    >>> [x.num_rows for x in coalesce([b, b, b], rows=3)]
    [4, 2]
    """
    pending: list[pa.RecordBatch] = []
    held = 0

    def joined() -> pa.RecordBatch:
        if len(pending) == 1:
            return pending[0]
        return pa.Table.from_batches(pending).combine_chunks().to_batches()[0]

    for batch in batches:
        if pending and not batch.schema.equals(pending[0].schema):
            yield joined()
            pending, held = [], 0
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield joined()
            pending, held = [], 0
    if pending:
        yield joined()


def prefetch(batches: Iterator[pa.RecordBatch], *, depth: int = 2,
             name: str = "atalaia-read") -> Iterator[pa.RecordBatch]:
    """Read ahead on a helper thread so decoding overlaps with profiling (both release the GIL).

    ``depth`` batches wait at most: 1 to 4 run equally fast (interleaved runs at 1M and 10M
    rows), and each one more holds a batch longer (Arrow's peak grew by 10-20 MB from 2 to 4).
    Exceptions raised by the reader are re-raised in the consumer; closing the
    consumer early stops the reader.  ``name``: the reader thread's (a thread dump shows whose read it is).
    """
    import queue
    import threading

    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        """Hand ``item`` over unless the consumer has gone (then the queue may stay full for good)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for b in batches:
                if not put(("batch", b)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))

    # a copy of the consumer's context: the reader's log lines name the model whose run it reads for
    t = threading.Thread(target=contextvars.copy_context().run, args=(produce,), name=name, daemon=True)
    t.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "batch":
                yield item  # type: ignore[misc]
            elif kind == "error":
                raise item  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
