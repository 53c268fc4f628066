"""Which files a sink reads, and what a file that breaks part way costs (each failed before its fix, found by
a review): Parquet files named without an extension (Hive, Trino, Athena) or with an upper-case one were
silently left out; a file whose last row group is damaged was reported "skipped" though the rows read before
the break were counted.

Each test writes real Parquet files with pyarrow into ``tmp_path`` and runs the real CLI in process
(``monitor.cli.main``) or the sink itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from monitor.cli import main
from monitor.sources.parquet import ColumnKind, ParquetSink

AT = datetime(2026, 11, 27, 12, tzinfo=UTC)
WINDOW = AT - timedelta(hours=1)
HOUR = ("date=2026-11-27", "hour=11")
COLUMNS: dict[str, ColumnKind] = {"ts": "timestamp", "x": "numeric", "c": "categorical"}
#: named so that each file of :data:`ODD` sorts where its twin in :data:`PLAIN` does (the same read order)
ODD = ("20261127_110512_00042_abcde", "part-0.parquet", "part-1.PARQUET")
PLAIN = ("0.parquet", "1.parquet", "2.parquet")


def _table(start: datetime, n: int, *, seed: int, span: timedelta = timedelta(hours=1), shift: float = 0.0) -> pa.Table:
    """``n`` predictions spread evenly over ``span`` from ``start``: id, ts, x (numeric), c, pred."""
    rng = np.random.default_rng(seed)
    step = span.total_seconds() * 1e6 / n
    us = int(start.timestamp() * 1e6) + (np.arange(n) * step).astype("int64")
    return pa.table({
        "id": pa.array(np.arange(n).astype(str)),
        "ts": pa.array(us).cast(pa.timestamp("us", tz="UTC")),
        "x": rng.normal(shift, 1.0, n),
        "c": pa.array(rng.choice(["a", "b", "c"], n).tolist()),
        "pred": rng.integers(0, 2, n),
    })


def _settled(path: Path) -> Path:
    """Modified an hour ago: past any writer's grace."""
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def _config(root: Path, *, reference: str = "ref.parquet") -> Path:
    path = root / "atalaia.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "models": [{
        "name": "m", "schedule": {"every": "5m"}, "window": "1h",
        "predictions": {"path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred"},
        "features": {"numeric": ["x"], "categorical": ["c"]},
        "reference": {"path": reference},
        "detectors": [{"type": "psi"}, {"type": "ks"}, {"type": "chi2"}, {"type": "data_quality"}],
    }]}))
    return path


def _check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    capsys.readouterr()
    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", AT.isoformat(), "--format", "json"], stdout=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], capsys.readouterr().err


def _sink(root: Path, names: tuple[str, ...], *, sidecars: bool = False) -> Path:
    """A sink of one hour partition holding 3 x 1000 rows of the window under ``names``, and a 2000-row
    reference; ``sidecars``: beside them, Parquet content under names of other formats (never to be read)."""
    part = root.joinpath("preds", *HOUR)
    part.mkdir(parents=True)
    for seed, name in enumerate(names, start=1):
        pq.write_table(_table(WINDOW, 1000, seed=seed), part / name)
    if sidecars:
        for name in ("schema.json", "manifest.csv", "part-0.parquet.crc", "part-0.c000"):
            pq.write_table(_table(WINDOW, 500, seed=50, shift=5.0), part / name)
    pq.write_table(_table(AT - timedelta(days=3), 2000, seed=99), root / "ref.parquet")
    return root


def _damage_row_group(path: Path, group: int, column: str = "x") -> None:
    """Overwrite the pages of ``column`` in row group ``group`` (as the review's script did): the footer stays
    readable, and reading that row group fails."""
    md = pq.ParquetFile(path).metadata
    chunk = next(md.row_group(group).column(j) for j in range(md.num_columns) if md.schema.column(j).path == column)
    first = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(first + 20, first + chunk.total_compressed_size - 4):
        data[i] = 0x55
    path.write_bytes(bytes(data))
    _settled(path)


# --------------------------------------------------------------------------- which files are read


def test_extensionless_and_upper_case_names_are_read_with_the_findings_of_normal_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = _sink(tmp_path / "odd", ODD, sidecars=True)
    plain = _sink(tmp_path / "plain", PLAIN)

    code, findings, err = _check(_config(odd), capsys)
    assert code in (0, 1) and err == "", err
    assert {f["n_current"] for f in findings} == {3000}  # not 1000 (only part-0.parquet), not 5000 (the sidecars)

    code_plain, findings_plain, _ = _check(_config(plain), capsys)
    assert code_plain == code
    assert findings == findings_plain

    sink = ParquetSink.open(str(odd / "preds"), timestamp="ts")
    assert sorted(Path(f.path).name for f in sink.files(WINDOW, AT)) == sorted(ODD)
    assert sorted(Path(f).name for f in sink.passed_over) == ["manifest.csv", "part-0.c000", "part-0.parquet.crc",
                                                              "schema.json"]


def test_a_reference_folder_reads_an_extensionless_file_too(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path, PLAIN)
    refs = tmp_path / "refs"
    refs.mkdir()
    (tmp_path / "ref.parquet").rename(refs / "ref.parquet")
    pq.write_table(_table(AT - timedelta(days=2), 500, seed=98), refs / "000000_0")  # Hive's naming

    code, findings, err = _check(_config(tmp_path, reference="refs"), capsys)
    assert code in (0, 1) and err == "", err
    assert {(f["n_current"], f["n_reference"]) for f in findings} == {(3000, 2500)}


def test_bookkeeping_and_marker_files_are_neither_read_nor_reported(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path, ODD)
    part = tmp_path.joinpath("preds", *HOUR)
    (part / "_SUCCESS").write_bytes(b"")
    (part / "._SUCCESS.crc").write_bytes(b"\0\1\2\3")
    (part / ".20261127_110512_00042_abcde.crc").write_bytes(b"\0\1\2\3")
    _settled(_write(part.parent / "hour=11_$folder$", b""))  # Hadoop's S3 folder marker: empty, no extension
    _settled(_write(part / "000000_0", b""))  # an empty extension-less file: a marker too, no rows either way

    code, findings, err = _check(_config(tmp_path), capsys)
    assert code in (0, 1) and err == "", err
    assert {f["n_current"] for f in findings} == {3000}


def test_an_extensionless_file_that_is_no_parquet_is_reported_corrupt_by_name_and_the_others_are_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path, ODD)
    notes = _settled(_write(tmp_path.joinpath("preds", *HOUR, "NOTES"), b"written by the nightly export\n"))

    code, findings, err = _check(_config(tmp_path), capsys)

    assert code == 2
    assert {f["n_current"] for f in findings} == {3000}
    (line,) = [ln for ln in err.splitlines() if "NOTES" in ln]
    assert "ERROR" in line and "model m: skipped unreadable Parquet file" in line, err
    assert "a name without an extension is read as Parquet" in line and f"(file={notes})" in line, err

    sink = ParquetSink.open(str(tmp_path / "preds"), timestamp="ts")
    rows = sum(b.num_rows for b in sink.batches(columns=COLUMNS, start=WINDOW, end=AT))
    assert rows == 3000
    assert [(Path(e.path or ""), e.reason) for e in sink.errors] == [(notes, "corrupt")]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_window_whose_files_are_all_passed_over_by_name_says_so(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path, ("rows.csv", "rows.json"))  # Parquet written under other formats' names: not read

    code, findings, err = _check(_config(tmp_path), capsys)

    assert code == 2
    assert {f["n_current"] for f in findings} == {0}
    assert "no Parquet file to read for 2026-11-27T11:00:00Z..2026-11-27T12:00:00Z: 2 files passed over by name " \
           "(rows.csv, rows.json)" in err, err
    assert "names ending in .parquet, .parq or .pq (any case) and names without an extension" in err, err
    assert "the window 2026-11-27T11:00:00Z..2026-11-27T12:00:00Z" in err and "has no rows" in err, err

    # beside a file that is read, they are not worth a warning
    pq.write_table(_table(WINDOW, 1000, seed=1), tmp_path.joinpath("preds", *HOUR, "part-0.parquet"))
    code, findings, err = _check(_config(tmp_path), capsys)
    assert code in (0, 1) and err == "", err
    assert {f["n_current"] for f in findings} == {1000}


def test_a_reference_folder_whose_files_are_all_passed_over_says_so(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _sink(tmp_path, PLAIN)
    refs = tmp_path / "refs"
    refs.mkdir()
    (tmp_path / "ref.parquet").rename(refs / "ref.Parquet.bak")

    code, findings, err = _check(_config(tmp_path, reference="refs"), capsys)

    assert code == 2
    assert f"{refs}: no Parquet file to read: 1 file passed over by name (ref.Parquet.bak)" in err, err
    assert {(f["n_current"], f["n_reference"]) for f in findings} == {(3000, 0)}


# --------------------------------------------------------------------------- a file that fails part way


def test_a_file_failing_in_a_late_row_group_says_how_many_of_its_rows_were_read_and_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """400,000 rows in 4 row groups, the last damaged: the run reads in batches of 262,144, so the first batch
    is counted before the second reaches the damage.  Those rows, and only those, are the window's."""
    (tmp_path / "preds").mkdir()
    bad = tmp_path / "preds" / "part-0.parquet"
    pq.write_table(_table(WINDOW, 400_000, seed=1), bad, row_group_size=100_000)
    _damage_row_group(bad, 3)
    pq.write_table(_table(AT - timedelta(days=3), 2000, seed=99), tmp_path / "ref.parquet")

    code, findings, err = _check(_config(tmp_path), capsys)

    assert code == 2
    assert {f["n_current"] for f in findings} == {262_144}
    (line,) = [ln for ln in err.splitlines() if str(bad) in ln]
    assert "ERROR" in line, err
    assert "model m: skipped the rest of the file: 262,144 of its 400,000 rows were read and counted, then it " \
           "failed: " in line, err
    assert line.endswith(f"(file={bad})"), err
    assert "skipped failed while reading" not in err, err


def test_the_rows_a_failing_file_reports_are_exactly_the_rows_it_handed_on(tmp_path: Path) -> None:
    """Through the sink: the figure in the message is the sum of the batches yielded, whether all the rows
    read were in the window or only some (then both figures are said); the reason stays ``corrupt``."""
    bad = tmp_path / "part-0.parquet"
    pq.write_table(_table(WINDOW, 1000, seed=1), bad, row_group_size=250)
    _damage_row_group(bad, 3)
    sink = ParquetSink.open(str(tmp_path), timestamp="ts")

    whole = sum(b.num_rows for b in sink.batches(columns=COLUMNS, start=WINDOW, end=AT, batch_size=100))
    (err,) = sink.errors
    assert 0 < whole < 1000 and err.reason == "corrupt" and Path(err.path or "") == bad
    assert str(err).startswith(f"the rest of the file: {whole:,} of its 1,000 rows were read and counted, "
                               "then it failed: "), err

    # minutes 5 to 50 of the hour: row groups 1 and 2 (15-45) wholly inside, read first; then 0 and 3 with the
    # row filter, whose rows before minute 5 are read but not counted, until row group 3 fails
    start, end = WINDOW + timedelta(minutes=5), WINDOW + timedelta(minutes=50)
    counted = sum(b.num_rows for b in sink.batches(columns=COLUMNS, start=start, end=end, batch_size=100))
    (err,) = sink.errors
    m = re.fullmatch(r"the rest of the file: ([\d,]+) of its 1,000 rows were read \(([\d,]+) of them in the window, "
                     r"counted\), then it failed: .+ \(file=.+\)", str(err))
    assert m, err
    decoded = int(m[1].replace(",", ""))
    assert int(m[2].replace(",", "")) == counted and 500 < counted < decoded < 1000, err


def test_a_file_failing_in_its_first_row_group_is_still_skipped_with_no_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "preds").mkdir()
    bad = tmp_path / "preds" / "part-0.parquet"
    pq.write_table(_table(WINDOW, 400_000, seed=1), bad, row_group_size=100_000)
    _damage_row_group(bad, 0)
    pq.write_table(_table(WINDOW, 1000, seed=2), tmp_path / "preds" / "part-1.parquet")
    pq.write_table(_table(AT - timedelta(days=3), 2000, seed=99), tmp_path / "ref.parquet")

    code, findings, err = _check(_config(tmp_path), capsys)

    assert code == 2
    assert {f["n_current"] for f in findings} == {1000}  # the good file only
    (line,) = [ln for ln in err.splitlines() if str(bad) in ln]
    assert "model m: skipped the file, which failed while reading: " in line and line.endswith(f"(file={bad})"), err
    assert "rows were read" not in err, err


def test_the_daemons_evaluation_logs_and_records_the_same_wording(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's runs go through the same evaluation: its error log line, and the run's error text (what
    the state store records), say how many rows were counted."""
    from monitor.config import load_config
    from monitor.evaluate import Evaluator

    (tmp_path / "preds").mkdir()
    bad = tmp_path / "preds" / "part-0.parquet"
    pq.write_table(_table(WINDOW, 400_000, seed=1), bad, row_group_size=100_000)
    _damage_row_group(bad, 3)
    pq.write_table(_table(AT - timedelta(days=3), 2000, seed=99), tmp_path / "ref.parquet")
    cfg = load_config(_config(tmp_path))

    with caplog.at_level(logging.ERROR, logger="atalaia"):
        ev = Evaluator(config=cfg, model=cfg.models[0]).evaluate(at=AT)

    assert ev.rows == 262_144 and ev.outcome == "partial"
    (err,) = ev.errors
    assert err.reason == "corrupt"
    assert str(err).startswith("the rest of the file: 262,144 of its 400,000 rows were read and counted"), err
    (record,) = [r for r in caplog.records if getattr(r, "file", None) == str(bad)]
    assert record.getMessage().startswith("model m: skipped the rest of the file: 262,144 of its 400,000 rows")
    assert record.reason == "corrupt"  # type: ignore[attr-defined]
