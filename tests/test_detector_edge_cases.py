"""Edge cases a review reproduced (each failed before its fix): data_quality rates with Fisher's exact test, atoms in the
numeric grid, multivariate errors of discrete features, and merge-order independence."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
from scipy import stats

from detectors.base import Batch, Context
from detectors.drift_categorical import Chi2
from detectors.drift_numeric import KS, ks_binned
from detectors.multivariate import Multivariate, _matrix, reconstruction_errors
from detectors.profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile
from detectors.quality import DataQuality, rate_increase_p

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
CTX = Context(model="m", window_start=T, window_end=T)


def _numeric(det, x, y):
    ref = NumericReference.from_values(np.asarray(x, dtype=np.float64))
    cur = NumericCounts.of(np.asarray(y, dtype=np.float64), ref)
    return det.score(Profile(n_rows=len(x), numeric={"x": ref}), Profile(n_rows=len(y), numeric={"x": cur}),
                     context=CTX)


# --------------------------------------------------------------------------- 1. missing-rate test

def test_missing_rate_p_value_is_the_exact_conditional_test() -> None:
    """Given k missing rows among n + m, the window's count is hypergeometric (Fisher's exact test),
    not Binomial(k, m/(n+m)) -- each row holds at most one event. The binomial tail is far too heavy
    when the missing rate is not small."""
    for kc, m, kr, n in [(560, 1000, 500, 1000), (120, 200, 100, 200), (600, 1000, 500, 1000)]:
        fisher = stats.fisher_exact([[kc, m - kc], [kr, n - kr]], alternative="greater").pvalue
        got = rate_increase_p(kc, m, kr, n)
        assert abs(np.log(got) - np.log(fisher)) < np.log(1.5), (kc, m, kr, n, got, fisher)


def test_missing_rate_rise_of_six_points_from_fifty_percent_alerts() -> None:
    """Reference 50 % missing, window 56 % (1000 rows each): 6 points past the baseline, beyond the
    +5-point alert margin; Fisher's one-sided p is 0.0041, 0.012 after BH over the column's three findings."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    x[:500] = np.nan
    y = rng.normal(size=1000)
    y[:560] = np.nan
    findings = {f.statistic: f for f in _numeric(DataQuality(), x, y)}
    f = findings["missing_rate"]
    fisher = stats.fisher_exact([[560, 440], [500, 500]], alternative="greater").pvalue
    assert fisher < 0.05 / 3  # survives BH whatever the other two p-values are
    assert f.value == 0.56
    assert f.status == "alert", (f.status, f.p_value, fisher)


# --------------------------------------------------------------------------- 2. binned KS vs exact with atoms

def test_binned_ks_within_documented_tolerance_when_an_atom_moves_inside_its_bin() -> None:
    """Zero-inflated feature (half zeros); in the window the zeros became 1e-3 (an imputation default).
    scipy's exact D is 0.5; the binned D must be within about 1e-3 of it (KS docstring), but the grid
    bin that holds the atom at 0 is [0, 0.023): the moved atom stays in it and the binned D is 0.03."""
    rng = np.random.default_rng(0)
    x = np.where(rng.random(5000) < 0.5, 0.0, rng.lognormal(size=5000))
    y = np.where(rng.random(2000) < 0.5, 1e-3, rng.lognormal(size=2000))
    exact = stats.ks_2samp(x, y)
    (f,) = _numeric(KS(), x, y)
    assert abs(f.value - exact.statistic) < 2e-3, (f.value, exact.statistic)
    assert f.status == "alert"  # exact: D 0.5, p ~ 0 -- and KS(exact=True) says alert


def test_binned_ks_atom_at_reference_maximum() -> None:
    """A capped feature (16 % of the reference at the cap 1.0); the window caps at 0.999 instead.
    scipy's exact D is 0.17; the binned one merges the cap with (0.9974, 1.0] and reports 0.03."""
    rng = np.random.default_rng(0)
    x = np.minimum(rng.normal(size=5000), 1.0)
    y = np.minimum(rng.normal(size=2000), 0.999)
    ref = NumericReference.from_values(x)
    d = ks_binned(ref.counts, NumericCounts.of(y, ref).counts)
    assert abs(d - stats.ks_2samp(x, y).statistic) < 2e-3, (d, stats.ks_2samp(x, y).statistic)


# --------------------------------------------------------------------------- 3. multivariate KS on jittered atoms

def _batch(cols: dict[str, np.ndarray]) -> Batch:
    n = len(next(iter(cols.values())))
    return Batch(n_rows=n, numeric=cols, categorical={}, sensitive={}, timestamp=np.zeros(0, np.int64))


def _integer_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    a = rng.integers(0, 3, n).astype(float)
    return {"a": a, "b": a + rng.integers(0, 2, n), "c": rng.integers(0, 2, n).astype(float)}


def test_multivariate_ks_of_discrete_errors_matches_exact_ks() -> None:
    """Integer-valued features (counts, flags): the reconstruction errors take a dozen values.  The
    same row gives errors a few ulps apart in the reference (strided matrix) and the window, so a
    window atom lands one grid bin below the reference's and the binned D jumps by the atom's mass:
    D 0.0995 where scipy's exact D of the very same errors (rounded to 1e-9) is 0.023, on data with
    no change at all, and p = 1e-7."""
    rng = np.random.default_rng(3)
    det = Multivariate()
    ref_cols, cur_cols = _integer_features(rng, 4000), _integer_features(rng, 2000)
    model = det.reference_extra(_batch(ref_cols))
    ref = Profile(n_rows=4000, extras={det.key: model})
    cur = Profile(n_rows=2000, extras={det.key: det.batch_extra(model, _batch(cur_cols))})
    (f,) = det.score(ref, cur, context=CTX)
    held = reconstruction_errors(model, _matrix(ref_cols, model.features, 4000)[1::2])
    cur_err = reconstruction_errors(model, _matrix(cur_cols, model.features, 2000))
    exact = stats.ks_2samp(np.round(held, 9), np.round(cur_err, 9))
    d = float(re.search(r"KS D ([0-9.]+)", f.note).group(1))
    assert abs(d - exact.statistic) < 5e-3, (d, exact.statistic)
    assert f.p_value > 0.05, (f.p_value, exact.pvalue)  # no change: the test must not be significant


# --------------------------------------------------------------------------- 4. merge order

def test_categorical_finding_does_not_depend_on_merge_order() -> None:
    """Two batches merged a-then-b or b-then-a are the same window; the finding (note included) must be
    identical.  The unseen categories are listed in dict insertion order when their counts tie."""
    ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 400, "b": 300, "c": 200}))
    first = CategoricalCounts(counts={"a": 100, "new1": 6})
    second = CategoricalCounts(counts={"b": 80, "c": 50, "new2": 6})
    out = []
    for cur in (first.merge(second), second.merge(first)):
        (f,) = Chi2().score(Profile(n_rows=1, categorical={"x": ref}), Profile(n_rows=1, categorical={"x": cur}),
                            context=CTX)
        out.append(f)
    assert out[0] == out[1], (out[0].note, out[1].note)


def test_new_values_of_a_column_of_rare_categories_are_data_quality_s_to_find() -> None:
    """Reference and window over disjoint sets of 20 000 rare categories (ids): every category is too rare
    to test, the pooled table leaves none, and chi2 says ok at p = 1 (as the module docstring says), while
    total variation is 1 and data_quality's unseen_rate alerts."""
    rng = np.random.default_rng(4711)
    ref_counts = CategoricalCounts.of(np.array([f"u{i}" for i in rng.integers(0, 20000, 60000)]))
    cur_counts = CategoricalCounts.of(np.array([f"v{i}" for i in rng.integers(0, 20000, 20000)]))
    ref = CategoricalReference.from_counts(ref_counts)
    rprof = Profile(n_rows=60000, categorical={"c": ref}, roles={"c": "feature"})
    cprof = Profile(n_rows=20000, categorical={"c": cur_counts}, roles={"c": "feature"})

    def score(det):
        return {f.statistic: f for f in det.score(det.summarise(rprof), cprof, context=CTX)}

    (chi2,) = score(Chi2()).values()
    assert (chi2.status, chi2.p_value) == ("ok", 1.0)
    unseen = score(DataQuality())["unseen_rate"]
    assert unseen.value == 1.0 and unseen.status == "alert"
