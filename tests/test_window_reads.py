"""How a run reads its window: a timestamp column the footer settles is not decoded, a detector that reads
timestamps still gets them, a read that hangs holds up only its own run, and multivariate's errors come from
the eigenvectors its model leaves out."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detectors.multivariate import Multivariate, reconstruction_errors
from monitor.config import parse_config
from monitor.evaluate import Evaluator
from monitor.sources.parquet import ParquetSink
from tests.conftest import T0, hour_dir, model_config
from tests.test_evaluate import results

DETECTORS = [{"type": t} for t in ("psi", "ks", "wasserstein", "mean_shift", "anderson_darling", "chi2",
                                    "jensen_shannon", "multivariate", "data_quality")]
REFERENCE = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=12)).isoformat()}


def config(tmp_path: Path, sink: Path, *, name: str = "m1", window: str = "6h") -> Any:
    return parse_config({"state_dir": str(tmp_path / "state"), "models": [
        model_config(pred_path=str(sink), name=name, window=window, detectors=DETECTORS, reference=REFERENCE)]})


def test_a_read_that_hangs_holds_up_only_its_own_run(tmp_path: Path, hourly: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the daemon shares one counting pool across models: a model whose object store hangs must not stop the others
    pool = ThreadPoolExecutor(max_workers=2)
    hung_cfg, free_cfg = config(tmp_path, hourly, name="hung"), config(tmp_path, hourly, name="free")
    hung = Evaluator(config=hung_cfg, model=hung_cfg.models[0], pool=pool)
    free = Evaluator(config=free_cfg, model=free_cfg.models[0], pool=pool)
    at = T0 + timedelta(hours=20)
    hung.reference(at)
    release, waiting = threading.Event(), threading.Event()
    plain = ParquetSink.batches

    def batches(self: ParquetSink, **kw: Any) -> Any:
        if threading.current_thread().name == "atalaia-read-hung":  # the hung model's read-ahead thread
            waiting.set()
            release.wait(60)
        yield from plain(self, **kw)

    monkeypatch.setattr(ParquetSink, "batches", batches)
    runner = threading.Thread(target=hung.evaluate, kwargs={"at": at}, daemon=True)
    runner.start()
    try:
        assert waiting.wait(30)
        started = time.monotonic()
        done = free.evaluate(at=at)
        assert time.monotonic() - started < 20 and done.rows == 6 * 400
    finally:
        release.set()
        runner.join(30)
        pool.shutdown()
    assert not runner.is_alive()


# --------------------------------------------------------------------------- the timestamp column

def write(path: Path, ts: list[datetime | None], **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
                      "x": pa.array(np.arange(len(ts), dtype=np.float64))})
    pq.write_table(table, path, **options)
    return path


def read(sink: Path, start: datetime, end: datetime, *, need_timestamp: bool) -> tuple[list[str], int]:
    src = ParquetSink.open(str(sink), timestamp="ts")
    batches = list(src.batches(columns={"ts": "timestamp", "x": "numeric"}, start=start, end=end,
                               need_timestamp=need_timestamp))
    assert src.errors == []
    return sorted({n for b in batches for n in b.schema.names}), sum(b.num_rows for b in batches)


def test_a_timestamp_the_footer_settles_is_not_decoded_and_the_rows_are_the_same(tmp_path: Path) -> None:
    hour = T0 + timedelta(hours=3)
    inside = [hour + timedelta(minutes=m) for m in range(60)]
    write(hour_dir(tmp_path / "parts", hour) / "a.parquet", inside)
    # a file outside any partition whose row group lies inside the window by its statistics
    write(tmp_path / "flat" / "a.parquet", inside)
    for sink in ("parts", "flat"):
        assert read(tmp_path / sink, T0, T0 + timedelta(hours=6), need_timestamp=False) == (["x"], 60), sink
        assert read(tmp_path / sink, T0, T0 + timedelta(hours=6), need_timestamp=True) == (["ts", "x"], 60), sink


@pytest.mark.parametrize("case", ["a null timestamp", "no statistics", "straddles the window"])
def test_a_timestamp_the_footer_cannot_settle_is_decoded(tmp_path: Path, case: str) -> None:
    hour = T0 + timedelta(hours=3)
    ts: list[datetime | None] = [hour + timedelta(minutes=m) for m in range(60)]
    options: dict[str, Any] = {}
    start, end, expect = T0, T0 + timedelta(hours=6), 60
    if case == "a null timestamp":
        ts[7] = None  # a row of no time: left out, which needs the column (and is logged)
        expect = 59
    elif case == "no statistics":
        options["write_statistics"] = False
    else:
        start = hour + timedelta(minutes=30)
        expect = 30
    write(tmp_path / "flat" / "a.parquet", ts, **options)
    write(hour_dir(tmp_path / "parts", hour) / "a.parquet", ts, **options)
    for sink in ("flat", "parts"):  # a partition inside the window is read unfiltered, but needs the null count
        assert read(tmp_path / sink, start, end, need_timestamp=False) == (["ts", "x"], expect), sink


def test_a_detector_that_reads_timestamps_per_batch_still_gets_them(tmp_path: Path, hourly: Path) -> None:
    from typing import ClassVar

    from detectors.base import Batch, Detector, Finding, Kind
    from detectors.registry import Registry

    seen: list[int] = []

    class Stamps(Detector):
        name: ClassVar[str] = "stamps"
        kind: ClassVar[Kind] = "quality"
        uses_batches: ClassVar[bool] = True
        batch_fields = frozenset({"timestamp"})

        def reference_extra(self, reference: Batch) -> None:
            return None

        def batch_extra(self, reference_extra: Any, batch: Batch) -> None:
            seen.append(int(np.count_nonzero(batch.timestamp > 0)))

        def score(self, summary: Any, current: Any, *, context: Any) -> list[Finding]:
            return []

    registry = Registry(extra={"stamps": Stamps})
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(hourly), window="6h", detectors=[{"type": "psi"}, {"type": "stamps"}], reference=REFERENCE)]},
        registry=registry)
    Evaluator(config=cfg, model=cfg.models[0], registry=registry, reuse_partitions=False).evaluate(
        at=T0 + timedelta(hours=20))
    assert sum(seen) == 6 * 400


# --------------------------------------------------------------------------- multivariate's complement

@pytest.mark.parametrize("latent", [None, 2], ids=["most components kept: from those left out",
                                                   "two of twelve kept: the residual"])
def test_reconstruction_errors_equal_the_explicit_residual(latent: int | None) -> None:
    from detectors.base import Batch
    rng = np.random.default_rng(11)
    if latent is None:
        a = rng.normal(size=6000)
        cols = {"a": a, "b": 0.9 * a + 0.3 * rng.normal(size=6000), "c": rng.normal(size=6000),
                "d": rng.exponential(size=6000), "e": -a + 0.1 * rng.normal(size=6000)}
    else:  # strongly correlated features: few components, many left out
        factors = rng.normal(size=(latent, 6000))
        cols = {f"f{i}": rng.normal(size=latent) @ factors + 0.05 * rng.normal(size=6000) for i in range(12)}
    model = Multivariate(variance=0.8).reference_extra(Batch(n_rows=6000, numeric=cols, categorical={}, sensitive={},
                                                             timestamp=np.zeros(0, np.int64)))
    assert model is not None and 0 < model.n_components < len(model.features)
    if latent is not None:
        assert model.n_components == latent and model.complement.shape[1] > 2 * model.n_components
    x = np.column_stack([rng.normal(size=500) * 3 for _ in model.features])
    x[3, 1] = np.nan  # an incomplete row has no error
    z = (x - model.center) / model.scale
    v = model.components
    explicit = np.sum((z - (z @ v) @ v.T) ** 2, axis=1)
    got = reconstruction_errors(model, x)
    assert np.isnan(got[3]) and np.isnan(explicit[3])
    np.testing.assert_allclose(got, explicit, rtol=1e-6)
    basis = np.hstack([model.components, model.complement])
    np.testing.assert_allclose(basis.T @ basis, np.eye(len(model.features)), atol=1e-12)


def test_a_window_read_without_its_timestamps_gives_the_same_findings(tmp_path: Path, hourly: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    at = T0 + timedelta(hours=20, minutes=30)  # five whole partitions without the column, two edges with it
    cfg = config(tmp_path, hourly)
    skipped = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False).evaluate(at=at)
    plain = ParquetSink.batches
    monkeypatch.setattr(ParquetSink, "batches", lambda self, **kw: plain(self, **(kw | {"need_timestamp": True})))
    decoded = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False).evaluate(at=at)
    assert results(skipped) == results(decoded)
    assert skipped.rows == decoded.rows > 5 * 400
    assert any(f.status != "ok" for f in skipped.findings)
