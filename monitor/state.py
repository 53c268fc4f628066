"""The durable state store: SQLite in WAL mode inside the state dir.

Holds each model's run history and watermark (the end of the last window
evaluated), the latest findings (so a restarted daemon exports them at
once), and opaque detector state for streaming detectors.  One connection,
guarded by a lock, serves the scheduler's threads.

A run is recorded when it starts (outcome :data:`RUNNING`, see :meth:`StateStore.start_run`) and
completed when it ends (:meth:`StateStore.record_run` with the id): a process killed during a run
(out of memory, SIGKILL) leaves its row ``running``, and the next daemon on the state dir records it
as failed (:meth:`StateStore.fail_unfinished`), so a crash loop still shows as missed runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.base import Finding
from detectors.errors import AtalaiaError

__all__ = ["DirLock", "StateStore", "RunRecord", "StateStoreError", "is_corruption", "RUNNING", "DIED"]

log = logging.getLogger("atalaia.state")


class StateStoreError(AtalaiaError, OSError):
    """The state store cannot be used: its folder cannot be created or written, or SQLite refuses it."""


class _Damaged(sqlite3.DatabaseError):
    """SQLite's quick check found the database damaged."""


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file is damaged (not SQLite, or a malformed page)."""
    if isinstance(exc, _Damaged):
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(exc)  # raised by hand, without SQLite's code
    return "malformed" in text or "not a database" in text


def _utc_now() -> datetime:
    return datetime.now(UTC)


#: the outcome of a run recorded at its start and not completed yet
RUNNING = "running"
#: the error a run left ``running`` by a process that died is completed with
DIED = "daemon died during the run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    started_at TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_seconds REAL NOT NULL,
    rows INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_model ON runs(model, id);
CREATE TABLE IF NOT EXISTS latest_findings (
    model TEXT PRIMARY KEY,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    findings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS watermarks (
    model TEXT PRIMARY KEY,
    window_end TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS detector_state (
    model TEXT NOT NULL,
    detector TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (model, detector)
);
"""

_RUN_COLUMNS = "model, started_at, window_start, window_end, outcome, duration_seconds, rows, error"


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    model: str
    started_at: datetime
    window_start: datetime
    window_end: datetime
    outcome: str
    duration_seconds: float
    rows: int
    error: str | None = None


class DirLock:
    """An exclusive lock on a state dir for the life of a daemon (``flock`` on ``atalaia.lock``, which holds
    the owner's pid): two daemons on one state dir would drop each other's caches and mix their runs.
    The kernel releases it when the process ends, however it ends."""

    NAME = "atalaia.lock"

    def __init__(self, state_dir: Path | str) -> None:
        import fcntl

        self.path = Path(state_dir) / self.NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateStoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = ""
            with contextlib.suppress(OSError):
                owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            os.close(self._fd)
            self._fd = None
            raise StateStoreError(f"it is in use by another atalaia daemon (pid {owner or 'unknown'}, "
                                  f"{self.path})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


class StateStore:
    """SQLite-backed state; ``path`` is the database file (its folder is created).

    ``clock`` stamps the name a damaged database is moved aside to.
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = Path(path)
        self.clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(f"cannot create the folder {self.path.parent}: {exc.strerror or exc}") from None
        self._lock = threading.RLock()
        self._db = self._connect()

    @classmethod
    def in_dir(cls, state_dir: Path | str, *, clock: Callable[[], datetime] = _utc_now) -> StateStore:
        return cls(Path(state_dir) / "state.db", clock=clock)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            if "config" not in {row[1] for row in db.execute("PRAGMA table_info(latest_findings)")}:
                db.execute("ALTER TABLE latest_findings ADD COLUMN config TEXT")  # a store of an earlier release
            found = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if found != ["ok"]:
                raise _Damaged("; ".join(map(str, found[:3])))
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        """Open the database; a damaged one is moved aside and a fresh one created."""
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise StateStoreError(f"cannot open {self.path}: {exc}") from None
            self._set_aside(exc)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(f"cannot create {self.path}: {exc}") from None

    def _set_aside(self, exc: BaseException) -> Path:
        stamp = self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, Path(f"{aside}{suffix}"))
        except OSError as err:
            raise StateStoreError(f"{self.path} is damaged ({exc}) and cannot be moved aside: "
                                  f"{err.strerror or err}") from None
        log.error("state store %s is damaged (%s): moved it aside to %s and started a fresh one "
                  "(it holds run history and caches, which are rebuilt)", self.path, exc, aside.name)
        return aside

    def recover(self, exc: BaseException) -> Path:
        """After ``exc`` showed the open database damaged: move it aside and start afresh; returns
        where the damaged file went."""
        with self._lock:
            self._db.close()
            aside = self._set_aside(exc)
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as err:
                raise StateStoreError(f"cannot create {self.path}: {err}") from None
            return aside

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- runs and findings ----------------------------------------------------
    def start_run(self, *, model: str, started_at: datetime, window_start: datetime, window_end: datetime) -> int:
        """Record a run as started (outcome :data:`RUNNING`); returns its id for :meth:`record_run`."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (model, started_at, window_start, window_end, outcome, duration_seconds, rows, error)"
                " VALUES (?, ?, ?, ?, ?, 0, 0, NULL)",
                (model, started_at.isoformat(), window_start.isoformat(), window_end.isoformat(), RUNNING))
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def fail_unfinished(self, *, error: str = DIED) -> list[RunRecord]:
        """Complete every run still :data:`RUNNING` as ``error`` (call it before any run of this process
        starts: with one daemon per state dir, such a run's process died); returns them as completed."""
        with self.transaction() as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE outcome = ? ORDER BY id",
                              (RUNNING,)).fetchall()
            db.execute("UPDATE runs SET outcome = 'error', error = ? WHERE outcome = ?", (error, RUNNING))
        return [replace(_record(r), outcome="error", error=error) for r in rows]

    def record_run(self, run: RunRecord, findings: Sequence[Finding] | None = None, *, config: str | None = None,
                   keep_runs: int = 10_000, run_id: int | None = None) -> None:
        """Store a run; when ``findings`` are given they become the model's latest and advance its watermark.

        ``config`` identifies the configuration that produced them (see :meth:`latest`); ``run_id``, from
        :meth:`start_run`, completes that row (it is inserted anew should the row be gone)."""
        with self.transaction() as db:
            updated = 0
            if run_id is not None:
                updated = db.execute(
                    "UPDATE runs SET model = ?, started_at = ?, window_start = ?, window_end = ?, outcome = ?,"
                    " duration_seconds = ?, rows = ?, error = ? WHERE id = ?",
                    (run.model, run.started_at.isoformat(), run.window_start.isoformat(), run.window_end.isoformat(),
                     run.outcome, run.duration_seconds, run.rows, run.error, run_id)).rowcount
            if not updated:
                db.execute(
                    "INSERT INTO runs (model, started_at, window_start, window_end, outcome, duration_seconds, rows,"
                    " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.model, run.started_at.isoformat(), run.window_start.isoformat(),
                     run.window_end.isoformat(), run.outcome, run.duration_seconds, run.rows, run.error))
            db.execute("DELETE FROM runs WHERE model = ? AND id NOT IN"
                       " (SELECT id FROM runs WHERE model = ? ORDER BY id DESC LIMIT ?)",
                       (run.model, run.model, keep_runs))
            if findings is not None:
                db.execute(
                    "INSERT INTO latest_findings (model, window_start, window_end, findings, config)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(model) DO UPDATE SET window_start=excluded.window_start,"
                    " window_end=excluded.window_end, findings=excluded.findings, config=excluded.config",
                    (run.model, run.window_start.isoformat(), run.window_end.isoformat(),
                     json.dumps([f.to_dict() for f in findings]), config))
                db.execute("INSERT INTO watermarks (model, window_end) VALUES (?, ?)"
                           " ON CONFLICT(model) DO UPDATE SET window_end=excluded.window_end"
                           " WHERE excluded.window_end > watermarks.window_end",
                           (run.model, run.window_end.astimezone(UTC).isoformat()))

    def runs(self, model: str, *, limit: int = 100) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE model = ? ORDER BY id DESC LIMIT ?", (model, limit)).fetchall()
        return [_record(r) for r in rows]

    def last_success(self, model: str) -> RunRecord | None:
        """The model's latest run that produced findings (outcome success or partial)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE model = ? AND outcome IN ('success', 'partial')"
                " ORDER BY id DESC LIMIT 1", (model,)).fetchone()
        return _record(row) if row else None

    def latest_findings(self) -> dict[str, list[Finding]]:
        return {model: findings for model, (findings, _) in self.latest().items()}

    def latest(self) -> dict[str, tuple[list[Finding], str | None]]:
        """Each model's latest findings and the ``config`` recorded with them (``None``: not recorded)."""
        with self._lock:
            rows = self._db.execute("SELECT model, findings, config FROM latest_findings").fetchall()
        return {model: ([Finding(**d) for d in json.loads(text)], config) for model, text, config in rows}

    def watermark(self, model: str) -> datetime | None:
        with self._lock:
            row = self._db.execute("SELECT window_end FROM watermarks WHERE model = ?", (model,)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    # -- detector state ---------------------------------------------------------
    def save_detector_state(self, model: str, detector: str, state: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO detector_state (model, detector, state) VALUES (?, ?, ?)"
                       " ON CONFLICT(model, detector) DO UPDATE SET state=excluded.state", (model, detector, state))

    def load_detector_state(self, model: str, detector: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM detector_state WHERE model = ? AND detector = ?",
                                   (model, detector)).fetchone()
        return bytes(row[0]) if row else None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"runs": self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]}


def _record(r: Sequence[Any]) -> RunRecord:
    return RunRecord(model=r[0], started_at=datetime.fromisoformat(r[1]), window_start=datetime.fromisoformat(r[2]),
                     window_end=datetime.fromisoformat(r[3]), outcome=r[4], duration_seconds=r[5], rows=r[6],
                     error=r[7])
