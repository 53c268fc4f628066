"""The Parquet source: pruning, projection, exact windows, bad files, the label join, and S3 (moto).

Everything here reads real Parquet files written with pyarrow; the object-store tests run a real
``moto`` S3 server on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detectors.errors import SourceError, SourceTimeout
from monitor.config import parse_config
from monitor.evaluate import Evaluator
from monitor.sources.parquet import IN_PROGRESS_SECONDS, ColumnKind, ParquetSink, _row_groups, coalesce, join_labels, label_lookup, partition_range
from tests.conftest import T0, free_port, hour_dir, model_config, settled, write_hourly_sink

COLS: dict[str, ColumnKind] = {"ts": "timestamp", "x0": "numeric", "x1": "numeric", "c": "categorical"}


def read_all(sink: ParquetSink, columns: dict[str, ColumnKind] = COLS, start: datetime | None = None,
             end: datetime | None = None) -> pa.Table:
    batches = list(sink.batches(columns=columns, start=start, end=end))
    if not batches:
        return pa.table({name: pa.array([], type=pa.null()) for name in columns})
    return pa.Table.from_batches(batches)


def part_file(root: Path, t: datetime) -> Path:
    return hour_dir(root, t) / "part-0.parquet"


def small_table(start: datetime, n: int, *, step: timedelta = timedelta(minutes=1), seed: int = 0,
                id_prefix: str = "p") -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": [f"{id_prefix}{i}" for i in range(n)],
        "ts": pa.array([start + i * step for i in range(n)], type=pa.timestamp("us", tz="UTC")),
        "x0": rng.normal(0, 1, n),
        "x1": rng.normal(0, 1, n),
        "c": rng.choice(["a", "b"], n),
    })


def write_small_hourly(root: Path, hours: int, n: int = 10) -> None:
    for h in range(hours):
        t = T0 + timedelta(hours=h)
        f = part_file(root, t)
        f.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(small_table(t, n, seed=h, id_prefix=f"h{h}-"), f)


# --------------------------------------------------------------------------- partition pruning


def test_a_one_hour_window_opens_only_its_partition(sink: Path) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    assert len(src.files()) == 48

    start, end = T0 + timedelta(hours=10), T0 + timedelta(hours=11)
    files = src.files(start, end)
    assert [Path(f.path) for f in files] == [part_file(sink, start)]
    assert files[0].span == (start, end)

    # an unaligned hour overlaps two partitions; one across midnight spans two dates
    assert [Path(f.path) for f in src.files(start + timedelta(minutes=30), end + timedelta(minutes=30))] == [
        part_file(sink, start), part_file(sink, end)]
    midnight = T0 + timedelta(hours=24)
    assert [Path(f.path) for f in src.files(midnight - timedelta(minutes=1), midnight + timedelta(minutes=1))] == [
        part_file(sink, midnight - timedelta(hours=1)), part_file(sink, midnight)]


def test_files_outside_the_window_are_never_opened(sink: Path) -> None:
    """Corrupt files in other partitions give no error: pruning never touches them."""
    part_file(sink, T0 + timedelta(hours=30)).write_bytes(b"not parquet at all")
    truncated = part_file(sink, T0 + timedelta(hours=9))
    truncated.write_bytes(truncated.read_bytes()[:100])
    src = ParquetSink.open(str(sink), timestamp="ts")
    start, end = T0 + timedelta(hours=10), T0 + timedelta(hours=11)

    table = read_all(src, start=start, end=end)

    assert src.errors == []
    assert table.num_rows == 1000  # every row of hour 10, none of any other hour
    ts = table.column("ts").to_pylist()
    assert min(ts) >= start and max(ts) < end


@pytest.mark.parametrize("layout", [
    "date={t:%Y-%m-%d}/hour={t:%H}",
    "dt={t:%Y%m%d}/hour={t:%H}",
    "year={t:%Y}/month={t:%m}/day={t:%d}/hour={t:%H}",
    "year={t:%Y}/month={t:%m}/day={t:%d}",
    "region=eu/date={t:%Y-%m-%d}",
])
def test_pruning_understands_the_usual_hive_layouts(tmp_path: Path, layout: str) -> None:
    daily = "hour" not in layout
    step = timedelta(days=1) if daily else timedelta(hours=1)
    for i in range(6):
        t = T0 + i * step
        folder = tmp_path / layout.format(t=t)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(small_table(t, 5, step=step / 5, id_prefix=f"{i}-"), folder / "part-0.parquet")
    src = ParquetSink.open(str(tmp_path), timestamp="ts")

    start = T0 + 2 * step + step / 4
    files = src.files(start, start + step / 2)
    assert [Path(f.path).parent for f in files] == [tmp_path / layout.format(t=T0 + 2 * step)]
    table = read_all(src, start=start, end=start + step / 2)
    assert src.errors == []
    assert sorted(table.column("ts").to_pylist()) == [T0 + 2 * step + k * step / 5 for k in (2, 3)]


def test_partition_range_of_month_and_year_partitions() -> None:
    assert partition_range({"year": "2026", "month": "12"}) == (datetime(2026, 12, 1, tzinfo=UTC),
                                                               datetime(2027, 1, 1, tzinfo=UTC))
    assert partition_range({"year": "2026", "month": "02"}) == (datetime(2026, 2, 1, tzinfo=UTC),
                                                               datetime(2026, 3, 1, tzinfo=UTC))
    assert partition_range({"year": "2026"}) == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert partition_range({"date": "not-a-date"}) is None


def test_bookkeeping_files_are_ignored(tmp_path: Path) -> None:
    write_small_hourly(tmp_path, 2)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "_common_metadata").write_bytes(b"\0\1")
    (part_file(tmp_path, T0).parent / ".part-0.parquet.crc").write_bytes(b"\0\1\2")
    (part_file(tmp_path, T0).parent / "README.txt").write_text("notes")
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    assert len(src.files()) == 2
    assert read_all(src).num_rows == 20 and src.errors == []


# --------------------------------------------------------------------------- projection


def test_only_the_requested_columns_come_back_in_the_requested_order(sink: Path) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    columns: dict[str, ColumnKind] = {"x1": "numeric", "ts": "timestamp"}
    batches = list(src.batches(columns=columns, start=T0, end=T0 + timedelta(hours=3)))
    assert batches and src.errors == []
    for b in batches:
        assert b.schema.names == ["x1", "ts"]
        assert isinstance(b, pa.RecordBatch)
    assert sum(b.num_rows for b in batches) == 3000


def test_filtering_on_time_requires_the_timestamp_column(sink: Path) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    with pytest.raises(ValueError, match="timestamp"):
        list(src.batches(columns={"x0": "numeric"}, start=T0, end=T0 + timedelta(hours=1)))
    # without a window, no timestamp is needed
    assert sum(b.num_rows for b in src.batches(columns={"x0": "numeric"})) == 48_000


def test_batches_are_streamed_in_bounded_sizes(sink: Path) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    sizes = [b.num_rows for b in src.batches(columns={"ts": "timestamp", "x0": "numeric"}, start=T0,
                                             end=T0 + timedelta(hours=2), batch_size=300)]
    assert sum(sizes) == 2000 and max(sizes) <= 300


def test_small_files_are_joined_into_full_batches_and_a_schema_change_ends_one(tmp_path: Path) -> None:
    # five hourly files of 10 rows, each with its own category dictionary; the fourth stores x0 as float32
    for h in range(5):
        t = T0 + timedelta(hours=h)
        table = small_table(t, 10, seed=h)
        table = table.set_column(table.schema.get_field_index("c"), "c",
                                 pa.array([f"h{h}-{i % 3}" for i in range(10)]).dictionary_encode())
        if h == 3:
            table = table.set_column(table.schema.get_field_index("x0"), "x0", table.column("x0").cast(pa.float32()))
        f = part_file(tmp_path, t)
        f.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, f)
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    separate = list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=5)))

    joined = list(coalesce(iter(separate), rows=25))

    assert [b.num_rows for b in separate] == [10] * 5
    # 10+10+10 reach 25; the float32 file starts a batch of its own; the last file follows it
    assert [b.num_rows for b in joined] == [30, 10, 10]
    assert [b.schema.field("x0").type for b in joined] == [pa.float64(), pa.float32(), pa.float64()]
    assert pa.Table.from_batches(joined[:1]).column("c").to_pylist() == [
        v for b in separate[:3] for v in b.column("c").to_pylist()]
    assert sorted(v for b in joined for v in b.column("x1").to_pylist()) == sorted(
        v for b in separate for v in b.column("x1").to_pylist())


# --------------------------------------------------------------------------- exact [start, end)


START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
END = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(("unit", "tz"), [("us", "UTC"), ("us", None), ("ns", None), ("ns", "UTC"),
                                          ("ms", "UTC"), ("ms", None), ("s", None),
                                          ("us", "America/Sao_Paulo")])
def test_the_window_is_exactly_start_inclusive_end_exclusive(tmp_path: Path, unit: str, tz: str | None) -> None:
    one = np.timedelta64(1, unit)
    s64 = np.datetime64(START.replace(tzinfo=None), unit)
    e64 = np.datetime64(END.replace(tzinfo=None), unit)
    values = np.array([s64 - one, s64, s64 + one, e64 - one, e64, e64 + one], dtype=f"datetime64[{unit}]")
    # shuffle, so that the filter and not the order decides
    values = values[[3, 0, 5, 1, 4, 2]]
    f = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"ts": pa.array(values, type=pa.timestamp(unit, tz=tz)),
                             "x0": np.arange(6, dtype=float)}), f)

    src = ParquetSink.open(str(f), timestamp="ts")
    table = read_all(src, {"ts": "timestamp", "x0": "numeric"}, START, END)

    assert src.errors == []
    col = table.column("ts")
    assert col.type.tz == tz
    got = sorted(col.cast(pa.timestamp("ns", tz=tz)).cast(pa.int64()).to_pylist())
    assert got == [int(v.astype("datetime64[ns]").astype(np.int64)) for v in (s64, s64 + one, e64 - one)]


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_window_bounds_finer_than_the_column_unit(tmp_path: Path, unit: str) -> None:
    """The scheduler's window ends at ``now()`` (microseconds); a ms- or s-unit sink must still be read,
    with the exact rule ``start <= ts < end``."""
    one = np.timedelta64(1, unit)
    start = START + timedelta(microseconds=250)
    end = END + timedelta(microseconds=123)
    s64 = np.datetime64(START.replace(tzinfo=None), unit)
    e64 = np.datetime64(END.replace(tzinfo=None), unit)
    values = np.array([s64, s64 + one, e64, e64 + one], dtype=f"datetime64[{unit}]")
    f = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"ts": pa.array(values, type=pa.timestamp(unit, tz="UTC")), "x0": [0.0, 1, 2, 3]}), f)
    src = ParquetSink.open(str(f), timestamp="ts")

    table = read_all(src, {"ts": "timestamp", "x0": "numeric"}, start, end)

    # START < start → excluded; START + 1 unit ≥ start; END < end; END + 1 unit > end
    assert table.column("x0").to_pylist() == [1.0, 2.0]
    assert src.errors == []


@pytest.mark.parametrize(("unit", "int96"), [("us", False), ("ns", False), ("ms", False), ("s", False),
                                           ("us", True)])
def test_row_group_statistics_skip_groups_outside_and_spare_the_filter_inside(tmp_path: Path, unit: str,
                                                                              int96: bool) -> None:
    one = np.timedelta64(1, unit)
    s64 = np.datetime64(START.replace(tzinfo=None), unit)
    e64 = np.datetime64(END.replace(tzinfo=None), unit)
    values = np.array([s64 - 2 * one, s64 - one, s64 - one, s64, s64 + one, e64 - one, e64 - one, "NaT", e64,
                       e64 + one], dtype=f"datetime64[{unit}]")
    f = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"ts": pa.array(values, type=pa.timestamp(unit, tz="UTC"), from_pandas=True),
                             "x0": np.arange(10, dtype=float)}), f, row_group_size=2,
                   use_deprecated_int96_timestamps=int96)
    src = ParquetSink.open(str(f), timestamp="ts")

    whole, partly = _row_groups(pq.ParquetFile(f), "ts", START, END)
    table = read_all(src, {"ts": "timestamp", "x0": "numeric"}, START, END)

    if int96:  # no usable statistics: every group is filtered row by row
        assert (whole, partly) == ([], [0, 1, 2, 3, 4])
    else:  # [s-2, s-1] out, [s-1, s] partly, [s+1, e-1] whole, [e-1, null] partly, [e, e+1] out
        assert (whole, partly) == ([2], [1, 3])
    assert sorted(table.column("x0").to_pylist()) == [3.0, 4.0, 5.0, 6.0]
    assert src.errors == []


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "footer_only_torn"])
def test_a_corrupt_file_is_skipped_and_named_while_the_others_are_read(tmp_path: Path, damage: str) -> None:
    write_small_hourly(tmp_path, 3)
    bad = part_file(tmp_path, T0 + timedelta(hours=1))
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b"",
                     "footer_only_torn": data[:-12] + b"\0" * 8 + data[-4:]}[damage])
    settled(bad)  # past IN_PROGRESS_SECONDS: no writer is still at it
    src = ParquetSink.open(str(tmp_path), timestamp="ts")

    table = read_all(src, start=T0, end=T0 + timedelta(hours=3))

    assert table.num_rows == 20
    assert set(table.column("ts").to_pylist()) == {
        T0 + timedelta(hours=h, minutes=m) for h in (0, 2) for m in range(10)}
    (err,) = src.errors
    assert isinstance(err, SourceError) and isinstance(err, OSError)
    assert err.reason == "corrupt"
    assert Path(err.path or "") == bad
    assert str(bad) in str(err)
    # the next read starts clean
    list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=1)))
    assert src.errors == []


def test_a_file_without_footer_is_left_for_a_later_run_while_young_and_corrupt_once_old(tmp_path: Path) -> None:
    # a ParquetWriter appending row groups writes the footer when it closes: until then the file has none
    write_small_hourly(tmp_path, 3)
    live = part_file(tmp_path, T0 + timedelta(hours=1))
    live.write_bytes(live.read_bytes()[:-100])
    modified = live.stat().st_mtime
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    for age, errors in ((IN_PROGRESS_SECONDS - 5, 0), (IN_PROGRESS_SECONDS + 5, 1)):
        src.wall_clock = lambda age=age: modified + age  # type: ignore[misc]
        assert read_all(src, start=T0, end=T0 + timedelta(hours=3)).num_rows == 20
        assert [e.reason for e in src.errors] == ["corrupt"] * errors


def test_a_missing_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    write_small_hourly(tmp_path, 3)
    bad = part_file(tmp_path, T0 + timedelta(hours=2))
    pq.write_table(pq.read_table(bad).drop_columns(["x1"]), bad)
    src = ParquetSink.open(str(tmp_path), timestamp="ts")

    batches = list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=3)))

    # the file's other columns are read: only x1 loses its rows
    assert sum(b.num_rows for b in batches) == 30
    assert sum(b.num_rows for b in batches if "x1" in b.schema.names) == 20
    assert all(set(b.schema.names) >= set(COLS) - {"x1"} for b in batches)
    (err,) = src.errors
    assert (Path(err.path or ""), err.column, err.reason) == (bad, "x1", "missing_column")
    assert str(bad) in str(err) and "x1" in str(err)


def test_every_bad_column_of_a_file_is_named_and_a_duplicated_one_is_said_so(tmp_path: Path) -> None:
    write_small_hourly(tmp_path, 2)
    bad = part_file(tmp_path, T0 + timedelta(hours=1))
    t = pq.read_table(bad)
    t = t.drop_columns(["x1"]).set_column(t.schema.get_field_index("x0"), "x0", pa.array([str(i) for i in range(10)]))
    pq.write_table(t.append_column("c", t.column("c")), bad)
    src = ParquetSink.open(str(tmp_path), timestamp="ts")

    batches = list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2)))

    assert sorted((e.column, e.reason) for e in src.errors) == [
        ("c", "retyped_column"), ("x0", "retyped_column"), ("x1", "missing_column")]
    assert "appears 2 times" in str(next(e for e in src.errors if e.column == "c"))
    assert sum(b.num_rows for b in batches) == 20  # ts and the rest of the bad file are still read


@pytest.mark.parametrize(("column", "bad_values", "kind"), [
    ("x0", pa.array([str(i) for i in range(10)]), "numeric"),            # numbers written as strings
    ("c", pa.array([[i] for i in range(10)]), "categorical"),            # categories written as lists
    ("ts", pa.array([f"2026-11-20T01:{i:02d}:00" for i in range(10)]), "timestamp"),  # time as text
])
def test_a_retyped_column_names_the_file_and_the_column(tmp_path: Path, column: str, bad_values: pa.Array,
                                                         kind: str) -> None:
    write_small_hourly(tmp_path, 3)
    bad = part_file(tmp_path, T0 + timedelta(hours=1))
    table = pq.read_table(bad)
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, bad_values), bad)
    src = ParquetSink.open(str(tmp_path), timestamp="ts")

    batches = list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=3)))

    # a retyped feature costs that column of the file; a retyped timestamp the whole file
    assert sum(b.num_rows for b in batches) == (20 if column == "ts" else 30)
    assert sum(b.num_rows for b in batches if column in b.schema.names) == 20
    (err,) = src.errors
    assert (Path(err.path or ""), err.column, err.reason) == (bad, column, "retyped_column")
    assert kind in str(err) and str(bad) in str(err)


def test_dictionary_encoded_and_integer_categories_are_accepted(tmp_path: Path) -> None:
    t = small_table(T0, 10)
    t = t.set_column(t.schema.get_field_index("c"), "c", t.column("c").dictionary_encode())
    pq.write_table(t, tmp_path / "a.parquet")
    t2 = small_table(T0 + timedelta(hours=1), 10)
    pq.write_table(t2.set_column(t2.schema.get_field_index("c"), "c", pa.array(range(10))), tmp_path / "b.parquet")
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    assert sum(b.num_rows for b in src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2))) == 20
    # floats too: pandas writes an integer column with a missing value as float64 (monitor.arrow.float_categories)
    t3 = small_table(T0 + timedelta(hours=1, minutes=30), 10)
    pq.write_table(t3.set_column(t3.schema.get_field_index("c"), "c", pa.array([1.0, None] * 5)),
                   tmp_path / "c.parquet")
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    assert sum(b.num_rows for b in src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2))) == 30
    assert not src.errors
    assert src.errors == []


@pytest.mark.parametrize("window", [(-3, -1), (48, 50), (10.25, 10.25)], ids=["before", "after", "zero-length"])
def test_an_empty_window_gives_no_batches_and_no_errors(sink: Path, window: tuple[float, float]) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    start, end = (T0 + timedelta(hours=h) for h in window)
    assert list(src.batches(columns=COLS, start=start, end=end)) == []
    assert src.errors == []
    table = src.read_table(columns=COLS, start=start, end=end)
    assert table.num_rows == 0 and table.schema.names == list(COLS)


def test_an_empty_window_inside_an_existing_partition(tmp_path: Path) -> None:
    f = part_file(tmp_path, T0)
    f.parent.mkdir(parents=True)
    pq.write_table(small_table(T0, 10), f)  # rows at minutes 0..9 only
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    assert len(src.files(T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))) == 1
    assert list(src.batches(columns=COLS, start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=40))) == []
    assert src.errors == []


def test_a_missing_sink_is_a_source_error(tmp_path: Path) -> None:
    uri = str(tmp_path / "does-not-exist")
    src = ParquetSink.open(uri, timestamp="ts")
    with pytest.raises(SourceError) as exc:
        src.files(T0, T0 + timedelta(hours=1))
    assert exc.value.path == uri and exc.value.reason == "missing" and uri in str(exc.value)
    with pytest.raises(SourceError):
        list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=1)))


def test_a_single_file_sink(tmp_path: Path) -> None:
    f = tmp_path / "predictions.parquet"
    pq.write_table(small_table(T0, 120), f)  # two hours, one row a minute
    src = ParquetSink.open(str(f), timestamp="ts")
    (entry,) = src.files(T0 + timedelta(hours=5), T0 + timedelta(hours=6))  # no partitions: never pruned
    assert Path(entry.path) == f and entry.span is None and entry.size == f.stat().st_size

    table = read_all(src, start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=90))
    assert table.num_rows == 60 and src.errors == []
    assert read_all(src, start=T0 + timedelta(hours=5), end=T0 + timedelta(hours=6)).num_rows == 0
    # a reference file is read whole, without a timestamp
    ref = ParquetSink.open(str(f), timestamp=None)
    assert ref.read_table(columns={"x0": "numeric", "c": "categorical"}).num_rows == 120


def test_a_source_past_its_deadline_times_out(sink: Path) -> None:
    src = ParquetSink.open(str(sink), timestamp="ts")
    src.clock = lambda: 1000.0
    with pytest.raises(SourceTimeout) as exc:
        list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2), deadline=999.0))
    assert exc.value.reason == "timeout" and exc.value.path
    assert isinstance(exc.value, TimeoutError)
    assert sum(b.num_rows for b in src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2),
                                                deadline=1001.0)) == 2000


@pytest.mark.parametrize("at_edge", [False, True])
def test_rows_without_a_timestamp_are_left_out_and_said_wherever_the_window_ends(
        tmp_path: Path, at_edge: bool, caplog: pytest.LogCaptureFixture) -> None:
    # a partition wholly inside the window is read without a row filter, one at its edge with one:
    # either way a row whose timestamp is null belongs to no window, and the file is named
    t = T0 + timedelta(hours=1)
    table = small_table(t, 50)
    ts = pa.array([None if i % 5 == 0 else v for i, v in enumerate(table["ts"].to_pylist())], table["ts"].type)
    f = part_file(tmp_path, t)
    f.parent.mkdir(parents=True)
    pq.write_table(table.set_column(1, "ts", ts), f)
    end = t + timedelta(hours=1) + (timedelta(milliseconds=1) if at_edge else timedelta(0))
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    with caplog.at_level("WARNING", logger="atalaia.sources"):
        got = read_all(src, start=T0, end=end)
    assert got.num_rows == 40 and got.column("ts").null_count == 0 and src.errors == []
    assert [r.getMessage() for r in caplog.records] == [f"{f}: left out 10 rows whose ts is null"]


def test_an_all_null_column_of_arrow_type_null_is_read_as_missing_values(tmp_path: Path) -> None:
    # pandas writes an all-None object column as Arrow type null: the hour's other columns must not be lost
    write_small_hourly(tmp_path, 2)
    f = part_file(tmp_path, T0)
    table = pq.read_table(f)
    pq.write_table(table.set_column(2, "x0", pa.nulls(table.num_rows)).set_column(
        4, "c", pa.nulls(table.num_rows)), f)
    assert pq.read_schema(f).field("x0").type == pa.null()
    src = ParquetSink.open(str(tmp_path), timestamp="ts")
    got = list(src.batches(columns=COLS, start=T0, end=T0 + timedelta(hours=2)))
    assert src.errors == [] and sum(b.num_rows for b in got) == 20
    assert [(b.column("x0").null_count, b.column("c").null_count) for b in got] == [(10, 10), (0, 0)]


def test_the_read_ahead_thread_ends_when_its_consumer_fails(tmp_path: Path) -> None:
    import threading
    import time

    from monitor.sources.parquet import prefetch

    def reader() -> Iterator[pa.RecordBatch]:  # the second batch fills the queue: the end waits behind it
        for i in range(2):
            yield pa.record_batch({"x": [float(i)]})

    before = {t for t in threading.enumerate() if t.name == "atalaia-read"}
    for _ in range(3):
        it = prefetch(reader(), depth=1)
        with pytest.raises(ValueError):
            for _ in it:
                time.sleep(0.05)  # the reader fills the queue and waits to hand over the end
                raise ValueError("counting failed")
        it.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and {t for t in threading.enumerate() if t.name == "atalaia-read"} - before:
        time.sleep(0.05)
    assert not {t for t in threading.enumerate() if t.name == "atalaia-read" and t.is_alive()} - before


# --------------------------------------------------------------------------- the label join


def _write_labels(root: Path, arrival: datetime, rows: list[tuple[str, int, timedelta]]) -> None:
    folder = root / f"date={arrival:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "id": [r[0] for r in rows],
        "label": pa.array([r[1] for r in rows], type=pa.int64()),
        "ts": pa.array([arrival + r[2] for r in rows], type=pa.timestamp("us", tz="UTC")),
    }), folder / "labels.parquet")


LABEL_COLS: dict[str, ColumnKind] = {"id": "any", "label": "numeric", "ts": "timestamp"}


def test_labels_join_by_id_and_the_latest_arrival_wins(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    day1, day3 = T0 + timedelta(days=1), T0 + timedelta(days=3)
    # p1 gets a corrected label two days later; in day 3's file the later arrival of p3 is listed first
    _write_labels(labels, day1, [("p0", 1, timedelta(hours=1)), ("p1", 0, timedelta(hours=2)),
                                 ("p2", 1, timedelta(hours=3))])
    _write_labels(labels, day3, [("p3", 1, timedelta(hours=9)), ("p1", 1, timedelta(hours=1)),
                                 ("p3", 0, timedelta(hours=4))])
    pred_ids = pa.array(["p0", "p1", "p2", "p3", "p4", "p5", "p1"])

    src = ParquetSink.open(str(labels), timestamp="ts")
    table = src.read_table(columns=LABEL_COLS, start=T0, end=T0 + timedelta(days=7))
    assert src.errors == [] and table.num_rows == 6
    lookup = label_lookup(table, id_column="id", label_column="label", timestamp="ts")
    assert dict(zip(lookup[0].to_pylist(), lookup[1].to_pylist(), strict=True)) == {
        "p0": 1, "p1": 1, "p2": 1, "p3": 1}
    assert join_labels(pred_ids, lookup).to_pylist() == [1, 1, 1, 1, None, None, 1]

    # replaying the past: only labels that had arrived by then count
    then = day1 + timedelta(days=1)
    past = src.read_table(columns=LABEL_COLS, start=T0, end=then)
    lookup_then = label_lookup(past, id_column="id", label_column="label", timestamp="ts")
    assert join_labels(pred_ids, lookup_then).to_pylist() == [1, 0, 1, None, None, None, 0]


def test_label_join_with_no_labels_yet_is_all_null(tmp_path: Path) -> None:
    empty = pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.float64()),
                      "ts": pa.array([], pa.timestamp("us", tz="UTC"))})
    lookup = label_lookup(empty, id_column="id", label_column="label", timestamp="ts")
    assert join_labels(pa.array(["a", "b"]), lookup).to_pylist() == [None, None]


def test_label_join_with_integer_ids() -> None:
    labels = pa.table({"pid": pa.array([7, 3, 7], pa.int64()), "y": [0.5, 1.5, 2.5],
                       "ts": pa.array([1, 2, 3], pa.timestamp("s"))})
    lookup = label_lookup(labels, id_column="pid", label_column="y", timestamp="ts")
    assert join_labels(pa.array([3, 7, 9], pa.int64()), lookup).to_pylist() == [1.5, 2.5, None]


# --------------------------------------------------------------------------- S3 (a real moto server)


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, object]]:
    """A moto S3 server on 127.0.0.1 with a bucket; yields (endpoint url, boto3 client)."""
    import boto3  # installed with moto
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        # dummy credentials for moto; pyarrow and boto3 both read the usual AWS variables
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.delenv("AWS_PROFILE", raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            client.create_bucket(Bucket="bucket")
            yield endpoint, client
        finally:
            server.stop()


def upload_tree(client: object, local: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``local`` to ``s3://bucket/prefix/…`` keeping the hive layout.

    (Uploaded with boto3's PutObject: moto 5.2.1 answers pyarrow's CompleteMultipartUpload with a
    wrong XML root — getmoto/moto#10055 — so pyarrow's own S3 writer cannot be used against it.)
    """
    keys = []
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        key = f"{prefix}/{f.relative_to(local).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())  # type: ignore[attr-defined]
        keys.append(key)
    return keys


def test_s3_sink_is_pruned_projected_and_read(s3: tuple[str, object], tmp_path: Path) -> None:
    endpoint, client = s3
    local = tmp_path / "preds"
    write_hourly_sink(local, start=T0, hours=6, rows_per_hour=200)
    # a corrupt object in a partition the window does not touch
    part_file(local, T0 + timedelta(hours=4)).write_bytes(b"corrupt")
    upload_tree(client, local, "bucket", "pruned/preds")

    src = ParquetSink.open("s3://bucket/pruned/preds", timestamp="ts", endpoint_url=endpoint, region="us-east-1")
    src.wall_clock = lambda: time.time() + 3600  # the objects were just put: an hour on, none is being written
    assert len(src.files()) == 6
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    (entry,) = src.files(start, end)
    assert entry.path == "bucket/pruned/preds/date=2026-11-20/hour=02/part-0.parquet"
    assert entry.span == (start, end)

    batches = list(src.batches(columns={"ts": "timestamp", "x0": "numeric"}, start=start, end=end))
    assert src.errors == []
    assert all(b.schema.names == ["ts", "x0"] for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 200
    assert table.column("x0").to_pylist() == pq.read_table(part_file(local, start)).column("x0").to_pylist()

    # reading across the corrupt object names it and keeps the rest
    rows = sum(b.num_rows for b in src.batches(columns={"ts": "timestamp"}, start=T0, end=T0 + timedelta(hours=6)))
    assert rows == 1000
    (err,) = src.errors
    assert err.reason == "corrupt" and err.path == "bucket/pruned/preds/date=2026-11-20/hour=04/part-0.parquet"


def test_s3_missing_prefix_is_a_source_error(s3: tuple[str, object]) -> None:
    endpoint, _ = s3
    src = ParquetSink.open("s3://bucket/no/such/prefix", timestamp="ts", endpoint_url=endpoint, region="us-east-1")
    with pytest.raises(SourceError) as exc:
        src.files(T0, T0 + timedelta(hours=1))
    assert exc.value.path == "s3://bucket/no/such/prefix"


def test_evaluator_end_to_end_on_an_s3_sink(s3: tuple[str, object], tmp_path: Path) -> None:
    endpoint, client = s3
    local = tmp_path / "preds"
    drift_from = T0 + timedelta(hours=6)
    write_hourly_sink(local, start=T0, hours=8, rows_per_hour=500,
                      shift=lambda t: 1.0 if t >= drift_from else 0.0)
    upload_tree(client, local, "bucket", "e2e/preds")
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "storage": {"endpoint_url": endpoint, "region": "us-east-1", "connect_timeout": "5s",
                    "request_timeout": "10s"},
        "models": [model_config(pred_path="s3://bucket/e2e/preds", reference={
            "start": T0.isoformat(), "end": (T0 + timedelta(hours=4)).isoformat()})],
    })
    ev = Evaluator(config=cfg, model=cfg.models[0])

    result = ev.evaluate(at=T0 + timedelta(hours=7))

    assert result.errors == [] and result.outcome == "success"
    assert result.rows == 500 and result.reference_rows == 2000
    assert result.window_start == T0 + timedelta(hours=6) and result.window_end == T0 + timedelta(hours=7)
    by = {(f.detector, f.target): f for f in result.findings}
    for det in ("psi", "ks"):
        assert by[(det, "x0")].status == "alert", by[(det, "x0")]
        assert by[(det, "x1")].status == "ok", by[(det, "x1")]
        assert by[(det, "x0")].n_current == 500 and by[(det, "x0")].n_reference == 2000
    assert result.findings[0].window_end == "2026-11-20T07:00:00Z"

    # a window before the drift is quiet, and the reference comes from the cache
    quiet = ev.evaluate(at=T0 + timedelta(hours=6))
    assert quiet.reference_cached
    assert all(f.status == "ok" for f in quiet.findings if f.target in ("x0", "x1", "x2"))
