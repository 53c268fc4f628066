"""Benchmark helpers: synthetic sinks and measured subprocesses (wall time and peak RSS)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

END = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
CATEGORIES = np.array(["north", "south", "east", "west", "centre", "islands", "abroad", "unknown"])


def feature_names(n_numeric: int, n_categorical: int) -> tuple[list[str], list[str]]:
    return [f"num_{i:02d}" for i in range(n_numeric)], [f"cat_{i}" for i in range(n_categorical)]


def make_table(rng: np.random.Generator, n: int, *, n_numeric: int, n_categorical: int, start: datetime,
               span: timedelta, shifted: int = 0, shift_sd: float = 0.0, id_base: int = 0) -> pa.Table:
    """``n`` rows: ts inside [start, start+span), float32 numerics (first ``shifted`` moved by ``shift_sd``),
    dictionary-encoded categoricals, a score and a predicted class."""
    num, cat = feature_names(n_numeric, n_categorical)
    offs = np.sort(rng.integers(0, int(span.total_seconds() * 1e6), n))
    ts = np.datetime64(start.replace(tzinfo=None), "us") + offs.astype("timedelta64[us]")
    cols: dict[str, pa.Array] = {"prediction_id": pa.array(np.arange(id_base, id_base + n, dtype=np.int64)),
                                 "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC"))}
    for i, name in enumerate(num):
        x = rng.standard_normal(n, dtype=np.float32) * (1 + i % 3) + i
        if i < shifted:
            x += np.float32(shift_sd * (1 + i % 3))
        cols[name] = pa.array(x)
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])
    for name in cat:
        idx = rng.choice(len(CATEGORIES), size=n, p=p).astype(np.int8)
        cols[name] = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(CATEGORIES))
    score = rng.random(n, dtype=np.float32)
    cols["score"] = pa.array(score)
    cols["predicted_label"] = pa.array((score >= 0.5).astype(np.int8))
    return pa.table(cols)


@dataclass(frozen=True)
class Sink:
    root: Path
    predictions: Path
    reference: Path
    numeric: list[str]
    categorical: list[str]
    window_start: datetime
    window_end: datetime
    rows: int


def write_sink(root: Path, *, rows: int, n_numeric: int = 20, n_categorical: int = 5, partitions: int = 10,
               reference_rows: int = 1_000_000, shifted: int = 0, shift_sd: float = 0.0, seed: int = 0) -> Sink:
    """A window of ``rows`` predictions in ``partitions`` hourly hive partitions ending at ``END``, and a
    reference file; reused when ``root/DONE`` says it was written with the same parameters."""
    num, cat = feature_names(n_numeric, n_categorical)
    start = END - timedelta(hours=partitions)
    sink = Sink(root, root / "predictions", root / "reference.parquet", num, cat, start, END, rows)
    stamp = f"{rows} {n_numeric} {n_categorical} {partitions} {reference_rows} {shifted} {shift_sd} {seed}"
    done = root / "DONE"
    if done.exists() and done.read_text() == stamp:
        return sink
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ref = make_table(rng, reference_rows, n_numeric=n_numeric, n_categorical=n_categorical,
                     start=start - timedelta(days=7), span=timedelta(days=7), id_base=10**12)
    pq.write_table(ref, sink.reference)
    per = rows // partitions
    for h in range(partitions):
        t = start + timedelta(hours=h)
        n = per if h < partitions - 1 else rows - per * (partitions - 1)
        table = make_table(rng, n, n_numeric=n_numeric, n_categorical=n_categorical, start=t,
                           span=timedelta(hours=1), shifted=shifted, shift_sd=shift_sd, id_base=h * per)
        part = sink.predictions / f"date={t:%Y-%m-%d}" / f"hour={t:%H}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet", row_group_size=256 * 1024)
    done.write_text(stamp)
    return sink


# the read floor: the columns of the window's files as record batches, float columns to NumPy, either through
# pyarrow.dataset (files read ahead in parallel; importing it imports pandas) or file by file with pyarrow.parquet
# (no pandas: the float values are taken from the Arrow buffer, as atalaia takes them, since Array.to_numpy
# imports pandas on first use, 0.4 s that a floor must not pay)
READ = r"""
def read(files, cols, batch_size, how):
    import numpy as np
    import pyarrow as pa
    if how == "dataset":
        import pyarrow.dataset as ds
        batches = ds.dataset(files, format="parquet").to_batches(columns=cols, batch_size=batch_size)
    else:
        import pyarrow.parquet as pq
        batches = (b for f in files for b in pq.ParquetFile(f).iter_batches(columns=cols, batch_size=batch_size))
    n = 0
    for b in batches:
        for c in b.columns:
            if pa.types.is_floating(c.type):
                width = c.type.bit_width // 8
                np.frombuffer(c.buffers()[1], dtype=f"f{width}", count=len(c), offset=c.offset * width)
        n += b.num_rows
    return n
"""

# the floor in a fresh process: imports pyarrow only
FLOOR = READ + r"""
import sys
print(read(sys.argv[1].split(","), sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]))
"""
FLOOR_READERS = ("dataset", "file")


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            ok_codes: tuple[int, ...] = (0, 1)) -> Measured:
    """Run ``cmd``; its own wall time and peak resident memory (``wait4`` on that child alone)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr[-3000:]}")
    return Measured(seconds, usage.ru_maxrss / 1024, proc.returncode, stdout)


def atalaia_config(sink: Sink, state: Path, detectors: list[str], *, timeout: str = "60m") -> dict:
    """The configuration both benchmarks run ``atalaia`` with: one model over the whole window."""
    return {
        "state_dir": str(state),
        "models": [{
            "name": "bench",
            "schedule": {"every": "5m"},
            "window": f"{int((sink.window_end - sink.window_start).total_seconds())}s",
            "predictions": {"path": str(sink.predictions), "id": "prediction_id", "timestamp": "ts",
                            "prediction": "predicted_label", "score": "score"},
            "features": {"numeric": sink.numeric, "categorical": sink.categorical},
            "reference": {"path": str(sink.reference)},
            "detectors": [{"type": d} for d in detectors],
            "timeout": timeout,
        }],
    }
