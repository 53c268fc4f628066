"""A sink's ``in_progress_grace`` (how long a Parquet file without a footer is taken as still being written),
and the reference cache key's footer reads on a thread pool.

A writer slower than five minutes per file (a Spark job, a slow stream) had every file it was writing
reported ``corrupt``, so ``AtalaiaSourceErrors`` fired for a healthy writer: the grace is now a key of
each sink.  A fixed ``{start, end}`` reference asked each file written after its end whether it holds
rows of the range one footer at a time: one object-store round trip after another.

The tests write real Parquet files with pyarrow and run the real CLI in process (``monitor.cli.main``),
with the flat sink and helpers of ``test_datapath_edge_cases``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from monitor.config import load_config
from monitor.evaluate import FOOTER_READERS, Evaluator
from monitor.sources.parquet import FileEntry, ParquetSink
from test_datapath_edge_cases import AT, _check, _config, _set_mtime, _sink, _table, _validate

PREDICTIONS = {"path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred"}


def _footerless(path: Path, *, age: timedelta) -> Path:
    """A Parquet file cut before its footer, as a writer still appending row groups leaves it (the footer
    comes when it closes), last modified ``age`` ago.  Its 50 rows lie in the window ``[AT - 1h, AT)``."""
    pq.write_table(_table(AT - timedelta(minutes=20), n=50, seed=9), path)
    path.write_bytes(path.read_bytes()[:-200])
    return _modified(path, age=age)


def _modified(path: Path, *, age: timedelta) -> Path:
    t = time.time() - age.total_seconds()
    os.utime(path, (t, t))
    return path


# --------------------------------------------------------------------------- 1. the grace, per sink


@pytest.mark.parametrize("where", ["predictions", "reference"])
def test_a_footerless_file_within_the_configured_grace_is_left_for_later_and_past_it_reported_corrupt(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    """A file modified 10 minutes ago without a footer: past the default 5m it is ``corrupt`` (exit 2,
    named on stderr); under a 20m grace it is a file still being written, left for a later run without
    an error (a check says it left it out).  ``0s`` turns the grace off: even a file modified this instant is reported."""
    _sink(tmp_path)
    (tmp_path / "refs").mkdir()  # a folder reference, so that a file can be being written into it
    (tmp_path / "ref.parquet").rename(tmp_path / "refs" / "ref.parquet")
    live = _footerless(tmp_path / ("preds" if where == "predictions" else "refs") / "live.parquet",
                       age=timedelta(minutes=10))

    def check(grace: str | None) -> tuple[int, list[dict[str, Any]], str]:
        key = {} if grace is None else {"in_progress_grace": grace}
        config = _config(tmp_path, predictions=PREDICTIONS | (key if where == "predictions" else {}),
                         reference={"path": "refs"} | (key if where == "reference" else {}))
        capsys.readouterr()
        code, findings = _check(config)
        return code, findings, capsys.readouterr().err

    code, findings, err = check("20m")
    # left for a later run, not reported corrupt; a one-shot check says it left it out
    assert code != 2 and "unreadable" not in err and "left out 1 file(s) still being written" in err, err
    assert {(f["n_current"], f["n_reference"]) for f in findings} == {(400, 400)}  # the complete files

    code, findings, err = check(None)  # the default, 5m
    assert code == 2
    assert "skipped unreadable Parquet file" in err and f"file={live}" in err, err
    assert {(f["n_current"], f["n_reference"]) for f in findings} == {(400, 400)}  # the rest is still read

    _modified(live, age=timedelta(0))
    code, _, err = check(None)
    assert code != 2 and "unreadable" not in err and "still being written" in err, err  # within the default grace
    code, findings, err = check("0s")
    assert code == 2 and f"file={live}" in err, err
    assert {(f["n_current"], f["n_reference"]) for f in findings} == {(400, 400)}


def test_bad_grace_values_are_refused_by_validate_each_with_its_key_path_all_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path)
    ref_start, ref_end = AT - timedelta(days=3), AT - timedelta(days=2)
    config = _config(
        tmp_path,
        predictions=PREDICTIONS | {"in_progress_grace": 5},
        ground_truth={"path": "preds", "id": "id", "label": "pred", "timestamp": "ts", "in_progress_grace": "-5m"},
        reference={"start": ref_start.isoformat(), "end": ref_end.isoformat(), "in_progress_grace": "1m"},
        window="fortnight")
    capsys.readouterr()
    assert _validate(config) == 2
    err = capsys.readouterr().err
    assert "4 configuration problems" in err, err
    for line in (
            "models[0].predictions.in_progress_grace: must be a duration with a unit (30s, 5m, 1h, 7d), got 5",
            "models[0].ground_truth.in_progress_grace: must be a duration of 0s or more, got '-5m'",
            "models[0].reference.in_progress_grace: must be given only with 'path' (a 'start'+'end' or 'rolling' "
            "reference is read from the predictions sink, under predictions.in_progress_grace), got it with "
            "'start+end'",
            "models[0].window: must be a duration with a unit (30s, 5m, 1h, 7d), got 'fortnight'"):
        assert f"  {line}\n" in err, err

    for grace in ("0s", "20m", "1.5h"):
        config = _config(tmp_path, predictions=PREDICTIONS | {"in_progress_grace": grace},
                         reference={"path": "ref.parquet", "in_progress_grace": grace})
        assert _validate(config) == 0, capsys.readouterr().err
        m = load_config(config).models[0]
        assert m.predictions.in_progress_grace == m.reference.in_progress_grace


# --------------------------------------------------------------------------- 2. the reference key's footer reads


def test_late_files_rebuild_a_fixed_range_reference_only_when_they_reach_into_its_range(tmp_path: Path) -> None:
    """Files written after the range's end (any file written now is) count in the cache key only when their
    rows reach into the range: more files after it leave the cached reference alone, a backfill whose
    first rows fall just before the end (a row group straddling it) rebuilds it, and a warm check then
    agrees with a cold one."""
    _sink(tmp_path)
    preds = tmp_path / "preds"
    ref_start, ref_end = AT - timedelta(days=3), AT - timedelta(days=2)
    pq.write_table(_table(ref_start, seed=2), preds / "range.parquet")
    _set_mtime(preds / "range.parquet", ref_end - timedelta(hours=1))  # written within the range: counted

    def late(name: str, first_row: timedelta, n: int = 100) -> None:
        pq.write_table(_table(ref_end + first_row, n=n, seed=len(name)), preds / name)
        _set_mtime(preds / name, ref_end + timedelta(days=1))

    for i in range(5):
        late(f"after-{i}.parquet", timedelta(hours=i + 1))
    config = _config(tmp_path, reference={"start": ref_start.isoformat(), "end": ref_end.isoformat()})
    references = tmp_path / "state" / "references"
    _, first = _check(config)
    assert {f["n_reference"] for f in first} == {400}
    cached = sorted(references.glob("*.pkl"))
    assert len(cached) == 1

    for i in range(5, 9):
        late(f"after-{i}.parquet", timedelta(hours=i + 1))
    _, second = _check(config)
    assert {f["n_reference"] for f in second} == {400}
    assert sorted(references.glob("*.pkl")) == cached  # the same key: the cached reference stands

    late("backfill.parquet", -timedelta(seconds=120), n=400)  # rows 0..119 in the range, the rest after
    _, warm = _check(config)
    assert {f["n_reference"] for f in warm} == {520}
    assert len(rebuilt := sorted(references.glob("*.pkl"))) == 1 and rebuilt != cached
    shutil.rmtree(tmp_path / "state")
    _, cold = _check(config)
    assert warm == cold


class _FooterProbe:
    """Wraps a sink's :meth:`ParquetSink.holds_rows`: records each answer and the thread that gave it, and
    how many calls ran at once.  Each call waits (up to 5 s, once) until ``expect`` calls are in flight, so
    lookups made one at a time cannot pass for concurrent ones."""

    def __init__(self, *, expect: int) -> None:
        self.expect = expect
        self.lock = threading.Lock()
        self.answers: list[tuple[str, bool]] = []
        self.threads: set[str] = set()
        self.in_flight = 0
        self.most = 0
        self.all_in = threading.Event()
        self.waited_out = False

    def wrap(self, sink: ParquetSink) -> ParquetSink:
        real = sink.holds_rows

        def holds_rows(entry: FileEntry, start: Any, end: Any) -> bool:
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight >= self.expect:
                    self.all_in.set()
            try:
                if not self.waited_out and not self.all_in.wait(timeout=5.0):
                    self.waited_out = True
                answer = real(entry, start, end)
            finally:
                with self.lock:
                    self.in_flight -= 1
            with self.lock:
                self.answers.append((Path(entry.path).name, answer))
                self.threads.add(threading.current_thread().name)
            return answer

        sink.holds_rows = holds_rows  # type: ignore[method-assign]
        return sink


def test_the_reference_key_reads_late_footers_on_a_bounded_pool_once_each_with_the_serial_answers(
        tmp_path: Path) -> None:
    _sink(tmp_path)  # its window file, written after the range, is one more late file (with no rows of it)
    preds = tmp_path / "preds"
    ref_start, ref_end = AT - timedelta(days=3), AT - timedelta(days=2)
    pq.write_table(_table(ref_start, seed=2), preds / "range.parquet")
    _set_mtime(preds / "range.parquet", ref_end - timedelta(hours=1))
    inside = [f"inside-{i}.parquet" for i in range(4)]
    after = [f"after-{i}.parquet" for i in range(8)]
    for i, name in enumerate(inside + after):
        first = ref_start + timedelta(hours=2 * i) if name in inside else ref_end + timedelta(hours=i)
        pq.write_table(_table(first, n=50, seed=i), preds / name)
        _set_mtime(preds / name, ref_end + timedelta(days=1))
    late = sorted([*inside, *after, "w.parquet"])
    assert len(late) > FOOTER_READERS  # more lookups than threads: the bound is reached and held

    probe = _FooterProbe(expect=FOOTER_READERS)

    class Probed(Evaluator):
        def predictions(self) -> ParquetSink:
            return probe.wrap(super().predictions())

    cfg = load_config(_config(tmp_path, reference={"start": ref_start.isoformat(), "end": ref_end.isoformat()}))
    ev = Probed(config=cfg, model=cfg.models[0])
    ref, cached = ev.reference(AT)

    assert not probe.waited_out and probe.most == FOOTER_READERS, (probe.most, probe.waited_out)
    assert threading.current_thread().name not in probe.threads
    # one footer read per late file, each answering as a plain serial lookup does
    plain = ParquetSink.open(str(preds), timestamp="ts")
    serial = sorted((Path(f.path).name, plain.holds_rows(f, ref_start, ref_end))
                    for f in plain.files(ref_start, ref_end) if Path(f.path).name in late)
    assert sorted(probe.answers) == serial
    assert {name for name, holds in serial if holds} == set(inside)
    assert not cached and ref.profile.n_rows == 400 + 4 * 50

    # answers are kept per file: the next run reads no footer; a rewritten file is asked once more
    assert ev.reference(AT)[1] and len(probe.answers) == len(late)
    pq.write_table(_table(ref_end + timedelta(hours=30), n=60, seed=7), preds / "after-0.parquet")
    _set_mtime(preds / "after-0.parquet", ref_end + timedelta(days=1, hours=1))
    probe.waited_out = True  # a single lookup: nothing to wait for
    assert ev.reference(AT)[1]  # it holds no rows of the range: the same key, the cached reference
    assert probe.answers[len(late):] == [("after-0.parquet", False)]
