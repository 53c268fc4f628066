"""The SQLite state store: runs, latest findings, watermarks and detector state survive a restart."""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from detectors.base import Finding
from monitor.state import RunRecord, StateStore, StateStoreError, is_corruption
from tests.conftest import T0


def finding(model: str = "m1", *, target: str = "x0", value: float | None = 0.3, status: str = "alert",
            window_end: datetime = T0 + timedelta(hours=1), group: str | None = None,
            p_value: float | None = 1e-6) -> Finding:
    return Finding(model=model, detector="psi", kind="drift", target=target, statistic="psi", value=value,
                   threshold=0.25, p_value=p_value, status=status, n_reference=24_000, n_current=1000,  # type: ignore[arg-type]
                   window_start=(window_end - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
                   window_end=window_end.isoformat().replace("+00:00", "Z"), group=group)


def run(model: str = "m1", *, end: datetime = T0 + timedelta(hours=1), outcome: str = "success",
        rows: int = 1000, error: str | None = None) -> RunRecord:
    return RunRecord(model=model, started_at=end + timedelta(seconds=2), window_start=end - timedelta(hours=1),
                     window_end=end, outcome=outcome, duration_seconds=0.25, rows=rows, error=error)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore.in_dir(tmp_path / "state")
    yield s  # type: ignore[misc]
    s.close()


def test_runs_are_recorded_and_read_back_newest_first(store: StateStore) -> None:
    first = run(end=T0 + timedelta(hours=1))
    second = run(end=T0 + timedelta(hours=2), outcome="partial", rows=900,
                 error="unreadable Parquet file (file=/x/part-0.parquet)")
    failed = run(end=T0 + timedelta(hours=3), outcome="failure", rows=0, error="the sink does not exist")
    store.record_run(first, [finding()])
    store.record_run(second, [finding(window_end=second.window_end)])
    store.record_run(failed)  # no findings: a failed run

    assert store.runs("m1") == [failed, second, first]
    assert store.runs("m1", limit=1) == [failed]
    assert store.runs("other") == []
    got = store.runs("m1")[0]
    assert got.window_end == T0 + timedelta(hours=3) and got.window_end.tzinfo is not None
    assert store.stats()["runs"] == 3


def test_latest_findings_survive_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    s = StateStore.in_dir(state_dir)
    old = [finding(value=0.05, status="ok")]
    new = [finding(window_end=T0 + timedelta(hours=2)),
           finding(target="x1", value=0.01, status="ok", window_end=T0 + timedelta(hours=2), p_value=None),
           finding(target="selection_rate", group="sex=F,race=B", window_end=T0 + timedelta(hours=2)),
           finding(target="x2", value=None, status="insufficient_data", p_value=None,
                   window_end=T0 + timedelta(hours=2))]
    s.record_run(run(), old)
    s.record_run(run(end=T0 + timedelta(hours=2)), new)
    s.record_run(run("m2"), [finding("m2")])
    s.close()

    reopened = StateStore.in_dir(state_dir)  # a restarted daemon
    try:
        latest = reopened.latest_findings()
        assert latest == {"m1": new, "m2": [finding("m2")]}
        assert reopened.watermark("m1") == T0 + timedelta(hours=2)
        assert len(reopened.runs("m1")) == 2
    finally:
        reopened.close()


def test_non_finite_values_are_stored_as_null(store: StateStore) -> None:
    store.record_run(run(), [finding(value=float("nan"), p_value=float("inf"))])
    (f,) = store.latest_findings()["m1"]
    assert f.value is None and f.p_value is None


def test_a_run_without_findings_keeps_the_previous_latest_findings(store: StateStore) -> None:
    store.record_run(run(), [finding()])
    store.record_run(run(end=T0 + timedelta(hours=2), outcome="failure", error="timeout"))
    assert store.latest_findings() == {"m1": [finding()]}
    assert store.watermark("m1") == T0 + timedelta(hours=1)


def test_the_watermark_only_moves_forward(store: StateStore) -> None:
    assert store.watermark("m1") is None
    store.record_run(run(end=T0 + timedelta(hours=5)), [])
    assert store.watermark("m1") == T0 + timedelta(hours=5)
    store.record_run(run(end=T0 + timedelta(hours=3)), [])  # a replayed, older window
    assert store.watermark("m1") == T0 + timedelta(hours=5)
    store.record_run(run(end=T0 + timedelta(hours=5, microseconds=1)), [])
    assert store.watermark("m1") == T0 + timedelta(hours=5, microseconds=1)
    store.record_run(run(end=T0 + timedelta(hours=5)), [])  # whole second after a fractional one
    assert store.watermark("m1") == T0 + timedelta(hours=5, microseconds=1)
    store.record_run(run(end=T0 + timedelta(hours=6)), [])
    assert store.watermark("m1") == T0 + timedelta(hours=6)
    assert store.watermark("m2") is None


def test_the_watermark_compares_instants_not_text(store: StateStore) -> None:
    """A window end given with a non-UTC offset is the same instant; earlier instants never win."""
    store.record_run(run(end=T0 + timedelta(hours=5)), [])
    lisbon_summer = timezone(timedelta(hours=1))
    earlier = (T0 + timedelta(hours=4)).astimezone(lisbon_summer)  # 05:00+01:00 == 04:00Z
    store.record_run(run(end=earlier), [])
    wm = store.watermark("m1")
    assert wm is not None and wm == T0 + timedelta(hours=5)


def test_detector_state_round_trips_and_survives_a_restart(tmp_path: Path) -> None:
    s = StateStore.in_dir(tmp_path)
    blob = pickle.dumps({"width": 37, "total": 12.5, "buckets": [[0.1, 0.2], [0.3]]})
    assert s.load_detector_state("m1", "adwin") is None
    s.save_detector_state("m1", "adwin", blob)
    s.save_detector_state("m1", "ddm", b"\x00\xff" * 1000)
    s.save_detector_state("m2", "adwin", b"other model")
    assert s.load_detector_state("m1", "adwin") == blob
    s.save_detector_state("m1", "adwin", b"updated")  # overwritten, not duplicated
    s.close()

    s = StateStore.in_dir(tmp_path)
    try:
        assert s.load_detector_state("m1", "adwin") == b"updated"
        assert s.load_detector_state("m1", "ddm") == b"\x00\xff" * 1000
        assert s.load_detector_state("m2", "adwin") == b"other model"
        assert s.load_detector_state("m2", "ddm") is None
    finally:
        s.close()


def test_wal_mode_is_on(tmp_path: Path) -> None:
    s = StateStore.in_dir(tmp_path / "nested" / "state")  # folders are created
    s.record_run(run(), [finding()])
    assert (tmp_path / "nested" / "state" / "state.db").exists()
    with sqlite3.connect(tmp_path / "nested" / "state" / "state.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # a second reader sees committed data while the store stays open
        assert other.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    s.close()


def test_keep_runs_prunes_the_oldest_runs(store: StateStore) -> None:
    for h in range(1, 11):
        store.record_run(run(end=T0 + timedelta(hours=h)), keep_runs=4)
    runs = store.runs("m1")
    assert [r.window_end for r in runs] == [T0 + timedelta(hours=h) for h in (10, 9, 8, 7)]


def test_keep_runs_counts_each_models_own_runs(store: StateStore) -> None:
    """Pruning one model must keep its last ``keep_runs`` runs however busy the other models are."""
    for h in range(1, 11):
        for model in ("a", "b", "c"):
            store.record_run(run(model, end=T0 + timedelta(hours=h)), keep_runs=3)
    for model in ("a", "b", "c"):
        assert [r.window_end for r in store.runs(model)] == [T0 + timedelta(hours=h) for h in (10, 9, 8)], model
    assert store.stats()["runs"] == 9


def test_concurrent_writers_from_threads(store: StateStore) -> None:
    def work(model: str) -> None:
        for h in range(1, 21):
            store.record_run(run(model, end=T0 + timedelta(hours=h)), [finding(model)])
            store.save_detector_state(model, "adwin", str(h).encode())

    threads = [threading.Thread(target=work, args=(f"m{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.stats()["runs"] == 80
    for i in range(4):
        assert store.watermark(f"m{i}") == T0 + timedelta(hours=20)
        assert store.load_detector_state(f"m{i}", "adwin") == b"20"
    assert set(store.latest_findings()) == {"m0", "m1", "m2", "m3"}


def test_a_failed_transaction_leaves_no_trace(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("INSERT INTO watermarks (model, window_end) VALUES ('m9', '2026-01-01T00:00:00+00:00')")
        raise RuntimeError("boom")
    assert store.watermark("m9") is None
    store.record_run(run("m9"), [])  # the store is still usable
    assert store.watermark("m9") == T0 + timedelta(hours=1)


def test_run_times_keep_their_timezone(store: StateStore) -> None:
    store.record_run(run(end=datetime(2026, 11, 20, 1, 0, 0, 123456, tzinfo=UTC)))
    (r,) = store.runs("m1")
    assert r.window_end == datetime(2026, 11, 20, 1, 0, 0, 123456, tzinfo=UTC)
    assert r.window_end.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- a damaged or unusable store

STAMP = datetime(2026, 11, 27, 12, 30, 5, tzinfo=UTC)


def tear_a_page(db: Path, *, page: int) -> None:
    """Overwrite one page of a closed database with noise, as a torn write would leave it."""
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    assert db.stat().st_size >= (page + 1) * size, "the database is too small for that page"
    with db.open("r+b") as f:
        f.seek(page * size)
        f.write(bytes((i * 131 + 17) % 256 for i in range(size)))


@pytest.mark.parametrize("damage", ["random_bytes", "torn_page"])
def test_a_damaged_database_is_moved_aside_and_a_fresh_one_created(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    db = state / "state.db"
    if damage == "random_bytes":
        state.mkdir()
        db.write_bytes(bytes((i * 7919) % 251 for i in range(8192)))
    else:
        s = StateStore.in_dir(state)
        for h in range(1, 200):
            s.record_run(run(end=T0 + timedelta(hours=h), error="e" * 500), [finding()])
        s.close()
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
        tear_a_page(db, page=5)
        raw = sqlite3.connect(db)
        try:  # SQLite opens it, and finds it damaged only when it reads that page
            assert raw.execute("PRAGMA quick_check").fetchall() != [("ok",)]
        finally:
            raw.close()
    damaged = db.read_bytes()

    with caplog.at_level(logging.ERROR, logger="atalaia.state"):
        s = StateStore.in_dir(state, clock=lambda: STAMP)
    try:
        aside = state / "state.db.corrupt-20261127T123005Z"
        assert aside.read_bytes() == damaged, sorted(p.name for p in state.iterdir())
        (rec,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert str(db) in rec.getMessage() and aside.name in rec.getMessage()
        # the fresh store works and starts empty
        assert s.runs("m1") == [] and s.latest_findings() == {}
        s.record_run(run(), [finding()])
        assert len(s.runs("m1")) == 1
    finally:
        s.close()
    # a second damage the same second does not overwrite the first one set aside
    db.write_bytes(b"not sqlite either" * 100)
    StateStore.in_dir(state, clock=lambda: STAMP).close()
    assert (state / "state.db.corrupt-20261127T123005Z-1").read_bytes() == b"not sqlite either" * 100
    assert aside.read_bytes() == damaged


def test_recover_replaces_an_open_store(tmp_path: Path) -> None:
    s = StateStore.in_dir(tmp_path, clock=lambda: STAMP)
    try:
        s.record_run(run(), [finding()])
        aside = s.recover(sqlite3.DatabaseError("database disk image is malformed"))
        assert aside.name == "state.db.corrupt-20261127T123005Z" and aside.exists()
        assert s.runs("m1") == []
        s.record_run(run(), [finding()])
        assert len(s.runs("m1")) == 1
    finally:
        s.close()


@pytest.mark.parametrize("layout", ["under_a_file", "db_is_a_folder"])
def test_an_unusable_folder_raises_a_state_store_error_naming_it(tmp_path: Path, layout: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    if layout == "under_a_file":
        where, needle = afile / "state", "Not a directory"
    else:
        where = tmp_path / "state"
        (where / "state.db").mkdir(parents=True)
        needle = "unable to open"
    with pytest.raises(StateStoreError) as exc:
        StateStore.in_dir(where)
    assert isinstance(exc.value, OSError)
    assert str(where) in str(exc.value) and needle in str(exc.value)
    assert not list(where.glob("state.db.corrupt-*")) if where.is_dir() else True


def test_is_corruption_tells_damage_from_other_errors() -> None:
    assert is_corruption(sqlite3.DatabaseError("file is not a database")) is True
    assert is_corruption(sqlite3.DatabaseError("database disk image is malformed")) is True
    assert is_corruption(sqlite3.DatabaseError("something else")) is False
    assert is_corruption(sqlite3.OperationalError("database is locked")) is False
    assert is_corruption(ValueError("no")) is False
    con = sqlite3.connect(":memory:")
    try:
        with pytest.raises(sqlite3.OperationalError) as exc:
            con.execute("SELECT * FROM nowhere")
        assert is_corruption(exc.value) is False
    finally:
        con.close()
