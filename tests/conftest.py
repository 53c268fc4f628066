"""Shared fixtures: real Parquet sinks written with pyarrow, and configs pointing at them."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def hour_dir(root: Path, t: datetime) -> Path:
    """The hive partition of the hour holding ``t``: ``root/date=YYYY-MM-DD/hour=HH``."""
    return root / f"date={t:%Y-%m-%d}" / f"hour={t:%H}"


def write_hourly_sink(root: Path, *, start: datetime, hours: int, rows_per_hour: int, seed: int = 0,
                      shift: Callable[[datetime], float] | None = None, id_prefix: str = "p") -> None:
    """Predictions in ``root/date=…/hour=…/part-0.parquet``: ts, id, x0..x2 (numeric), c (categorical),
    score, pred; ``shift(hour_start)`` moves x0's mean."""
    rng = np.random.default_rng(seed)
    for h in range(hours):
        t = start + timedelta(hours=h)
        n = rows_per_hour
        offs = np.sort(rng.uniform(0, 3600, n))
        ts = (np.datetime64(t.replace(tzinfo=None), "us") + (offs * 1e6).astype("timedelta64[us]"))
        d = shift(t) if shift else 0.0
        table = pa.table({
            "id": pa.array([f"{id_prefix}{h}-{i}" for i in range(n)]),
            "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            "x0": rng.normal(d, 1.0, n),
            "x1": rng.normal(0.0, 1.0, n),
            "x2": rng.exponential(1.0, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "score": rng.uniform(0, 1, n),
            "pred": rng.integers(0, 2, n),
        })
        part = hour_dir(root, t)
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet")


def naive_stop_loss_p(pooled: list[int], unseen: int, n: int) -> float:
    """The unseen-category p-value of ``data_quality`` by loops, the oracle of its vectorised kernel: the
    stop-loss bound min_a E(U* - a)_+ / (u - a), U* = sum t_c Z_c with independent
    Z_c ~ Bernoulli(C(N - t_c, n) / C(N, n)) over the pooled category counts t_c."""
    if unseen == 0:
        return 1.0
    big_n = sum(pooled)
    dist = {0: 1.0}
    for t in pooled:
        q = math.comb(big_n - t, n) / math.comb(big_n, n)
        new: dict[int, float] = {}
        for x, pr in dist.items():
            new[x] = new.get(x, 0.0) + pr * (1 - q)
            new[x + t] = new.get(x + t, 0.0) + pr * q
        dist = new
    return min(1.0, *(sum((x - a) * pr for x, pr in dist.items() if x > a) / (unseen - a) for a in range(unseen)))


def model_config(*, pred_path: str, reference: dict[str, Any], name: str = "m1", every: str = "5s",
                 window: str = "1h", detectors: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"every": every},
        "window": window,
        "predictions": {"path": pred_path, "id": "id", "timestamp": "ts", "prediction": "pred", "score": "score"},
        "features": {"numeric": ["x0", "x1", "x2"], "categorical": ["c"]},
        "reference": reference,
        "detectors": detectors or [{"type": "psi"}, {"type": "ks"}],
    } | extra


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``check`` and ``run`` set up logging on the root logger in process; put it back after every test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def hourly(tmp_path: Path) -> Path:
    """24 hours of 400 predictions from T0, x0 shifted by +0.8 sd from hour 18."""
    root = tmp_path / "preds"
    write_hourly_sink(root, start=T0, hours=24, rows_per_hour=400,
                      shift=lambda t: 0.8 if t >= T0 + timedelta(hours=18) else 0.0)
    return root


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    """48 hours of predictions from T0, x0 shifted by +1 sd in the last 8 hours."""
    root = tmp_path / "preds"
    write_hourly_sink(root, start=T0, hours=48, rows_per_hour=1000,
                      shift=lambda t: 1.0 if t >= T0 + timedelta(hours=40) else 0.0)
    return root


@pytest.fixture
def config_file(tmp_path: Path, sink: Path) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "models": [model_config(pred_path=str(sink), reference={
            "start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()})],
    }
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def settled(path: Path) -> Path:
    """Date a file an hour back: not one a writer is still appending to (a file without a footer younger
    than ``monitor.sources.parquet.IN_PROGRESS_SECONDS`` is left for a later run, not reported corrupt)."""
    t = time.time() - 3600
    os.utime(path, (t, t))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
