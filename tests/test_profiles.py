"""Arrow → profile conversion: category counting paths and the parallel profiler."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from monitor.arrow import labels, scalar, valid_mask, values_view
from monitor.profiles import Columns, WindowProfiler, category_counts, numeric_values, reference_profile, to_batch


def _oracle(arr: pa.Array) -> tuple[dict[str, int], int]:
    vc = pc.value_counts(arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr)
    values = vc.field("values").to_pylist()
    out: dict[str, int] = {}
    nulls = 0
    for v, c in zip(values, vc.field("counts").to_pylist(), strict=True):
        if v is None or v != v:  # null, or a float NaN
            nulls += c
            continue
        if isinstance(v, bool):  # booleans are 1 and 0, as numeric columns read them
            v = int(v)
        elif isinstance(v, float) and v.is_integer():  # a whole number is the integer ("2", not "2.0")
            v = int(v)
        out[str(v)] = out.get(str(v), 0) + c
    return out, nulls


@pytest.mark.parametrize("arr", [
    pa.array(["a", "b", None, "a", "c", None]),
    pa.array(["a", "b", None, "a", "c"]).dictionary_encode(),
    pa.DictionaryArray.from_arrays(pa.array([0, 1, 1, None, 2], type=pa.int8()), pa.array(["x", "y", "z"])),
    pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 2]), pa.array(["x", "y", "x"])),  # repeated dictionary value
    pa.array([3, -2, -2, 7, None, 3], type=pa.int64()),
    pa.array([0, 1, 1, 0], type=pa.int8()),
    pa.array([0, 10**9, 10**9], type=pa.int64()),  # wide range: hash path
    pa.array([True, False, None, True]),
    pa.array([], type=pa.int32()),
    pa.array([None, None], type=pa.int32()),
    pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, None]), pa.array(["x", None, "z"])),  # a null category
    pa.array([-100, 100, 5, None, -100], type=pa.int8()),  # offsets beyond int8
    pa.array([-30000, 30000, 0], type=pa.int16()),
    pa.array([5, 6, 7, 5, None, 9], type=pa.int64()).slice(1, 4),
    pa.array(["q", "r", "q", None, "s"]).dictionary_encode().slice(1, 3),
    pa.array([2**63 + 11, 2**63 + 12, None, 2**63 + 11], type=pa.uint64()),  # hashed ids beyond int64
    pa.array([2**64 - 1, 2**64 - 3, 0], type=pa.uint64()),  # wide range: hash path
    pa.array([250, 3, 250, None], type=pa.uint8()),
    pa.nulls(3),  # Arrow type null: pandas' all-None column
    pa.array([1.0, float("nan"), 3.0, None, 1.0]),  # pandas' integer column with a missing value
    pa.array([0.5, 2.0, float("nan"), 0.5]),  # not whole numbers: their text
    pa.array([1.0, 2.0, 1.0], type=pa.float32()).dictionary_encode(),
], ids=["string", "dict", "dict-int8-null", "dict-repeat", "int-neg-null", "int8", "int-wide", "bool", "empty",
        "all-null", "dict-null-value", "int8-wide", "int16-wide", "int-sliced", "dict-sliced", "uint64-high",
        "uint64-wide", "uint8", "null-type", "float-whole-nan", "float-text", "dict-float32"])
def test_category_counts_equal_arrow_value_counts(arr: pa.Array) -> None:
    counts = category_counts(arr)
    expected, nulls = _oracle(arr)
    assert counts.counts == expected
    assert counts.n_null == nulls


def test_numeric_values_keep_nulls_apart_from_nan() -> None:
    values, n_null = numeric_values(pa.array([1.0, None, float("nan"), 2.0]))
    assert n_null == 1 and np.isnan(values).sum() == 2
    ints, n_null = numeric_values(pa.array([1, None, 3], type=pa.int32()))
    assert n_null == 1 and ints.dtype == np.float64 and ints[0] == 1.0


def test_parallel_profiler_equals_sequential() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    table = pa.table({"x": rng.normal(size=n), "y": rng.exponential(size=n).astype(np.float32),
                      "c": pa.array(rng.choice(["a", "b", "c"], n)).dictionary_encode(),
                      "pred": rng.integers(0, 3, n)})
    cols = Columns(numeric=["x", "y"], categorical=["c"], prediction="pred")
    ref = reference_profile(table.slice(0, 20_000), columns=cols)
    seq = WindowProfiler(reference=ref, columns=cols)
    with ThreadPoolExecutor(2) as pool:
        par = WindowProfiler(reference=ref, columns=cols, pool=pool)
        for batch in table.slice(20_000).to_batches(max_chunksize=7_000):
            seq.add(batch)
            par.add(batch)
    for name in ("x", "y"):
        assert np.array_equal(seq.profile.numeric[name].counts, par.profile.numeric[name].counts)
        assert seq.profile.numeric[name].mean == par.profile.numeric[name].mean
    assert seq.profile.categorical == par.profile.categorical
    assert par.profile.n_rows == 30_000
    assert sum(par.profile.categorical["pred"].counts.values()) == 30_000


# --------------------------------------------------------------------------- Arrow → NumPy without pandas
# pyarrow's own to_numpy (which imports pandas) is the oracle

def _sliced(arr: pa.Array) -> pa.Array:
    return arr.slice(1, len(arr) - 2)  # a non-zero offset, also into the validity bitmap


NUMBERS = {
    "f64": pa.array([1.5, -2.0, float("nan"), 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),
    "f64-null": pa.array([1.5, None, float("nan"), None, 5.0, 6.0, None, 8.0, 9.0, None]),
    "f32-null": pa.array([1.5, None, 3.0, 4.0, None, 6.0, 7.0, 8.0, 9.0, 10.0], type=pa.float32()),
    "f16": pa.array(np.arange(10, dtype=np.float16)),
    "i8-null": pa.array([1, None, -3, 4, 5, None, 7, 8, 9, -128], type=pa.int8()),
    "u64": pa.array([0, 2**63, 5, 6, 7, 8, 9, 10, 11, 12], type=pa.uint64()),
    "i64-null": pa.array([2**40, None, -5, 6, 7, 8, 9, 10, 11, None], type=pa.int64()),
    "bool-null": pa.array([True, None, False, True, True, False, None, True, False, True]),
    "dict-f64": pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 1, 0, 0, 1, None, 0, 1], type=pa.int8()),
                                               pa.array([0.5, 2.5])),
    "all-null": pa.nulls(10, type=pa.float64()),
    "null-type": pa.nulls(10),
}


@pytest.mark.parametrize("sliced", [False, True], ids=["whole", "sliced"])
@pytest.mark.parametrize("name", list(NUMBERS))
def test_numeric_values_equal_pyarrow_to_numpy(name: str, sliced: bool) -> None:
    arr = _sliced(NUMBERS[name]) if sliced else NUMBERS[name]
    values, n_null = numeric_values(arr)
    decoded = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr
    if pa.types.is_floating(decoded.type):
        expected = decoded.to_numpy(zero_copy_only=False)
    else:  # integers (beyond 2**53 rounded to the nearest float) and booleans as float64, nulls as NaN
        expected = np.array([np.nan if v is None else float(v) for v in decoded.to_pylist()], dtype=np.float64)
    assert n_null == arr.null_count
    assert values.dtype == expected.dtype
    np.testing.assert_array_equal(values, expected)  # NaN where either a null or a NaN was
    # chunked the same: the chunks are joined first
    chunked = pa.chunked_array([arr.slice(0, 3), arr.slice(3)], type=arr.type)
    np.testing.assert_array_equal(numeric_values(chunked)[0], expected)


def test_a_null_free_float_column_is_a_read_only_view_not_a_copy() -> None:
    arr = pa.array(np.arange(8, dtype=np.float32)).slice(2)
    values, _ = numeric_values(arr)
    assert not values.flags.writeable and not values.flags.owndata
    assert values.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert valid_mask(arr) is None
    assert values_view(pa.array([], type=pa.float64())).size == 0


LABELLED = {
    "string-null": pa.array(["a", None, "b", "a", None, "c", "d", "a", "b", None]),
    "large-string": pa.array(["a", "bb", None, "a", "c", "d", "e", "f", "g", "h"], type=pa.large_string()),
    "dict-string-null": pa.array(["x", None, "y", "x", "z", None, "x", "y", "z", "x"]).dictionary_encode(),
    "dict-int-values": pa.DictionaryArray.from_arrays(pa.array([1, 0, None, 1, 1, 0, 0, 1, None, 0], type=pa.int16()),
                                                      pa.array([10, 20])),
    "int-null": pa.array([3, None, 3, 7, -1, 0, None, 2, 2, 9]),
    "bool": pa.array([True, False, None, True, True, False, True, None, False, True]),
    "all-null": pa.nulls(10, type=pa.string()),
}


@pytest.mark.parametrize("sliced", [False, True], ids=["whole", "sliced"])
@pytest.mark.parametrize("name", list(LABELLED))
def test_labels_equal_pyarrow_to_numpy_of_the_strings(name: str, sliced: bool) -> None:
    arr = _sliced(LABELLED[name]) if sliced else LABELLED[name]
    as_string = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr
    if pa.types.is_boolean(as_string.type):  # 1 and 0, as category_counts and numeric columns read them
        as_string = pc.cast(as_string, pa.int8())
    if not (pa.types.is_string(as_string.type) or pa.types.is_large_string(as_string.type)):
        as_string = pc.cast(as_string, pa.string())
    expected = as_string.to_numpy(zero_copy_only=False)
    got = labels(arr)
    assert got.dtype == object and got.tolist() == list(expected)


def test_to_batch_times_and_classes_equal_pyarrow_to_numpy() -> None:
    ts = pa.array([0, None, 1_700_000_000_123_456, 5], type=pa.timestamp("us", tz="UTC"))
    pred = pa.array(["yes", None, "no", "yes"])
    table = pa.table({"ts": ts, "pred": pred, "x": [1.0, None, 3.0, 4.0]})
    batch = to_batch(table, Columns(numeric=["x"], categorical=[], timestamp="ts", prediction="pred"))
    expected = pc.cast(ts, pa.timestamp("ns", tz="UTC")).to_numpy(zero_copy_only=False).astype(
        "datetime64[ns]").astype(np.int64)
    assert batch.timestamp.tolist() == expected.tolist()  # a null time as NaT's integer
    assert batch.prediction.tolist() == ["yes", None, "no", "yes"]
    np.testing.assert_array_equal(batch.numeric["x"], [1.0, np.nan, 3.0, 4.0])


@pytest.mark.parametrize("typ", [pa.int32(), pa.uint8(), pa.timestamp("ms", tz="UTC"), pa.timestamp("ns")])
def test_scalar_equals_pa_scalar(typ: pa.DataType) -> None:
    assert scalar(7, typ) == pa.scalar(7, type=typ)
    assert scalar(7, typ).type == typ
