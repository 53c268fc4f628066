"""Counting a batch through a cell map (``detectors.profile.CellMap``) gives the sort's counts, exactly.

Large batches of a column whose reference spreads over its grid are counted by mapping each value to
one of ``CELLS`` cells and counting the cells no edge falls in with ``bincount``; only the values of
the other cells (and the tails) are sorted.  These tests hold that path to an independent oracle (each
value searched in the edges), to the sort path on the same batch, and check the columns it must leave
to the sort (atoms, integers, NaN and infinities) and the sums it now takes from unsorted values.
"""

from __future__ import annotations

import pickle
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

import detectors.profile as P
from detectors.profile import CELLS, NumericCounts, NumericReference
from monitor import profiles
from monitor.profiles import Columns, WindowProfiler, reference_profile

N = CELLS  # the smallest batch counted through the cell map is CELLS // 2; these are twice that


def _oracle(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the finite values of ``x`` with exactly j edges at or below them (each value searched)."""
    f = x[np.isfinite(x)]
    return np.bincount(np.searchsorted(edges, f, side="right"), minlength=edges.size + 1)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the batch sizes counted through a cell map."""
    calls: list[int] = []
    real = P._cell_counts

    def spy(x: np.ndarray, edges: np.ndarray, m: P.CellMap) -> tuple[np.ndarray, np.ndarray]:
        calls.append(x.size)
        return real(x, edges, m)

    monkeypatch.setattr(P, "_cell_counts", spy)
    return calls


SMOOTH = {
    "normal": lambda g, n: g.normal(size=n),
    "uniform": lambda g, n: g.random(n),
    "exponential": lambda g, n: g.exponential(size=n),
    "lognormal": lambda g, n: g.lognormal(0.0, 1.0, n),
    "student_t2": lambda g, n: g.standard_t(2, n),
    "offset_1e4": lambda g, n: 1e4 + g.normal(size=n),  # float32 steps of 0.001 there: not yet atoms
}
WINDOWS = {
    "same": lambda x: x,
    "shifted": lambda x: x + 0.5 * np.std(x),
    "wider": lambda x: 3.0 * (x - np.median(x)) + np.median(x),
    "beyond_both_ends": lambda x: np.concatenate([x[: x.size // 2], x[x.size // 2:] * 50.0 - 10.0]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize("dist", sorted(SMOOTH))
def test_cell_counts_equal_the_oracle(dist: str, window: str, dtype: type,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(zlib.crc32(f"{dist}/{window}".encode()))
    ref = NumericReference.from_values(SMOOTH[dist](g, 20_000).astype(dtype))
    x = WINDOWS[window](SMOOTH[dist](g, N)).astype(dtype)
    calls = _spy(monkeypatch)
    got = NumericCounts.of(x, ref)
    assert calls == [N], "a smooth column of a large batch is counted through the cell map"
    edges = ref.edges_for(x.dtype)
    np.testing.assert_array_equal(got.counts, _oracle(x, edges))
    # the tails' distances from the float64 end edges, and the moments, against plain float64 sums
    x64 = x.astype(np.float64)
    below, above = x64[x < edges[0]], x64[x >= edges[-1]]
    assert got.below_distance == pytest.approx(np.sum(ref.edges[0] - below), rel=1e-12, abs=1e-9)
    assert got.above_distance == pytest.approx(np.sum(above - ref.edges[-1]), rel=1e-12, abs=1e-9)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert got.mean == pytest.approx(x64.mean(), rel=tol, abs=tol * x64.std())
    assert got.m2 / (x.size - 1) == pytest.approx(x64.var(ddof=1), rel=tol)


def test_the_cell_map_and_the_sort_give_the_same_counts_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts are exact either way, and the sums of a batch without NaN come from its values as they come:
    whichever path counts a batch, the counts and moments are identical (a column dropped to the sort mid-run
    keeps its results)."""
    g = np.random.default_rng(3)
    ref = NumericReference.from_values(g.normal(size=50_000).astype(np.float32))
    x = g.normal(0.2, 1.1, size=N).astype(np.float32)
    calls = _spy(monkeypatch)
    mapped = NumericCounts.of(x, ref)
    ref.drop_cell_map(x.dtype)
    assert ref.cell_map(x.dtype) is None
    sorted_ = NumericCounts.of(x, ref)
    assert calls == [N]
    np.testing.assert_array_equal(mapped.counts, sorted_.counts)
    assert (mapped.mean, mapped.m2, mapped.below_distance, mapped.above_distance) == \
           (sorted_.mean, sorted_.m2, sorted_.below_distance, sorted_.above_distance)


def test_values_at_edges_their_float_neighbours_signed_zeros_and_extremes() -> None:
    """Values exactly at edges and one ulp either side, -0.0 against an edge at 0.0, subnormals and the
    largest floats: every one lands where a search of the edges puts it."""
    g = np.random.default_rng(5)
    ref = NumericReference.from_values(g.normal(size=20_000).astype(np.float32))
    e = ref.edges_for(np.dtype(np.float32))
    assert ref.cell_map(np.dtype(np.float32)) is not None
    tricky = np.concatenate([e, np.nextafter(e, np.float32(-np.inf)), np.nextafter(e, np.float32(np.inf)),
                             np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38], np.float32)])
    x = np.concatenate([g.normal(size=N - tricky.size).astype(np.float32), tricky])
    g.shuffle(x)
    np.testing.assert_array_equal(NumericCounts.of(x, ref).counts, _oracle(x, e))
    # a grid with an edge at exactly 0.0: -0.0 equals it, so it is in the bin above
    zref = NumericReference.from_values(np.concatenate([g.normal(size=20_000), np.zeros(100)]))
    assert 0.0 in zref.edges and zref.cell_map(np.dtype(np.float64)) is not None  # an atom at 0, a small one
    z = np.concatenate([g.normal(size=N - 4), [0.0, -0.0, 0.0, -0.0]])
    np.testing.assert_array_equal(NumericCounts.of(z, zref).counts, _oracle(z, zref.edges))


def test_a_float16_batch_is_counted_on_its_own_widened_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(7)
    ref = NumericReference.from_values(g.normal(size=20_000))
    x = g.normal(size=N).astype(np.float16)
    calls = _spy(monkeypatch)
    got = NumericCounts.of(x, ref)
    assert calls == [N]
    np.testing.assert_array_equal(got.counts, _oracle(x.astype(np.float32), ref.edges_for(np.dtype(np.float16))))


def test_nan_and_infinities_send_the_batch_to_the_sort_and_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(9)
    ref = NumericReference.from_values(g.normal(size=20_000))
    x = g.normal(size=N)
    x[[10, 20, 30]] = np.nan
    x[40], x[50] = np.inf, -np.inf
    calls = _spy(monkeypatch)
    got = NumericCounts.of(x, ref, n_null=1)
    assert calls == []
    assert (got.n_null, got.n_nan, got.n_posinf, got.n_neginf) == (1, 2, 1, 1)
    np.testing.assert_array_equal(got.counts, _oracle(x, ref.edges))
    finite = x[np.isfinite(x)]
    assert got.mean == pytest.approx(finite.mean(), rel=1e-12)
    # the next clean batch goes through the map again
    NumericCounts.of(g.normal(size=N), ref)
    assert calls == [N]


@pytest.mark.parametrize("values", [
    pytest.param(lambda g, n: g.poisson(5, n).astype(np.float64), id="small_integers"),
    pytest.param(lambda g, n: np.round(1.7e9 + g.random(n) * 86_400).astype(np.float32), id="epoch_float32"),
])
def test_columns_of_many_atoms_are_sorted(values, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Values sitting at edges (atoms: small integers, float32 epoch seconds), more of them than the map counts
    by comparison: the plan says so from the reference, and the batch is sorted whole."""
    g = np.random.default_rng(11)
    r = values(g, 20_000)
    ref = NumericReference.from_values(r)
    assert ref.cell_map(r.dtype) is None
    x = values(g, N)
    calls = _spy(monkeypatch)
    np.testing.assert_array_equal(NumericCounts.of(x, ref).counts, _oracle(x, ref.edges_for(x.dtype)))
    assert calls == []


ATOMIC = {
    "zero_inflated": lambda g, n: np.where(g.random(n) < 0.6, 0.0, g.normal(3.0, 1.0, n)),
    "zeros_ones_and_amounts": lambda g, n: np.where(g.random(n) < 0.3, 0.0,
                                                    np.where(g.random(n) < 0.5, 1.0, g.lognormal(0.0, 1.0, n))),
    "a_cap": lambda g, n: np.minimum(g.exponential(size=n), 2.5),
    "one_decimal_prices": lambda g, n: np.where(g.random(n) < 0.2, 9.9, g.normal(20.0, 4.0, n)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", ["same", "atom_moved", "atom_gone", "atom_doubled"])
@pytest.mark.parametrize("dist", sorted(ATOMIC))
def test_a_few_heavy_atoms_are_counted_by_comparison(dist: str, window: str, dtype: type,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero spike, zeros and ones, a cap, a default price: the heaviest atoms are counted by comparing the
    values left with their bins, the rest through the map; exact, also when the window's atom moves by a hair
    (0 imputed as 1e-3; 9.9 written as a float32 of 9.9), disappears or doubles."""
    g = np.random.default_rng(zlib.crc32(f"{dist}/{window}".encode()))
    r = ATOMIC[dist](g, 20_000).astype(dtype)
    ref = NumericReference.from_values(r)
    m = ref.cell_map(np.dtype(dtype))
    assert m is not None and m.atoms, "the atom is counted by comparison"
    x = ATOMIC[dist](g, N)
    atom = float(ref.atoms[np.argmax([np.count_nonzero(r == a) for a in ref.atoms])])
    if window == "atom_moved":
        x = np.where(x == atom, atom + 1e-3 if atom == 0.0 else np.float32(atom), x)
    elif window == "atom_gone":
        x = np.where(x == atom, atom + 0.37, x)
    elif window == "atom_doubled":
        x = np.where(g.random(N) < 0.5, atom, x)
    x = x.astype(dtype)
    calls = _spy(monkeypatch)
    got = NumericCounts.of(x, ref)
    assert calls == [N]
    np.testing.assert_array_equal(got.counts, _oracle(x, ref.edges_for(x.dtype)))
    ref.drop_cell_map(x.dtype)
    again = NumericCounts.of(x, ref)
    assert (got.mean, got.m2, got.below_distance, got.above_distance) == \
           (again.mean, again.m2, again.below_distance, again.above_distance)


def test_a_window_crowded_into_edge_cells_pauses_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window whose values all sit on grid edges (a feature stuck at a few reference values) leaves
    everything to sort: counted exactly, and the column's next CELL_PAUSE batches are sorted; then the
    map is tried again (a drifted spell does not cost the column its fast path for good)."""
    g = np.random.default_rng(13)
    ref = NumericReference.from_values(g.normal(size=20_000))
    assert ref.cell_map(np.dtype(np.float64)) is not None
    x = g.choice(ref.edges[5:-5], size=N)
    calls = _spy(monkeypatch)
    np.testing.assert_array_equal(NumericCounts.of(x, ref).counts, _oracle(x, ref.edges))
    assert calls == [N]
    y = g.normal(size=N)
    for _ in range(P.CELL_PAUSE):
        np.testing.assert_array_equal(NumericCounts.of(y, ref).counts, _oracle(y, ref.edges))
    assert calls == [N]
    NumericCounts.of(y, ref)
    assert calls == [N, N]


def test_a_float16_window_pauses_its_own_map() -> None:
    g = np.random.default_rng(29)
    ref = NumericReference.from_values(g.normal(size=20_000))
    NumericCounts.of(np.full(N, 7.0, np.float16), ref)  # beyond the reference: all of it sorted
    assert ref.cell_map(np.dtype(np.float16)) is None
    assert ref.cell_map(np.dtype(np.float32)) is not None


def test_non_native_byte_order_is_counted_as_native() -> None:
    g = np.random.default_rng(31)
    ref = NumericReference.from_values(g.normal(size=20_000))
    for dt in ("<f2", "<f4", "<f8"):
        x = g.normal(size=N).astype(dt)
        want = NumericCounts.of(x, ref)
        got = NumericCounts.of(x.astype(dt.replace("<", ">")), ref)
        np.testing.assert_array_equal(got.counts, want.counts)
        assert (got.mean, got.m2) == (want.mean, want.m2)


@pytest.mark.parametrize("cells", [True, False])
def test_more_nulls_than_nan_is_refused_on_either_path(cells: bool) -> None:
    g = np.random.default_rng(33)
    ref = NumericReference.from_values(g.normal(size=20_000))
    x = g.normal(size=N)
    x[:3] = np.nan
    assert NumericCounts.of(x, ref, n_null=3, cells=cells).n_nan == 0
    with pytest.raises(ValueError, match="n_null=5"):
        NumericCounts.of(x, ref, n_null=5, cells=cells)
    with pytest.raises(ValueError, match="n_null=5"):
        NumericCounts.of(g.normal(size=N), ref, n_null=5, cells=cells)


def test_infinities_met_by_the_sample_warn_nothing() -> None:
    g = np.random.default_rng(35)
    ref = NumericReference.from_values(g.normal(size=20_000))
    for dt in (np.float32, np.float64):
        x = np.full(N, np.inf, dt)
        x[:10] = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = NumericCounts.of(x, ref)
        assert (got.n_posinf, int(got.counts.sum())) == (N - 10, 10)


def test_small_batches_are_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(15)
    ref = NumericReference.from_values(g.normal(size=20_000))
    calls = _spy(monkeypatch)
    for n in (0, 1, CELLS // 2 - 1):
        x = g.normal(size=n)
        np.testing.assert_array_equal(NumericCounts.of(x, ref).counts, _oracle(x, ref.edges))
    assert calls == []
    NumericCounts.of(g.normal(size=CELLS // 2), ref)
    assert calls == [CELLS // 2]


@pytest.mark.parametrize("pattern", ["spike_every_n_over_64", "sorted_shards"])
@pytest.mark.parametrize("cells", [True, False])
def test_a_batch_in_step_with_the_sample_keeps_its_variance(pattern: str, cells: bool) -> None:
    """A pattern whose period is the sample's stride (a spike every n/64 rows; 64 shards each sorted
    descending) puts the strided sample away from the bulk: the sums are taken again about their mean."""
    g = np.random.default_rng(37)
    n = 1 << 20
    if pattern == "sorted_shards":
        x = np.concatenate([np.sort(g.lognormal(0, 2, n // 64))[::-1] for _ in range(64)]).astype(np.float32)
    else:
        x = (1000 + g.normal(size=n)).astype(np.float32)
        x[::n // 64] = 1e4
    ref = NumericReference.from_values(x[::97].astype(np.float64))
    got = NumericCounts.of(x, ref, cells=cells)
    x64 = x.astype(np.float64)
    assert got.m2 / (n - 1) == pytest.approx(x64.var(ddof=1), rel=1e-3)
    assert got.mean == pytest.approx(x64.mean(), rel=1e-5)


def test_an_outlier_in_the_middle_of_the_batch_does_not_cost_the_variance_its_digits() -> None:
    """The sums are taken about a point near the batch's median (of a strided sample), not about whatever value
    sits in the middle: 1e8 there, among values of sd 1, would leave the float64 variance nothing."""
    g = np.random.default_rng(17)
    ref = NumericReference.from_values(g.normal(size=20_000))
    for n in (N, 1000):  # through the cell map and sorted
        x = g.normal(size=n)
        x[n // 2] = 1e8
        got = NumericCounts.of(x, ref)
        assert got.m2 / (n - 1) == pytest.approx(np.var(x, ddof=1), rel=1e-9)
        assert got.mean == pytest.approx(np.mean(x), rel=1e-12)


def test_the_estimated_share_matches_what_a_window_leaves_to_sort() -> None:
    """The plan's share of the reference in edge cells (estimated from its histogram) is what a same-distribution
    batch leaves to sort, within a factor of 1.5; and few enough that the map is worth it."""
    g = np.random.default_rng(19)
    for dist in ("normal", "uniform", "exponential", "lognormal", "student_t2"):
        r = SMOOTH[dist](g, 100_000)
        ref = NumericReference.from_values(r)
        m = ref.cell_map(np.dtype(np.float64))
        assert m is not None and m.share <= P.CELL_SHARE_MAX
        x = SMOOTH[dist](g, N)
        _, left = P._cell_counts(x, ref.edges, m)
        assert m.share / 1.5 <= left.size / x.size <= m.share * 1.5, dist


def test_a_pickled_reference_leaves_its_cell_maps_behind() -> None:
    g = np.random.default_rng(21)
    ref = NumericReference.from_values(g.normal(size=20_000))
    NumericCounts.of(g.normal(size=N), ref)
    assert ref.cell_map(np.dtype(np.float64)) is not None
    data = pickle.dumps(ref)
    assert len(data) < ref.cell_map(np.dtype(np.float64)).slots.nbytes
    back = pickle.loads(data)
    assert "_cell_maps" not in back.__dict__
    np.testing.assert_array_equal(back.edges, ref.edges)
    x = g.normal(size=N)
    np.testing.assert_array_equal(NumericCounts.of(x, back).counts, NumericCounts.of(x, ref).counts)


# --------------------------------------------------------------------------- the window profiler's choice

def _window(n: int) -> tuple[pa.Table, Columns]:
    g = np.random.default_rng(23)
    table = pa.table({"x": g.normal(size=n), "y": g.exponential(size=n).astype(np.float32),
                      "z": g.poisson(5, n).astype(np.float64), "pred": g.integers(0, 3, n)})
    return table, Columns(numeric=["x", "y", "z"], categorical=[], prediction="pred")


@pytest.mark.parametrize("probe_says", [True, False])
def test_the_window_profiler_counts_the_same_through_either_kernel(
        probe_says: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cell_counting`` True or False gives one profile; the default asks the CPU probe, once a batch is large
    enough for the map (a small one never asks)."""
    table, cols = _window(20_000 + 3 * N)
    ref = reference_profile(table.slice(0, 20_000), columns=cols)
    asked: list[int] = []
    monkeypatch.setattr(profiles, "cells_count_faster", lambda: asked.append(1) or probe_says)
    calls = _spy(monkeypatch)
    runs = {}
    for choice in (True, False, None):
        w = WindowProfiler(reference=ref, columns=cols, cell_counting=choice)
        before = (len(asked), len(calls))
        w.add(table.slice(20_000, 1000))  # small: sorted, and the probe is not asked
        assert (len(asked), len(calls)) == before
        w.add(table.slice(21_000))
        assert len(asked) == before[0] + (choice is None)  # once, for the first large batch
        runs[choice] = w.profile
    # x and y (smooth) went through the map when asked to; z (integers) is always sorted
    assert calls == [table.num_rows - 21_000] * (2 + 2 * probe_says)
    for name in ("x", "y", "z"):
        a, b, c = (runs[k].numeric[name] for k in (True, False, None))
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.counts, c.counts)
        assert (a.mean, a.m2) == (b.mean, b.m2) == (c.mean, c.m2)


def test_the_cpu_probe_is_timed_once_per_process_by_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads asking at once wait for the one timing it (they would time each other and could disagree)."""
    timed: list[int] = []
    real = profiles.NumericReference

    class Counting(real):  # type: ignore[misc, valid-type]
        @classmethod
        def from_values(cls, *a, **k):  # type: ignore[no-untyped-def]
            timed.append(1)
            return real.from_values(*a, **k)

    monkeypatch.setattr(profiles, "NumericReference", Counting)
    profiles._cells_count_faster.cache_clear()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: profiles.cells_count_faster(), range(8)))
        assert len(timed) == 1
        assert len(set(answers)) == 1 and isinstance(answers[0], bool)
        assert profiles.cells_count_faster() is answers[0]
    finally:
        profiles._cells_count_faster.cache_clear()


def test_a_float64_window_of_a_float32_reference_is_binned_as_float32_through_the_map(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference whose values are all float32 bins a float64 window as float32 (see Precision in
    detectors.profile): the rounded batch goes through the map, its tails and moments stay the float64
    values'."""
    g = np.random.default_rng(39)
    ref = NumericReference.from_values(g.normal(size=20_000).astype(np.float32).astype(np.float64))
    assert ref.float32_exact
    x = g.normal(0.3, 1.5, size=N)
    x[:5] = [ref.maximum + 1e-9, ref.minimum - 1e-9, 1e39, -1e39, 0.1]  # 1e39: past float32, rounded to its max
    calls = _spy(monkeypatch)
    got = NumericCounts.of(x, ref)
    assert calls == [N]
    x32 = P._as_float32(x)
    np.testing.assert_array_equal(got.counts, _oracle(x32, ref.edges_for(np.dtype(np.float32))))
    e32 = ref.edges_for(np.dtype(np.float32))
    assert got.below_distance == pytest.approx(np.sum(ref.edges[0] - x[x32 < e32[0]]), rel=1e-12)
    assert got.above_distance == pytest.approx(np.sum(x[x32 >= e32[-1]] - ref.edges[-1]), rel=1e-12)
    sorted_ = NumericCounts.of(x, ref, cells=False)
    np.testing.assert_array_equal(got.counts, sorted_.counts)
    assert (got.mean, got.m2, got.below_distance, got.above_distance) == \
           (sorted_.mean, sorted_.m2, sorted_.below_distance, sorted_.above_distance)
