"""The evaluator across runs: partition profiles reused on a sliding window, and exactly the same
findings as a fresh evaluation whatever was reused."""

from __future__ import annotations

import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detectors.base import Detector, Finding, Kind
from detectors.errors import SourceTimeout
from detectors.registry import Registry
from monitor.config import parse_config
from monitor.evaluate import Evaluation, Evaluator, cache_version
from monitor.partition_store import PartitionStore
from monitor.sources.parquet import ParquetSink
from tests.conftest import T0, hour_dir, model_config, settled, write_hourly_sink

ALL_DRIFT = [{"type": t} for t in ("psi", "ks", "wasserstein", "mean_shift", "anderson_darling", "chi2",
                                    "jensen_shannon", "multivariate", "data_quality")]


def evaluator(tmp_path: Path, sink: Path, *, reuse: bool = True, window: str = "6h",
              store: PartitionStore | None = None, detectors: list[dict[str, Any]] = ALL_DRIFT) -> Evaluator:
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "models": [model_config(pred_path=str(sink), window=window, detectors=detectors, reference={
            "start": T0.isoformat(), "end": (T0 + timedelta(hours=12)).isoformat()})],
    })
    return Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=reuse, partition_store=store)


def stored(tmp_path: Path, version: str | None = None) -> PartitionStore:
    """The partition store a daemon keeps in ``tmp_path / "state"`` (a new one per call: a restart)."""
    return PartitionStore(tmp_path / "state" / "partitions" / "model=m1", version=version or cache_version())


def stored_files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "state" / "partitions" / "model=m1").iterdir()}


def results(ev: Evaluation) -> list[tuple[Any, ...]]:
    return [(f.detector, f.target, f.statistic, f.value, f.p_value, f.status, f.n_current, f.note)
            for f in ev.findings]


def rows_between(sink: Path, start: datetime, end: datetime) -> int:
    ts = pa.concat_arrays([pq.read_table(p, columns=["ts"]).column("ts").combine_chunks()
                           for p in sorted(sink.rglob("*.parquet"))])
    lo, hi = (pa.scalar(t, type=ts.type) for t in (start, end))
    return sum(1 for v in ts.to_pylist() if lo.as_py() <= v < hi.as_py())


def test_a_sliding_window_reads_only_its_new_partitions_and_equals_a_fresh_evaluation(tmp_path: Path,
                                                                                       hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly)
    # windows ending on the hour: 6 partitions wholly inside, then 5 of them again plus a new one
    first = ev.evaluate(at=T0 + timedelta(hours=19))
    second = ev.evaluate(at=T0 + timedelta(hours=20))
    # a window ending mid-hour: 5 whole partitions reused, the two edge partitions read with a filter
    third = ev.evaluate(at=T0 + timedelta(hours=20, minutes=30))

    assert (first.partitions_reused, second.partitions_reused, third.partitions_reused) == (0, 5, 5)
    for done, at in ((first, T0 + timedelta(hours=19)), (second, T0 + timedelta(hours=20)),
                     (third, T0 + timedelta(hours=20, minutes=30))):
        assert done.rows == rows_between(hourly, at - timedelta(hours=6), at)
        x0 = next(f for f in done.findings if (f.detector, f.target) == ("ks", "x0"))
        assert x0.n_current == done.rows
    for done, at in ((second, T0 + timedelta(hours=20)), (third, T0 + timedelta(hours=20, minutes=30))):
        fresh = evaluator(tmp_path, hourly, reuse=False).evaluate(at=at)
        assert fresh.partitions_reused == 0
        assert done.rows == fresh.rows
        assert results(done) == results(fresh)  # bit for bit: the same merge order either way
    assert any(f.status != "ok" for f in second.findings if f.target == "x0")


def test_a_rewritten_or_added_file_makes_its_partition_be_read_again(tmp_path: Path, hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly)
    at = T0 + timedelta(hours=20)
    ev.evaluate(at=at)
    hour = T0 + timedelta(hours=16)
    part = hour_dir(hourly, hour)
    table = pq.read_table(part / "part-0.parquet")
    pq.write_table(table.slice(0, 100), part / "part-0.parquet")  # rewritten: fewer rows
    pq.write_table(table.slice(0, 50), part / "part-1.parquet")  # and a late file in the same hour
    later = T0 + timedelta(hours=19)
    os.utime(part / "part-1.parquet", (later.timestamp(), later.timestamp()))

    again = ev.evaluate(at=at)
    fresh = evaluator(tmp_path, hourly, reuse=False).evaluate(at=at)

    assert again.partitions_reused == 5
    assert again.rows == fresh.rows == 5 * 400 + 150
    assert results(again) == results(fresh)


def test_a_partition_with_a_skipped_file_is_not_kept(tmp_path: Path, hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly)
    hour = T0 + timedelta(hours=15)
    (hour_dir(hourly, hour) / "part-9.parquet").write_bytes(b"not parquet")
    settled(hour_dir(hourly, hour) / "part-9.parquet")
    at = T0 + timedelta(hours=20)

    first = ev.evaluate(at=at)
    second = ev.evaluate(at=at)

    for run in (first, second):  # the bad file is reported on every run, not hidden by a reused profile
        assert [e.path.rsplit("/", 1)[-1] for e in run.errors] == ["part-9.parquet"]
        assert run.outcome == "partial" and run.rows == 6 * 400
    assert second.partitions_reused == 5


def test_a_partition_with_a_file_still_being_written_is_read_again_and_the_file_reported_once_it_is_stale(
        tmp_path: Path, hourly: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.sources.parquet as parquet

    ev = evaluator(tmp_path, hourly)
    hour = T0 + timedelta(hours=15)
    live = hour_dir(hourly, hour) / "part-9.parquet"
    live.write_bytes(b"PAR1 row groups, no footer yet")
    then = datetime.now(UTC).timestamp() - 120  # modified two minutes ago: still being written
    os.utime(live, (then, then))
    at = T0 + timedelta(hours=20)

    first = ev.evaluate(at=at)
    assert first.errors == [] and first.outcome == "success" and first.rows == 6 * 400
    # the writer died and time passed: the same file (same size and mtime) is now past the grace period
    monkeypatch.setattr(parquet, "IN_PROGRESS_SECONDS", 60.0)
    second = ev.evaluate(at=at)
    # its partition was not kept from the first run, so the file is read again and now reported
    assert [e.path.rsplit("/", 1)[-1] for e in second.errors] == ["part-9.parquet"]
    assert second.partitions_reused == 5 and second.outcome == "partial"


def test_a_reference_with_a_file_still_being_written_is_not_cached_without_it(
        tmp_path: Path, hourly: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.sources.parquet as parquet

    ev = evaluator(tmp_path, hourly)
    live = hour_dir(hourly, T0 + timedelta(hours=4)) / "part-9.parquet"  # inside the reference range
    live.write_bytes(b"PAR1 row groups, no footer yet")
    then = datetime.now(UTC).timestamp() - 120
    os.utime(live, (then, then))
    at = T0 + timedelta(hours=20)
    for _ in range(2):  # built again on each run, never cached without the file
        run = ev.evaluate(at=at)
        assert run.errors == [] and not run.reference_cached and run.reference_rows == 12 * 400
    assert not list((tmp_path / "state" / "references").glob("*.pkl"))
    monkeypatch.setattr(parquet, "IN_PROGRESS_SECONDS", 60.0)  # its writer died: the same file is now stale
    stale = ev.evaluate(at=at)
    assert [e.path.rsplit("/", 1)[-1] for e in stale.errors] == ["part-9.parquet"]


def test_a_run_that_finishes_late_does_not_drop_what_a_newer_run_kept(tmp_path: Path, hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly)
    ev.evaluate(at=T0 + timedelta(hours=20))
    newer = dict(ev._partitions)
    # an older run (as one abandoned on a timeout) finishes after the newer one
    old = evaluator(tmp_path, hourly)
    old.evaluate(at=T0 + timedelta(hours=19))
    key = next(iter(newer))
    kept = ev._kept(newer, old._partitions, reference_key=key[1], start=T0 + timedelta(hours=14))
    assert set(newer) <= set(kept)


def test_a_new_reference_invalidates_the_reused_partitions(tmp_path: Path, hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly)
    at = T0 + timedelta(hours=20)
    ev.evaluate(at=at)
    # the reference window's data changes: a new file in one of its hours
    hour = T0 + timedelta(hours=3)
    part = hour_dir(hourly, hour)
    pq.write_table(pq.read_table(part / "part-0.parquet").slice(0, 10), part / "part-1.parquet")

    again = ev.evaluate(at=at)

    assert not again.reference_cached and again.partitions_reused == 0
    assert results(again) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))


def test_without_reuse_nothing_is_kept(tmp_path: Path, hourly: Path) -> None:
    ev = evaluator(tmp_path, hourly, reuse=False)
    at = T0 + timedelta(hours=20)
    assert [ev.evaluate(at=at).partitions_reused for _ in range(2)] == [0, 0]
    assert ev._partitions == {}


def test_an_exact_test_keeps_no_partitions_between_runs(tmp_path: Path, hourly: Path) -> None:
    # raw samples kept for 48 partitions would make memory grow with the window on every run
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "models": [model_config(pred_path=str(hourly), window="6h", detectors=[{"type": "ks", "exact": True}],
                                reference={"start": T0.isoformat(), "end": (T0 + timedelta(hours=12)).isoformat()})],
    })
    ev = Evaluator(config=cfg, model=cfg.models[0])
    at = T0 + timedelta(hours=20)
    runs = [ev.evaluate(at=at) for _ in range(2)]
    assert [r.partitions_reused for r in runs] == [0, 0] and ev._partitions == {}
    assert all(f.note and "exact" in f.note for f in runs[1].findings if f.n_current)


def test_an_unpartitioned_sink_is_read_whole_every_run(tmp_path: Path, hourly: Path) -> None:
    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.concat_tables(pq.read_table(p) for p in sorted(hourly.rglob("*.parquet"))), flat)
    ev = evaluator(tmp_path, flat)
    at = T0 + timedelta(hours=20)
    runs = [ev.evaluate(at=at) for _ in range(2)]
    assert [r.partitions_reused for r in runs] == [0, 0]
    assert results(runs[0]) == results(runs[1])
    assert runs[0].rows == 6 * 400


def test_findings_replay_exactly_at_the_same_time(tmp_path: Path, hourly: Path) -> None:
    # a reused partition never changes an answer: evaluating twice gives identical findings
    ev = evaluator(tmp_path, hourly)
    at = datetime.fromisoformat("2026-11-20T21:17:05+00:00")
    assert results(ev.evaluate(at=at)) == results(ev.evaluate(at=at))


def test_at_most_max_reused_partitions_are_kept_the_newest_first(tmp_path: Path, hourly: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "MAX_REUSED_PARTITIONS", 3)
    ev = evaluator(tmp_path, hourly)
    at = T0 + timedelta(hours=20)
    ev.evaluate(at=at)
    again = ev.evaluate(at=at)

    assert again.partitions_reused == 3
    assert sorted(k[0][0].hour for k in ev._partitions) == [17, 18, 19]
    assert results(again) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))


def test_kept_partitions_stay_within_the_memory_budget(tmp_path: Path, hourly: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.evaluate as evaluate_module

    ev = evaluator(tmp_path, hourly)
    at = T0 + timedelta(hours=20)
    ev.evaluate(at=at)
    one = next(iter(ev._partitions.values())).approx_bytes()
    assert one > 6 * 8 * 1000  # grid counts of the numeric columns at least
    monkeypatch.setattr(evaluate_module, "MAX_REUSED_BYTES", int(2.5 * one))
    again = ev.evaluate(at=at)  # reuses the six kept under no budget, then keeps what fits
    assert sorted(k[0][0].hour for k in ev._partitions) == [18, 19]
    third = ev.evaluate(at=at)

    assert (again.partitions_reused, third.partitions_reused) == (6, 2)
    assert results(third) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))



def test_a_run_holds_no_profile_per_partition_of_its_window(tmp_path: Path, hourly: Path) -> None:
    # each partition's profile is merged into the window's as soon as it is counted: without reuse a 20-hour
    # window's peak is about a 6-hour one's, not 14 more partition profiles (which a run used to hold)
    import tracemalloc

    def peak(hours: int) -> int:
        ev = evaluator(tmp_path, hourly, reuse=False, window=f"{hours}h")
        ev.evaluate(at=T0 + timedelta(hours=24))  # the reference, imports and caches first
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            ev.evaluate(at=T0 + timedelta(hours=24))
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    ev = evaluator(tmp_path, hourly)
    ev.evaluate(at=T0 + timedelta(hours=24))
    one = next(iter(ev._partitions.values())).approx_bytes()
    growth = peak(20) - peak(6)
    assert growth < 0.4 * one * 14, (growth, one)


# --------------------------------------------------------------------------- kept across a restart

def test_a_restarted_evaluator_reads_only_what_changed_and_equals_a_fresh_evaluation(tmp_path: Path,
                                                                                      hourly: Path) -> None:
    first = evaluator(tmp_path, hourly, store=stored(tmp_path))
    first.evaluate(at=T0 + timedelta(hours=20))
    assert stored_files(tmp_path) == {PartitionStore.name(k) for k in first._partitions}
    assert len(first._partitions) == 6

    # a new process on the same state dir, one hour later: five partitions come from the disk
    at = T0 + timedelta(hours=21)
    restarted = evaluator(tmp_path, hourly, store=stored(tmp_path))
    run = restarted.evaluate(at=at)
    fresh = evaluator(tmp_path, hourly, reuse=False).evaluate(at=at)

    assert run.partitions_reused == 5
    assert run.rows == fresh.rows == 6 * 400
    assert results(run) == results(fresh)  # bit for bit
    # the partition that slid out of the window is gone from the disk, the new one is there
    assert stored_files(tmp_path) == {PartitionStore.name(k) for k in restarted._partitions}
    assert sorted(k[0][0].hour for k in restarted._partitions) == list(range(15, 21))


def test_a_stored_profile_of_changed_data_or_another_reference_is_not_used(tmp_path: Path, hourly: Path) -> None:
    at = T0 + timedelta(hours=20)
    evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at)
    hour = T0 + timedelta(hours=16)
    part = hour_dir(hourly, hour)
    pq.write_table(pq.read_table(part / "part-0.parquet").slice(0, 100), part / "part-0.parquet")

    run = evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at)
    assert run.partitions_reused == 5
    assert results(run) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))

    # other detectors: another reference key, so nothing stored applies
    other = evaluator(tmp_path, hourly, store=stored(tmp_path), detectors=[{"type": "psi"}])
    again = other.evaluate(at=at)
    assert again.partitions_reused == 0
    assert results(again) == results(evaluator(tmp_path, hourly, reuse=False, detectors=[{"type": "psi"}])
                                     .evaluate(at=at))
    assert stored_files(tmp_path) == {PartitionStore.name(k) for k in other._partitions}


def test_a_damaged_or_outdated_stored_profile_is_read_again_and_replaced(tmp_path: Path, hourly: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    at = T0 + timedelta(hours=20)
    evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at)
    directory = tmp_path / "state" / "partitions" / "model=m1"
    names = sorted(stored_files(tmp_path))
    damaged = directory / names[0]
    damaged.write_bytes(damaged.read_bytes()[:50])  # a torn file (say, a full disk)
    (directory / ".tmp-abc.profile.part").write_bytes(b"left by a crash")

    with caplog.at_level("WARNING", logger="atalaia.partitions"):
        run = evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at)

    assert run.partitions_reused == 5
    assert results(run) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))
    assert any(damaged.name in r.getMessage() for r in caplog.records)
    assert sorted(stored_files(tmp_path)) == names  # rewritten whole; the crash's leftover removed
    # another profile layout or release ignores (and drops) what an older one stored
    newer = evaluator(tmp_path, hourly, store=stored(tmp_path, version=cache_version() + "-next")).evaluate(at=at)
    assert newer.partitions_reused == 0
    assert results(newer) == results(run)


def test_an_unwritable_store_never_fails_a_run(tmp_path: Path, hourly: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "state" / "partitions").mkdir(parents=True)
    (tmp_path / "state" / "partitions" / "model=m1").write_text("a file where the directory should be")
    at = T0 + timedelta(hours=20)
    with caplog.at_level("WARNING", logger="atalaia.partitions"):
        runs = [evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at) for _ in range(2)]
    assert [r.partitions_reused for r in runs] == [0, 0]
    assert results(runs[0]) == results(runs[1]) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))
    assert any("cannot store partition profiles" in r.getMessage() for r in caplog.records)


def test_a_configuration_that_keeps_no_partitions_clears_the_stored_ones(tmp_path: Path, hourly: Path) -> None:
    at = T0 + timedelta(hours=20)
    evaluator(tmp_path, hourly, store=stored(tmp_path)).evaluate(at=at)
    assert len(stored_files(tmp_path)) == 6
    exact = evaluator(tmp_path, hourly, store=stored(tmp_path), detectors=[{"type": "ks", "exact": True}])
    assert exact.evaluate(at=at).partitions_reused == 0
    assert stored_files(tmp_path) == set()



def test_a_profile_that_does_not_pickle_is_not_stored_and_the_run_succeeds(tmp_path: Path, hourly: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    # a plugin's per-batch partial state may hold something pickle refuses (here a lambda): the store
    # logs it, the run and its findings are as without a store
    class Tally:
        def __init__(self, n: int) -> None:
            self.n, self.add = n, lambda a, b: a + b

        def merge(self, other: Tally) -> Tally:
            return Tally(self.add(self.n, other.n))

    class RowTally(Detector):
        name: ClassVar[str] = "row_tally"
        kind: ClassVar[Kind] = "quality"
        uses_batches: ClassVar[bool] = True
        batch_fields: ClassVar[frozenset[str]] = frozenset({"numeric"})

        def batch_extra(self, reference_extra: Any, batch: Any) -> Tally:
            return Tally(batch.n_rows)

        def score(self, summary: Any, current: Any, *, context: Any) -> list[Finding]:
            return []

    registry = Registry(extra={"row_tally": RowTally})
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(hourly), window="6h", detectors=[{"type": "psi"}, {"type": "row_tally"}],
        reference={"start": T0.isoformat(), "end": (T0 + timedelta(hours=12)).isoformat()})]}, registry=registry)
    at = T0 + timedelta(hours=20)
    with caplog.at_level("WARNING", logger="atalaia.partitions"):
        run = Evaluator(config=cfg, model=cfg.models[0], registry=registry, partition_store=stored(tmp_path)) \
            .evaluate(at=at)
    plain = Evaluator(config=cfg, model=cfg.models[0], registry=registry, reuse_partitions=False).evaluate(at=at)
    assert run.outcome == "success" and results(run) == results(plain)
    lines = [r.getMessage() for r in caplog.records if "cannot store partition profile" in r.getMessage()]
    assert len(lines) == 1 and "6 of 6 failed" in lines[0], lines  # one line per sync, not one per file
    assert stored_files(tmp_path) == set()  # nor a temporary file left behind


def test_a_late_run_with_an_older_reference_keeps_what_the_newer_run_kept(tmp_path: Path, hourly: Path) -> None:
    # run A is held in its reads (as one abandoned on a timeout); the reference data changes and run B, with
    # the rebuilt reference, keeps its partitions; when A finishes it must not drop them, in memory or on disk
    ev = evaluator(tmp_path, hourly, store=stored(tmp_path))
    hold, reading = threading.Event(), threading.Event()
    plain = ev.predictions

    def held() -> Any:
        sink = plain()
        batches = sink.batches

        def slow(**kw: Any) -> Any:
            if kw.get("files") is not None:  # the window, not the reference
                reading.set()
                assert hold.wait(30)
            yield from batches(**kw)

        sink.batches = slow
        return sink

    ev.predictions = held  # type: ignore[method-assign]
    late = threading.Thread(target=ev.evaluate, kwargs={"at": T0 + timedelta(hours=20)})
    late.start()
    assert reading.wait(30)
    ev.predictions = plain  # type: ignore[method-assign]
    hour = T0 + timedelta(hours=3)  # a late file in a reference hour: a new reference key
    part = hour_dir(hourly, hour)
    pq.write_table(pq.read_table(part / "part-0.parquet").slice(0, 10), part / "part-1.parquet")
    at = T0 + timedelta(hours=21)
    newer = ev.evaluate(at=at)
    kept = set(ev._partitions)
    assert not newer.reference_cached and len(kept) == 6

    hold.set()
    late.join(30)
    assert not late.is_alive()
    assert set(ev._partitions) == kept
    assert stored_files(tmp_path) == {PartitionStore.name(k) for k in kept}
    again = ev.evaluate(at=at)
    assert again.partitions_reused == 6
    assert results(again) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))


def test_partitions_without_a_readable_row_merge_in_order_and_are_reported(tmp_path: Path, hourly: Path) -> None:
    # the first and last whole hours unreadable, one in the middle empty, one with a bad second file: every
    # run equals a fresh evaluation, bad files are reported every run, and only clean partitions are kept
    def part(h: int) -> Path:
        t = T0 + timedelta(hours=h)
        return hour_dir(hourly, t)

    (part(14) / "part-0.parquet").write_bytes(b"not parquet")
    (part(19) / "part-0.parquet").write_bytes(b"not parquet")
    pq.write_table(pq.read_table(part(16) / "part-0.parquet").slice(0, 0), part(16) / "part-0.parquet")
    (part(17) / "part-1.parquet").write_bytes(b"not parquet")
    for bad in (part(14) / "part-0.parquet", part(19) / "part-0.parquet", part(17) / "part-1.parquet"):
        settled(bad)
    ev = evaluator(tmp_path, hourly, store=stored(tmp_path))
    for at in (T0 + timedelta(hours=20), T0 + timedelta(hours=20, minutes=30), T0 + timedelta(hours=20)):
        run = ev.evaluate(at=at)
        fresh = evaluator(tmp_path, hourly, reuse=False).evaluate(at=at)
        assert results(run) == results(fresh) and run.rows == fresh.rows
        assert sorted(e.path.rsplit("/", 3)[-2] + "/" + e.path.rsplit("/", 1)[-1] for e in run.errors) == \
            ["hour=14/part-0.parquet", "hour=17/part-1.parquet", "hour=19/part-0.parquet"]
        assert sorted(k[0][0].hour for k in ev._partitions) == [15, 16, 18]
    assert run.partitions_reused == 3 and run.rows == 3 * 400



def test_a_reference_that_cannot_be_cached_is_used_from_memory(tmp_path: Path, hourly: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "references").write_text("a file where the cache directory should be")
    ev = evaluator(tmp_path, hourly, reuse=False)
    failed: list[str] = []
    ev.on_state_error = failed.append  # the daemon counts it in atalaia_state_errors_total{store="reference_cache"}
    at = T0 + timedelta(hours=20)
    with caplog.at_level("WARNING", logger="atalaia.evaluate"):
        first = ev.evaluate(at=at)
    assert any("cannot cache the reference profile" in r.getMessage() for r in caplog.records)
    assert failed == ["reference_cache"]
    second = ev.evaluate(at=at)
    assert (first.reference_cached, second.reference_cached) == (False, True)  # the second from memory
    assert results(first) == results(second)


def test_a_rolling_reference_leaves_one_cached_build_per_model(tmp_path: Path, hourly: Path) -> None:
    # rebuilt every reference_refresh: each build replaces the model's previous cache file, no other model's
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(hourly), window="2h", reference={"rolling": "6h"}, reference_refresh="1h")]})
    references = tmp_path / "state" / "references"
    references.mkdir(parents=True)
    others = {"m10-0123456789abcdef01234567.pkl", "m1-x-0123456789abcdef01234567.pkl"}
    for name in others:
        (references / name).write_bytes(b"another model's")
    ev = Evaluator(config=cfg, model=cfg.models[0])
    builds = []
    for hours in (16, 17, 18):
        run = ev.evaluate(at=T0 + timedelta(hours=hours))
        assert not run.reference_cached
        builds.append(sorted(p.name for p in references.iterdir() if p.name not in others))
    assert [len(b) for b in builds] == [1, 1, 1] and len({b[0] for b in builds}) == 3
    assert others <= {p.name for p in references.iterdir()}


def test_reference_files_that_differ_in_column_types_give_the_same_reference(tmp_path: Path, hourly: Path) -> None:
    # writers change: a dictionary-encoded or large_string category, timestamps in ms, a column written
    # non-nullable, integers where floats were: one reference, equal to the one of uniformly typed files
    def rewrite(root: Path, h: int, change: Any) -> None:
        f = hour_dir(root, T0 + timedelta(hours=h)) / "part-0.parquet"
        pq.write_table(change(pq.read_table(f)), f)

    def integral(t: pa.Table) -> pa.Table:
        return t.set_column(t.schema.get_field_index("x0"), "x0", pa.array(np.round(t["x0"].to_numpy())))

    variants = {
        1: lambda t: t.set_column(t.schema.get_field_index("c"), "c", t["c"].dictionary_encode()),
        2: lambda t: t.set_column(t.schema.get_field_index("c"), "c", t["c"].cast(pa.large_string())),
        3: lambda t: t.set_column(t.schema.get_field_index("ts"), "ts",
                                  t["ts"].cast(pa.timestamp("ms", tz="UTC"), safe=False)),
        4: lambda t: t.cast(pa.schema([f.with_nullable(f.name != "x2") for f in t.schema])),
        5: lambda t: t.set_column(t.schema.get_field_index("x0"), "x0", integral(t)["x0"].cast(pa.int64())),
    }
    uniform = tmp_path / "uniform"
    shutil.copytree(hourly, uniform)
    for root in (hourly, uniform):
        rewrite(root, 5, integral)
        rewrite(root, 3, lambda t: t.set_column(t.schema.get_field_index("ts"), "ts", pa.array(
            [v.replace(microsecond=v.microsecond // 1000 * 1000) for v in t["ts"].to_pylist()], t["ts"].type)))
    for h, change in variants.items():
        rewrite(hourly, h, change)
    assert len({pq.read_schema(p) for p in hourly.rglob("*.parquet")}) > 1

    at = T0 + timedelta(hours=20)
    mixed, same = evaluator(tmp_path, hourly).evaluate(at=at), evaluator(tmp_path / "u", uniform).evaluate(at=at)
    assert mixed.errors == [] and mixed.reference_rows == same.reference_rows == 12 * 400
    assert results(mixed) == results(same)


def test_a_reference_short_of_a_file_is_reported_and_built_again_next_run(tmp_path: Path, hourly: Path) -> None:
    # a file of the reference range fails once (an object store's transient error) and reads again unchanged,
    # same size and mtime: the short reference must not be cached under the complete files' key
    f = hour_dir(hourly, T0 + timedelta(hours=4)) / "part-0.parquet"
    good, st = f.read_bytes(), settled(f).stat()  # an hour old: not a file still being written
    f.write_bytes(b"x" * len(good))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    ev = evaluator(tmp_path, hourly)
    at = T0 + timedelta(hours=20)

    short = ev.evaluate(at=at)
    assert [e.path for e in short.errors] == [str(f)] and short.outcome == "partial"
    assert short.reference_rows == 11 * 400 and not short.reference_cached
    assert not list((tmp_path / "state" / "references").glob("*.pkl"))

    f.write_bytes(good)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    whole = ev.evaluate(at=at)
    assert whole.errors == [] and whole.reference_rows == 12 * 400 and not whole.reference_cached
    assert whole.partitions_reused == 0  # those counted on the short reference's grids are not reused
    again = evaluator(tmp_path, hourly).evaluate(at=at)  # a restart: from the cache
    assert again.reference_cached and again.reference_rows == 12 * 400
    assert results(again) == results(whole)


def test_a_rolling_reference_is_not_rebuilt_for_new_files_of_the_partition_holding_its_end(tmp_path: Path) -> None:
    # a sink partitioned by day, a writer adding a file every few minutes: the reference is built again
    # when its range moves (reference_refresh), or when a partition wholly inside it changes
    root = tmp_path / "daily"

    def add(t: datetime, n: int = 200) -> Path:
        part = root / f"date={t:%Y-%m-%d}"
        part.mkdir(parents=True, exist_ok=True)
        f = part / f"part-{t:%H%M}.parquet"
        write_hourly_sink(tmp_path / "one", start=t, hours=1, rows_per_hour=n, seed=t.hour)
        (hour_dir(tmp_path / "one", t) / "part-0.parquet").rename(f)
        return f

    for h in range(40):
        add(T0 + timedelta(hours=h))
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(root), window="1h", reference={"rolling": "24h"}, reference_refresh="1h")]})
    ev = Evaluator(config=cfg, model=cfg.models[0])
    at = T0 + timedelta(hours=40, minutes=5)
    assert not ev.evaluate(at=at).reference_cached
    add(T0 + timedelta(hours=40, minutes=2))  # today's partition, which holds the range's end
    assert ev.evaluate(at=at + timedelta(minutes=5)).reference_cached
    restarted = Evaluator(config=cfg, model=cfg.models[0])
    assert restarted.evaluate(at=at + timedelta(minutes=5)).reference_cached
    add(T0 + timedelta(hours=1, minutes=30))  # late rows in yesterday's partition, wholly inside the range
    assert not restarted.evaluate(at=at + timedelta(minutes=10)).reference_cached
    assert not restarted.evaluate(at=at + timedelta(hours=1)).reference_cached  # the range moved
    assert restarted.evaluate(at=at + timedelta(hours=1, minutes=5)).reference_cached


def test_partitions_counted_before_a_timeout_are_kept_for_the_next_run(tmp_path: Path, hourly: Path) -> None:
    # a cold window that takes longer than the timeout to read is read over several runs, not never
    class Slow(Evaluator):
        ticks = 0.0

        def clock(self) -> float:
            Slow.ticks += 1.0  # each deadline check (one per batch and file) a second later
            return Slow.ticks

        def predictions(self) -> ParquetSink:
            sink = super().predictions()
            sink.clock = self.clock
            return sink

    cfg = evaluator(tmp_path, hourly).config
    ev = Slow(config=cfg, model=cfg.models[0])
    ev.evaluate(at=T0 + timedelta(hours=20))  # builds the reference, counts nothing it keeps for this test
    ev._partitions.clear()
    at = T0 + timedelta(hours=20)
    kept = []
    for _ in range(6):
        try:
            done = ev.evaluate(at=at, deadline=Slow.ticks + 4.5)
            break
        except SourceTimeout:
            kept.append(len(ev._partitions))
    assert kept and kept == sorted(kept) and kept[-1] > 0 and len(kept) < 6
    assert results(done) == results(evaluator(tmp_path, hourly, reuse=False).evaluate(at=at))


def test_a_failing_detector_costs_only_its_own_findings(tmp_path: Path, hourly: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Detector):
        name: ClassVar[str] = "broken"
        kind: ClassVar[Kind] = "drift"

        def score(self, summary: Any, current: Any, *, context: Any) -> list[Finding]:
            raise ZeroDivisionError("a plugin's edge case")

    registry = Registry(extra={"broken": Broken})
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(hourly), window="6h", detectors=[{"type": "psi"}, {"type": "broken"}, {"type": "ks"}],
        reference={"start": T0.isoformat(), "end": (T0 + timedelta(hours=12)).isoformat()})]}, registry=registry)
    at = T0 + timedelta(hours=20)
    with caplog.at_level("ERROR", logger="atalaia.evaluate"):
        run = Evaluator(config=cfg, model=cfg.models[0], registry=registry).evaluate(at=at)
    assert {f.detector for f in run.findings} == {"psi", "ks"}
    assert run.outcome == "partial" and run.errors == []
    assert run.detector_failures == ["detector broken failed: ZeroDivisionError: a plugin's edge case"]
    assert [r.getMessage() for r in caplog.records] == ["model m1: detector broken failed"]
    assert caplog.records[0].exc_info is not None


def test_an_empty_rolling_reference_gives_insufficient_data_from_every_detector(tmp_path: Path, hourly: Path) -> None:
    # a new deployment: the rolling reference lies before the sink's first row
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(hourly), window="6h", detectors=ALL_DRIFT, reference={"rolling": "7d"})]})
    run = Evaluator(config=cfg, model=cfg.models[0]).evaluate(at=T0 + timedelta(hours=6))
    assert run.reference_rows == 0 and run.rows == 6 * 400 and run.errors == []
    assert {f.detector for f in run.findings} == {d["type"] for d in ALL_DRIFT}
    assert {f.status for f in run.findings} == {"insufficient_data"}
