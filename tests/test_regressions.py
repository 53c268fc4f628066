"""Regressions a review of a round of changes reproduced (each failed before its fix): reconstruction errors of
a near-exact relationship and of huge rows, a maximum at the largest float, a reference on a sink without
timestamp statistics, multivariate features naming the score, and the console script on a closed pipe.

Each test states the correct behaviour, computed independently.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from detectors.base import Batch, Context
from detectors.drift_numeric import Wasserstein
from detectors.multivariate import ERROR_FLOOR, Multivariate, reconstruction_errors
from detectors.profile import NumericCounts, NumericReference, Profile
from monitor.cli import main
from monitor.config import parse_config
from monitor.evaluate import Evaluator
from tests.conftest import T0, model_config, write_hourly_sink

REPO = Path(__file__).resolve().parent.parent
AT = datetime(2026, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- multivariate rounding


def _collinear_batch(rng: np.random.Generator, noise: float, n: int) -> Batch:
    a = rng.normal(size=n)
    return Batch(n_rows=n, numeric={"a": a, "b": a + noise * rng.normal(size=n), "c": rng.normal(size=n)},
                 categorical={}, sensitive={}, timestamp=np.zeros(0, np.int64))


def _exact_errors(model, x: np.ndarray) -> np.ndarray:
    """Squared reconstruction errors from the explicit residual z - z V V' (no cancellation, no rounding)."""
    z = (x - model.center) / model.scale
    v = model.components
    r = z - (z @ v) @ v.T
    return np.sum(r * r, axis=1)


def test_multivariate_rounding_hides_a_break_of_a_near_exact_relationship() -> None:
    """b = a + 1e-5 noise in the reference, a + 1.5e-4 noise in the window (the residual's variance 225x).
    The exact mean errors are about 5e-11 and 1.1e-8: with ERROR_FLOOR 1e-9 the ratio is about 11 and the
    previous release alerted (value 11.3, p 0).  Rounding every error to a multiple of 2^(ceil(log2 3) - 24)
    = 2.4e-7 turns both sides into zeros: value 1.0, p 1.0, status ok."""
    rng = np.random.default_rng(0)
    det = Multivariate()
    ref_batch = _collinear_batch(rng, 1e-5, 4000)
    model = det.reference_extra(ref_batch)
    cur_batch = _collinear_batch(rng, 1.5e-4, 4000)
    ref = Profile(n_rows=4000, extras={det.key: model})
    cur = Profile(n_rows=4000, extras={det.key: det.batch_extra(model, cur_batch)})
    f = det.score(ref, cur, context=Context(model="m", window_start=AT, window_end=AT))[0]

    cols = ("a", "b", "c")
    held = np.column_stack([ref_batch.numeric[c] for c in cols])[1::2]
    window = np.column_stack([cur_batch.numeric[c] for c in cols])
    expected = max(_exact_errors(model, window).mean(), ERROR_FLOOR) / max(_exact_errors(model, held).mean(),
                                                                           ERROR_FLOOR)
    assert expected > 5  # independent: the window's errors are an order of magnitude above the floor
    assert f.status == "alert", f"{f.status} value {f.value} p {f.p_value} (exact error ratio {expected:.3g})"
    assert f.value > 5


def test_reconstruction_error_of_a_large_but_finite_row_is_not_made_infinite() -> None:
    """A window row 1e152 sds out on one feature has a finite squared error (about 1e304), but
    ``err / quantum`` overflows before ``* quantum``: the error becomes +inf, so the row is counted as a
    row "with a missing or infinite feature" and left out of the KS test, the most drifted row of all."""
    rng = np.random.default_rng(1)
    det = Multivariate()
    model = det.reference_extra(_collinear_batch(rng, 0.5, 2000))
    x = np.array([[model.center[0] + 1e152 * model.scale[0], model.center[1], model.center[2]]])
    exact = _exact_errors(model, x)
    assert np.isfinite(exact).all()
    got = reconstruction_errors(model, x)
    assert np.isfinite(got).all(), f"got {got}, exact {exact}"
    np.testing.assert_allclose(got, exact, rtol=1e-6)


# --------------------------------------------------------------------------- numeric grid at the float maximum


def test_reference_edges_are_finite_when_the_maximum_is_float_max() -> None:
    """DBL_MAX is a common 'no value' sentinel.  ``NumericReference`` documents finite edges, but the top
    edge nextafter(DBL_MAX) is +inf (and with the atom rule the atom's own upper edge is +inf too): the
    top bin's width is inf, so W1 of two identical samples is NaN instead of about 0.
    (Pre-existing for a plain maximum at DBL_MAX; the atom rule adds a second route to it.)"""
    big = np.finfo(np.float64).max
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=5000), np.full(500, big)])
    ref = NumericReference.from_values(values)
    assert np.isfinite(ref.bin_edges).all(), f"bin edges end {ref.bin_edges[-3:]}"
    assert ref.counts[-1] == 0 and ref.counts[-2] == 500  # the sentinel is an atom of its own, inside the range
    w = Wasserstein().statistic(ref, NumericCounts.of(values, ref))
    assert math.isfinite(w.value) and w.value < 1e-6, w


# --------------------------------------------------------------------------- reference key: files without statistics


def _int96_file(path: Path, start: datetime, n: int, seed: int) -> None:
    """Rows one minute apart from ``start``, timestamps as INT96 (Spark's default output type: no min/max)."""
    rng = np.random.default_rng(seed)
    table = pa.table({
        "id": [f"{path.stem}-{i}" for i in range(n)],
        "ts": pa.array([start + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "x0": rng.normal(size=n), "x1": rng.normal(size=n), "x2": rng.normal(size=n),
        "c": rng.choice(["a", "b"], n), "score": rng.uniform(size=n), "pred": rng.integers(0, 2, n),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)


def test_rolling_reference_is_not_rebuilt_for_each_new_file_of_a_sink_without_timestamp_statistics(
        tmp_path: Path) -> None:
    """A day-partitioned sink written by Spark (INT96 timestamps, which carry no min/max statistics) and a
    rolling reference (1 day, refreshed hourly).  Every run a new file of the last 5 minutes lands in
    today's partition; its rows are all after the reference range's end, yet ``holds_rows`` answers "may"
    for a file without usable statistics, so the key changes and the whole day of reference data is
    read again on every run (before this change the file was left out of the key)."""
    root = tmp_path / "preds"
    day0 = datetime(2026, 11, 26, tzinfo=UTC)
    for h in range(24):
        _int96_file(root / f"date={day0:%Y-%m-%d}" / f"h{h:02d}.parquet", day0 + timedelta(hours=h), 60, h)
    today = day0 + timedelta(days=1)
    for h in range(6):
        _int96_file(root / f"date={today:%Y-%m-%d}" / f"h{h:02d}.parquet", today + timedelta(hours=h), 60, 100 + h)
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(root), window="1h", detectors=[{"type": "psi"}], reference={"rolling": "1d"},
        reference_refresh="1h")]})
    ev = Evaluator(config=cfg, model=cfg.models[0])
    at = today + timedelta(hours=6, minutes=5)
    start, end = ev.reference_range(at)
    first, cached = ev.reference(at)
    assert not cached and first.profile.n_rows == 24 * 60  # the INT96 sink is read
    # the next run: one more file, all of whose rows lie after the range's end
    late = root / f"date={today:%Y-%m-%d}" / "run-0610.parquet"
    _int96_file(late, at, 5, 999)
    ts = pq.read_table(late, columns=["ts"]).column("ts").cast(pa.timestamp("us", tz="UTC")).to_pylist()
    assert min(ts) >= end  # independent: the new file holds no row of the range
    second, cached = ev.reference(at + timedelta(minutes=5))
    assert cached, "the reference was rebuilt for a file holding no row of its range"
    assert second.key == first.key


# --------------------------------------------------------------------------- configuration: multivariate and the score


def test_multivariate_features_naming_the_score_are_refused_or_scored(tmp_path: Path) -> None:
    """``multivariate`` with ``features: [x0, score]``: the new check accepts the score (it is a numeric
    target), but ``multivariate`` reads only ``Batch.numeric`` (the numeric features), so the score is
    silently dropped, the model has one feature, and every run reports insufficient_data ("fewer than two
    features").  Either validate refuses it (exit 2) or the detector scores it."""
    write_hourly_sink(tmp_path / "preds", start=T0, hours=26, rows_per_hour=300)
    data = {"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(tmp_path / "preds"), window="2h", detectors=[{"type": "multivariate", "features": ["x0", "score"]}],
        reference={"start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()})]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["validate", "--config", str(path)], stdout=io.StringIO())
    if code == 2:
        return
    cfg = parse_config(data)
    ev = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False).evaluate(at=T0 + timedelta(hours=26))
    [f] = [f for f in ev.findings if f.detector == "multivariate"]
    assert f.status != "insufficient_data", f"validate said ok, the finding: {f.status}: {f.note}"


# --------------------------------------------------------------------------- the console script and a closed pipe


def test_entry_check_into_a_closed_pipe_exits_0_without_a_fatal_dump(tmp_path: Path) -> None:
    """`atalaia check ... | head -1` (here: a reader that closes at once).  ``main`` catches the
    BrokenPipeError, closes sys.stderr and returns 0 (its own comment: "e.g. `atalaia check ... | head`").
    ``entry`` then flushes the logging handlers: the StreamHandler on the closed sys.stderr raises
    ValueError, which ``_flush_and_exit`` does not catch, so the process dies with exit 1 ("findings")
    and CPython's "lost sys.stderr" object dump on the terminal.  Before ``entry`` it exited 0, silently."""
    write_hourly_sink(tmp_path / "preds", start=T0, hours=26, rows_per_hour=300)
    dets = [{"type": t} for t in ("psi", "ks", "wasserstein", "mean_shift", "chi2", "jensen_shannon",
                                   "data_quality", "hellinger", "total_variation", "g_test")]
    data = {"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(tmp_path / "preds"), window="2h", detectors=dets,
        reference={"start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()})]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    argv = ["check", "--config", str(path), "--at", (T0 + timedelta(hours=26)).isoformat(), "--format", "json"]
    # the output is larger than stdout's buffer, so main writes while it prints (not only at the final flush)
    full = io.StringIO()
    assert main(argv, stdout=full) in (0, 1)
    assert len(full.getvalue()) > 16384
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from monitor.cli import entry; sys.argv[0] = 'atalaia'; entry()",
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # the reader is gone before the first write
    _, err = proc.communicate(timeout=120)
    assert b"lost sys.stderr" not in err and b"ValueError" not in err, err.decode(errors="replace")
    assert proc.returncode == 0
