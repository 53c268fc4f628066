"""Numeric columns of large values and of mixed float precision, from a statistics review.

* Large values with repeated ones (epoch seconds, ids, counters): an atom's bin used to hold both float32
  neighbours of the value in the shared grid, 128 wide at 1.7e9, and the grid edges inside those bins
  were dropped: the grid collapsed to a few bins and every numeric detector scored 0 on a real shift, and
  ``data_quality`` saw none of a window above the reference maximum.  Now an atom's bin is one float64
  wide and only float32 (and float16) data is compared with widened bins.
* Mixed precision: a float32 reference against a float64 window of the same one-decimal values (0.1 is
  not a float32), and a float16 window against a float64 reference, gave drift on identical data.

Every sample is deterministic (quantiles or a seeded generator); statistics are checked against scipy.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats

from detectors.base import Context
from detectors.drift_numeric import wasserstein_binned
from detectors.profile import NumericCounts, NumericReference, Profile
from detectors.registry import Registry

CTX = Context(model="review", window_start=datetime(2026, 1, 1, tzinfo=UTC),
              window_end=datetime(2026, 1, 1, 1, tzinfo=UTC))
REGISTRY = Registry()


def _findings(name: str, ref_values: np.ndarray, cur_values: np.ndarray) -> dict[str, object]:
    ref = NumericReference.from_values(ref_values)
    cur = NumericCounts.of(cur_values, ref)
    det = REGISTRY.create(name)
    rprof = Profile(n_rows=ref_values.size, numeric={"x": ref}, roles={"x": "feature"})
    cprof = Profile(n_rows=cur_values.size, numeric={"x": cur}, roles={"x": "feature"})
    return {f.statistic: f for f in det.score(det.summarise(rprof), cprof, context=CTX)}


def _one(name: str, ref_values: np.ndarray, cur_values: np.ndarray):
    (f,) = _findings(name, ref_values, cur_values).values()
    return f


def _poisson(mean: float, n: int) -> np.ndarray:
    return stats.poisson.ppf((np.arange(n) + 0.5) / n, mean)


@pytest.mark.parametrize("offset", [0.0, 1e8, 1.7e9, 1e12])
def test_a_shift_of_large_repeated_values_is_seen_as_at_small_ones(offset: float) -> None:
    """Poisson(40) against Poisson(44) counts, plus an offset: the grid keeps about a thousand edges at
    any offset, binned KS D equals scipy's exact D within 1e-3 and binned W1 scipy's within 1 %, and
    ks, wasserstein, psi and cramer_von_mises all alert (before: 2 grid edges at 1.7e9, every value 0)."""
    ref_values, cur_values = offset + _poisson(40, 5000), offset + _poisson(44, 2000)
    ref = NumericReference.from_values(ref_values)
    assert ref.edges.size > 500
    d = stats.ks_2samp(ref_values, cur_values).statistic
    w1 = stats.wasserstein_distance(ref_values, cur_values) / np.std(ref_values, ddof=1)
    ks, w = _one("ks", ref_values, cur_values), _one("wasserstein", ref_values, cur_values)
    assert ks.value == pytest.approx(d, abs=1e-3)
    assert w.value == pytest.approx(w1, rel=0.01)
    for name in ("ks", "wasserstein", "psi", "cramer_von_mises"):
        assert _one(name, ref_values, cur_values).status == "alert", name


def test_a_window_above_the_maximum_of_epoch_seconds_is_out_of_range() -> None:
    """Epoch seconds with a 5 % default value: half of the window a few seconds to a minute past the
    reference's last second is out of range (before: 0.0, inside the maximum atom's 128-wide bin)."""
    base = 1.7e9
    n, m = 5000, 2000
    ref_values = np.where(np.arange(n) % 20 == 0, base, base + np.arange(n) % 3600)
    top = ref_values.max()
    cur_values = np.where(np.arange(m) % 2 == 0, base + np.arange(m) % 3600 % 1800, top + 1 + np.arange(m) % 60)
    truly_above = float(np.mean(cur_values > top))
    rows = _findings("data_quality", ref_values, cur_values)
    assert rows["out_of_range_rate"].value == pytest.approx(truly_above, abs=1e-9)
    assert rows["out_of_range_rate"].status == "alert"
    assert _one("ks", ref_values, cur_values).value == pytest.approx(
        stats.ks_2samp(ref_values, cur_values).statistic, abs=1e-3)


def test_int64_values_past_two_to_the_53_keep_a_grid() -> None:
    rng = np.random.default_rng(7)
    ref_values = (2**60 + rng.integers(0, 2**20, 5000)).astype(np.float64)
    cur_values = (2**60 + 2**19 + rng.integers(0, 2**20, 2000)).astype(np.float64)
    ks = _one("ks", ref_values, cur_values)
    assert ks.value == pytest.approx(stats.ks_2samp(ref_values, cur_values).statistic, abs=1e-3)
    assert ks.status == "alert"


ONE_DECIMAL = np.round(stats.norm.ppf((np.arange(5000) + 0.5) / 5000), 1)


@pytest.mark.parametrize(("ref_dtype", "cur_dtype"), [
    (np.float64, np.float32), (np.float32, np.float64), (np.float64, np.float16), (np.float32, np.float16)])
@pytest.mark.parametrize("name", ["ks", "cramer_von_mises", "psi", "mean_shift"])
def test_the_same_values_at_another_precision_are_no_change(ref_dtype: type, cur_dtype: type, name: str) -> None:
    """One-decimal values written at two precisions: no drift (before: a float32 reference against a
    float64 window, and a float16 window, gave ks D 0.071 at p 2e-4 and psi 0.099, warn)."""
    f = _one(name, ONE_DECIMAL.astype(ref_dtype), ONE_DECIMAL.astype(cur_dtype))
    assert f.status == "ok", (f.value, f.p_value)
    if name in ("ks", "psi", "cramer_von_mises"):  # values too rare for an atom may land one bin off
        assert f.value < 1e-3, f.value


def test_a_float32_reference_counts_a_float64_window_as_float32_unless_it_would_overflow() -> None:
    ref = NumericReference.from_values(ONE_DECIMAL.astype(np.float32))
    assert ref.float32_exact
    assert not NumericReference.from_values(ONE_DECIMAL).float32_exact
    exact = NumericCounts.of(ONE_DECIMAL.astype(np.float32), ref)
    assert np.array_equal(NumericCounts.of(ONE_DECIMAL, ref).counts, exact.counts)
    big = NumericCounts.of(np.array([0.1, 1e300, -1e300, np.inf]), ref)  # past float32: as they are
    assert (big.counts[0], big.counts[-1], big.n_posinf) == (1, 1, 1)


def test_float32_data_is_binned_as_its_float64_values_away_from_atoms() -> None:
    """The float32 edges bin every float32 value as the float64 grid bins it, but the float32 neighbours
    of an atom that float32 cannot hold, which go to the atom's bin."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(size=20000), np.repeat([0.1, 0.7, 2.0, -1.3], 500)])
    ref = NumericReference.from_values(values)
    assert ref.atoms.size == 4
    x32 = np.concatenate([rng.normal(size=50000), rng.uniform(-5, 5, 50000)]).astype(np.float32)
    e64, e32 = ref.edges, ref.edges_float32
    assert np.all(np.diff(e32) >= 0)
    bins32 = np.searchsorted(e32, x32, side="right")
    bins64 = np.searchsorted(e64, x32.astype(np.float64), side="right")
    assert np.array_equal(bins32, bins64)
    for atom in ref.atoms:
        a32 = np.float32(atom)
        below, above = np.nextafter(a32, np.float32(-np.inf)), np.nextafter(a32, np.float32(np.inf))
        own = np.searchsorted(e64, atom, side="right")
        near = [a32] if float(a32) == atom else [a32, below if float(a32) > atom else above]
        assert [int(np.searchsorted(e32, v, side="right")) for v in near] == [own] * len(near), atom


def test_an_atom_at_the_largest_float_scores() -> None:
    """A DBL_MAX sentinel repeated in the reference: mean_shift raised IndexError (the atom's bin was
    looked up in the edges whose +inf top is taken as the maximum)."""
    big = np.finfo(np.float64).max
    ref_values = np.concatenate([_poisson(40, 4000), np.full(200, big)])
    cur_values = np.concatenate([_poisson(40, 2000), np.full(100, big)])
    for name in ("mean_shift", "wasserstein", "ks", "psi"):
        f = _one(name, ref_values, cur_values)
        assert f.status in ("ok", "insufficient_data"), (name, f.status, f.value)


def test_rows_of_huge_finite_features_have_the_largest_error_not_a_missing_one() -> None:
    """A window with features near 1e300 (all finite): their squared reconstruction errors overflowed to
    inf and the rows were excluded as missing, so multivariate said insufficient_data."""
    import warnings

    from detectors.multivariate import fit_pca, reconstruction_errors
    rng = np.random.default_rng(5)
    cols = {"a": rng.normal(size=2000), "b": rng.normal(size=2000), "c": rng.normal(size=2000)}
    model = fit_pca(cols, features=("a", "b", "c"), variance=0.5)
    x = np.array([[1e300, -1e300, 1.0], [0.1, 0.2, 0.3], [np.nan, 0.0, 0.0], [1e308, 1e308, -1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and quietly
        err = reconstruction_errors(model, x)
    assert err[0] == err[3] == np.finfo(np.float64).max
    assert np.isfinite(err[1]) and err[1] < 10
    assert np.isnan(err[2])


def test_a_float64_window_of_a_float32_reference_sums_its_tails_without_infinities() -> None:
    """The rounded path took -inf into the sum below the range (W1 inf); as float32 the same window gave -5."""
    ref = NumericReference.from_values(ONE_DECIMAL.astype(np.float32))
    window = np.array([-5.0, 0.5, 1.5, -np.inf, np.inf, np.nan, 9.0])
    rounded, as32 = NumericCounts.of(window, ref), NumericCounts.of(window.astype(np.float32), ref)
    lo, hi = float(ref.edges[0]), float(ref.edges[-1])
    assert (rounded.below_distance, rounded.above_distance) == (as32.below_distance, as32.above_distance) \
        == (lo + 5.0, 9.0 - hi)
    assert np.array_equal(rounded.counts, as32.counts)
    assert (rounded.n_neginf, rounded.n_posinf, rounded.n_nan) == (1, 1, 1)


def test_a_float64_value_beyond_float32_range_leaves_the_rest_of_its_batch_rounded() -> None:
    """One 1e300 in a float64 batch of a float32 reference left the whole batch in float64, so its 0.1s
    missed the reference's float32 0.1 bin: ks and psi alerted, or not, by which batch the value came in."""
    rng = np.random.default_rng(2)
    ref = NumericReference.from_values(
        np.where(rng.random(5000) < 0.3, np.float32(0.1), rng.normal(size=5000).astype(np.float32)))
    win = np.where(rng.random(3000) < 0.3, 0.1, rng.normal(size=3000).astype(np.float32).astype(np.float64))
    win[-1], win[7] = 1e300, -1e300
    whole = NumericCounts.of(win, ref)
    split = NumericCounts.of(win[:5], ref).merge(NumericCounts.of(win[5:-1], ref)).merge(
        NumericCounts.of(win[-1:], ref))
    assert np.array_equal(whole.counts, split.counts)
    assert whole.counts[0] >= 1 and whole.counts[-1] >= 1  # beyond the range, each on its side
    assert (whole.below_distance, whole.above_distance) == pytest.approx(
        (split.below_distance, split.above_distance), rel=1e-12)
    assert whole.above_distance == pytest.approx(1e300, rel=1e-12)
    assert whole.below_distance == pytest.approx(1e300, rel=1e-12)
    cur = Profile(n_rows=3000, numeric={"x": whole}, roles={"x": "feature"})
    for name in ("ks", "psi"):
        (f,) = Registry().create(name).score(Profile(n_rows=5000, numeric={"x": ref}, roles={"x": "feature"}),
                                             cur, context=CTX)
        assert f.status == "ok", f


@pytest.mark.parametrize("offset", [0.0, 1e12 + 0.5, 1e15])
def test_wasserstein_beyond_the_range_keeps_its_digits_far_from_zero(offset: float) -> None:
    """Sums of the values beyond the range at 1e15 lost the digits of how far beyond them the window lay
    (W1 off by 9 %, and by batch split from -4 % to +1 %); distances from the edges keep them."""
    ref = NumericReference.from_values(np.full(5000, offset))
    y = np.full(400, offset + 2)
    assert wasserstein_binned(ref, NumericCounts.of(y, ref)) == pytest.approx(2.0, rel=1e-12)
    rng = np.random.default_rng(6)
    x, y = offset + rng.normal(0, 1, 5000), offset + rng.normal(6, 1, 400)
    ref = NumericReference.from_values(x)
    one = NumericCounts.of(y, ref)
    parts = np.array_split(y, 7)
    seven = NumericCounts.of(parts[0], ref)
    for p in parts[1:]:
        seven = seven.merge(NumericCounts.of(p, ref))
    exact = stats.wasserstein_distance(x - offset, y - offset)
    assert wasserstein_binned(ref, one) == pytest.approx(exact, rel=0.01)
    assert wasserstein_binned(ref, seven) == pytest.approx(wasserstein_binned(ref, one), rel=1e-12)
