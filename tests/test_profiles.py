"""Arrow → profile conversion: category counting paths and the parallel profiler."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from monitor.profiles import Columns, WindowProfiler, category_counts, numeric_values, reference_profile


def _oracle(arr: pa.Array) -> tuple[dict[str, int], int]:
    vc = pc.value_counts(arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr)
    out: dict[str, int] = {}
    nulls = 0
    for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
        if v is None:
            nulls += c
        else:
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
], ids=["string", "dict", "dict-int8-null", "dict-repeat", "int-neg-null", "int8", "int-wide", "bool", "empty",
        "all-null"])
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
