"""Arrow record batches → mergeable profiles (the only place Arrow meets the detectors).

:func:`reference_profile` summarises a (bounded) reference table once;
:class:`WindowProfiler` turns each record batch of the current window into
partial counts on the reference grids and merges them, so memory does not
grow with the window.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import pyarrow as pa

from detectors.base import Batch, Detector, batch_extras
from detectors.profile import (
    CELLS,
    CategoricalCounts,
    CategoricalReference,
    NumericCounts,
    NumericReference,
    Profile,
)

from .arrow import category_values, compute, filled, labels, values_view
from .columns import Columns

__all__ = ["Columns", "reference_profile", "WindowProfiler", "cells_count_faster", "concat_batches", "to_batch"]


def numeric_values(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """A float array (NaN for nulls; zero-copy for null-free float columns) and the null count."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not pa.types.is_floating(col.type):  # integers beyond 2**53 round to the nearest float
        col = compute().cast(col, pa.float64(), safe=False)
    return filled(col, np.nan), col.null_count


def category_counts(col: pa.Array | pa.ChunkedArray) -> CategoricalCounts:
    """Counts per category: ``bincount`` over dictionary codes or small integers, else Arrow's hash kernel.
    Of :func:`~monitor.arrow.category_values`: a float column's whole numbers are integer categories and
    its NaNs missing, a boolean column's values the categories ``1`` and ``0``.

    >>> sorted(category_counts(pa.array([True, False, None, True])).counts.items())
    [('0', 1), ('1', 2)]
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    col = category_values(col)
    n_null = col.null_count
    if pa.types.is_dictionary(col.type):
        codes = values_view(compute().drop_null(col.indices) if n_null else col.indices)
        counts = np.bincount(codes, minlength=len(col.dictionary))
        return _from_bincount(col.dictionary.to_pylist(), counts, n_null)
    if pa.types.is_integer(col.type) and len(col) > 0:
        values = values_view(compute().drop_null(col) if n_null else col)
        if values.size:
            lo, hi = int(values.min()), int(values.max())
            if hi - lo < 65536:
                # offsets in the platform integer (int8 -100..100 would wrap in int8); unsigned values
                # beyond it (hashed ids >= 2**63) are offset in their own type, where they cannot wrap
                offsets = np.subtract(values, lo, dtype=np.intp) if values.dtype.kind == "i" \
                    else (values - values.dtype.type(lo)).astype(np.intp)
                counts = np.bincount(offsets, minlength=hi - lo + 1)
                return _from_bincount(range(lo, hi + 1), counts, n_null)
    vc = compute().value_counts(col)
    values = vc.field("values").to_pylist()
    counts = vc.field("counts").to_pylist()
    out: dict[str, int] = {}
    n_null = 0
    for v, c in zip(values, counts, strict=True):
        if v is None:
            n_null += c
        else:
            key = str(v)
            out[key] = out.get(key, 0) + c
    return CategoricalCounts(counts=out, n_null=n_null)


def _from_bincount(values: Sequence[object], counts: np.ndarray, n_null: int) -> CategoricalCounts:
    """Counts per code as counts per category; a code whose value is null (a dictionary may hold one)
    counts as null."""
    out: dict[str, int] = {}
    for i in np.flatnonzero(counts).tolist():
        if values[i] is None:
            n_null += int(counts[i])
            continue
        key = str(values[i])
        out[key] = out.get(key, 0) + int(counts[i])
    return CategoricalCounts(counts=out, n_null=n_null)


def _category_array(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return labels(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)


ALL_FIELDS = frozenset({"numeric", "categorical", "sensitive", "timestamp", "model"})


def to_batch(table: pa.Table | pa.RecordBatch, columns: Columns, fields: frozenset[str] = ALL_FIELDS) -> Batch:
    """Arrow → :class:`Batch` for detectors that use per-batch hooks; only ``fields`` are converted
    (object arrays of strings are costly: they are built only for detectors that read them)."""
    present = frozenset(table.schema.names)  # ``column_names`` builds a new list on every access

    def num(name: str | None) -> np.ndarray | None:
        if "model" not in fields or not name or name not in present:
            return None
        return numeric_values(table.column(name))[0]

    def cats(part: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        if part not in fields:
            return {}
        return {c: _category_array(table.column(c)) for c in names if c in present}

    ts = np.zeros(0, np.int64)
    if "timestamp" in fields and columns.timestamp and columns.timestamp in present:
        col = compute().cast(table.column(columns.timestamp), pa.timestamp("ns", tz="UTC"))
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        ts = filled(col, np.iinfo(np.int64).min)  # a null time is NaT, as NumPy spells it
    prediction = None
    if "model" in fields and columns.prediction and columns.prediction in present:
        col = table.column(columns.prediction)
        prediction = _category_array(col) if columns.prediction_is_class else numeric_values(col)[0]
    return Batch(
        n_rows=table.num_rows,
        numeric={c: numeric_values(table.column(c))[0] for c in columns.numeric
                 if c in present} if "numeric" in fields else {},
        categorical=cats("categorical", columns.categorical),
        sensitive=cats("sensitive", columns.sensitive),
        timestamp=ts, score=num(columns.score), prediction=prediction, label=num(columns.label))


def reference_profile(data: pa.Table | Sequence[pa.RecordBatch], *, columns: Columns,
                      detectors: Sequence[Detector] = ()) -> Profile:
    """Summarise a (bounded) reference once: grids for numeric columns, categories for the rest.

    ``data``: a table, or record batches that may differ in column types from file to file
    (integers and floats, dictionary-encoded or plain strings, timestamp units): each batch is
    converted on its own, as the window's are, before the values are joined.  A column no batch
    holds (no batch at all, or every file lacked it: reported as a source error) is present and
    empty, and the detectors say ``insufficient_data`` for it.
    """
    batches = data.to_batches() if isinstance(data, pa.Table) else list(data)

    def present(name: str) -> list[pa.RecordBatch]:
        return [b for b in batches if b.schema.get_field_index(name) >= 0]

    numeric = {}
    for name in columns.numeric_targets:
        parts = [numeric_values(b.column(name)) for b in present(name)]
        values = np.concatenate([v for v, _ in parts]) if parts else np.empty(0)
        numeric[name] = NumericReference.from_values(values, n_null=sum(n for _, n in parts))
    categorical = {}
    for name in columns.categorical_targets:
        counts = CategoricalCounts()
        for b in present(name):
            counts = counts.merge(category_counts(b.column(name)))
        categorical[name] = CategoricalReference.from_counts(counts)
    extras = {}
    hooked = [d for d in detectors if d.uses_batches]
    if hooked:
        fields = frozenset().union(*(d.batch_fields for d in hooked))
        batch = concat_batches([to_batch(b, columns, fields) for b in batches])
        extras = {d.key: d.reference_extra(batch) for d in hooked}
    return Profile(n_rows=sum(b.num_rows for b in batches), numeric=numeric, categorical=categorical,
                   roles=columns.roles(), extras=extras)


def concat_batches(parts: Sequence[Batch]) -> Batch:
    """One :class:`Batch` of the rows of ``parts`` in order (a column missing from a part is left out;
    no parts: a batch of no rows and no columns)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Batch(n_rows=0, numeric={}, categorical={}, sensitive={}, timestamp=np.zeros(0, np.int64))

    def join(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return np.concatenate(arrays) if all(a is not None for a in arrays) else None  # type: ignore[arg-type]

    def columns(get: str) -> dict[str, np.ndarray]:
        names = [n for n in dict.fromkeys(n for p in parts for n in getattr(p, get))
                 if all(n in getattr(p, get) for p in parts)]
        return {n: np.concatenate([getattr(p, get)[n] for p in parts]) for n in names}

    return Batch(n_rows=sum(p.n_rows for p in parts), numeric=columns("numeric"),
                 categorical=columns("categorical"), sensitive=columns("sensitive"),
                 timestamp=np.concatenate([p.timestamp for p in parts]),
                 score=join([p.score for p in parts]), prediction=join([p.prediction for p in parts]),
                 label=join([p.label for p in parts]))


_PROBE_LOCK = threading.Lock()


def cells_count_faster() -> bool:
    """:func:`_cells_count_faster`, timed by one thread while others wait (threads asking at once would
    time each other and could disagree)."""
    with _PROBE_LOCK:
        return _cells_count_faster()


@functools.cache
def _cells_count_faster(*, rounds: int = 3) -> bool:
    """Whether counting a large batch through its reference's cell map beats sorting it, on this CPU.

    Both give the same counts and sums (:meth:`detectors.profile.NumericCounts.of`); which is faster
    depends on the CPU.  NumPy's sort runs at about 5 ns a float32 value where it is vectorised
    (AVX-512 on Intel) and 20-30 ns where it is not (an AMD EPYC VM here), the cell map at 3-6 ns,
    its lookups and ``bincount`` slower where memory gathers are.  Timed once per process, on a
    synthetic batch of ``CELLS`` float32 values against a normal reference: the faster of ``rounds``
    of each (some 10-30 ms in all, paid by the first batch that could use the map).
    """
    g = np.random.default_rng(0)
    ref = NumericReference.from_values(g.normal(size=5_000).astype(np.float32))
    x = g.normal(size=CELLS).astype(np.float32)
    best = {True: math.inf, False: math.inf}
    for _ in range(rounds):
        for cells in best:
            t = time.perf_counter()
            NumericCounts.of(x, ref, cells=cells)
            best[cells] = min(best[cells], time.perf_counter() - t)
    return best[True] < best[False]


class WindowProfiler:
    """Accumulates a window's profile batch by batch on the reference grids.

    ``cell_counting``: count large numeric batches through the reference's cell map (``True``) or
    sort them (``False``); ``None`` (the default) takes whichever :func:`cells_count_faster` found
    faster on this CPU.  The profile is the same either way.
    """

    def __init__(self, *, reference: Profile, columns: Columns, detectors: Sequence[Detector] = (),
                 pool: Executor | None = None, cell_counting: bool | None = None) -> None:
        self.reference = reference
        self.pool = pool
        self.cell_counting = cell_counting
        self.columns = columns
        self.hooked = [d for d in detectors if d.uses_batches]
        self.fields = frozenset().union(*(d.batch_fields for d in self.hooked))
        self.profile = Profile(
            n_rows=0,
            numeric={c: NumericCounts.empty(r) for c, r in reference.numeric.items()},
            categorical={c: CategoricalCounts() for c in reference.categorical},
            roles=dict(reference.roles),
        )

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Count one batch; with a ``pool``, columns are counted in parallel (NumPy releases the GIL)."""
        def count_numeric(name: str) -> NumericCounts:
            values, n_null = numeric_values(batch.column(name))
            return NumericCounts.of(values, self.reference.numeric[name], n_null=n_null,
                                    cells=bool(self.cell_counting))

        def count_categorical(name: str) -> CategoricalCounts:
            return category_counts(batch.column(name))

        def count_extras() -> dict[str, Any]:
            if not self.hooked:
                return {}
            return batch_extras(self.hooked, self.reference.extras, to_batch(batch, self.columns, self.fields))

        if self.cell_counting is None and batch.num_rows >= CELLS // 2:
            # asked on this thread before the columns are counted (timed on a quiet pool), and only once a
            # batch is large enough for the cell map; smaller ones are sorted whatever the answer
            self.cell_counting = cells_count_faster()
        present = frozenset(batch.schema.names)
        num_names = [n for n in self.reference.numeric if n in present]
        cat_names = [n for n in self.reference.categorical if n in present]
        if self.pool is not None:
            # the batch hooks (one task over many columns, the longest) first: the columns fill in beside them
            extras_future = self.pool.submit(count_extras)
            num_futures = [self.pool.submit(count_numeric, n) for n in num_names]
            cat_futures = [self.pool.submit(count_categorical, n) for n in cat_names]
            numeric = {n: f.result() for n, f in zip(num_names, num_futures, strict=True)}
            categorical = {n: f.result() for n, f in zip(cat_names, cat_futures, strict=True)}
            extras = extras_future.result()
        else:
            numeric = {n: count_numeric(n) for n in num_names}
            categorical = {n: count_categorical(n) for n in cat_names}
            extras = count_extras()
        self.profile = self.profile.merge(Profile(n_rows=batch.num_rows, numeric=numeric,
                                                  categorical=categorical, extras=extras))
