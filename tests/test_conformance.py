"""One conformance suite for every registered detector (``Registry().names()``).

Profiles are built the way the daemon's profiler builds them (see
``monitor/profiles.py``): the reference once (numeric grids, category counts,
``reference_extra`` of the whole reference batch), the window batch by batch
(partial counts and ``batch_extra``, merged).  The data are generic — numeric
and categorical features, a sensitive attribute, score, predicted class and
label — so detectors of every kind get the inputs they need.  A detector that
finds nothing it applies to returns no findings rather than failing.

Each detector must be: built from its defaults; reject a bad parameter with a
ParameterError naming it; quiet on identical data; fire on a planted shift;
deterministic; finite on a constant column, a single category and an all-NaN
column; ``insufficient_data`` on an empty window; and its vectorised kernel
must equal a naive, loop-based implementation (``NAIVE`` below) on small
inputs.
"""

from __future__ import annotations

import bisect
import functools
import math
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from scipy import stats

from detectors.base import Batch, Context, Detector, Finding, batch_extras
from detectors.errors import ParameterError
from detectors.profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile
from detectors.registry import Registry
from tests.conftest import naive_stop_loss_p
from tests.test_ks_ties import naive_ks_tied_sf

REGISTRY = Registry()
NAMES = REGISTRY.names()
CTX = Context(model="conformance", window_start=datetime(2026, 1, 1, tzinfo=UTC),
              window_end=datetime(2026, 1, 1, 1, tzinfo=UTC))
SCORE, PREDICTION = "score", "predicted_label"
CHECKED_KINDS = {"drift", "quality"}  # detectors of these kinds must find something in the generic profile


# =========================================================================== generic data

def make_batch(seed: int, n: int, *, shift: bool = False, degenerate: bool = False) -> Batch:
    """Generic model data; ``shift`` plants a change in every part of it.

    No change: x1, x2 correlated (+0.8), x3 lognormal, region / channel
    categories, predictions that are accurate (90 %) and independent of sex.
    Shift: x1 +1 sd, the x1-x2 correlation flipped, x3 scale doubled with 10 %
    NaN and 3 % inf, region proportions moved plus an unseen category, the
    score and prediction moved, accuracy down to 60 % and predictions biased
    against one sex.  ``degenerate`` adds a constant, an all-NaN and a
    single-category column.
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    rho = -0.8 if shift else 0.8
    b = rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    x1 = a + (1.0 if shift else 0.0)
    x3 = rng.lognormal(0.0, 0.5, n) * (2.0 if shift else 1.0)
    if shift:
        x3[rng.random(n) < 0.10] = np.nan
        x3[rng.random(n) < 0.03] = np.inf
    cats = ["north", "south", "east", "west"]
    if shift:
        region = rng.choice([*cats, "atlantis"], n, p=[0.1, 0.2, 0.3, 0.3, 0.1])
    else:
        region = rng.choice(cats, n, p=[0.4, 0.3, 0.2, 0.1])
    channel = rng.choice(["web", "app"], n, p=[0.6, 0.4])
    sex = rng.choice(["F", "M"], n)
    score = 1 / (1 + np.exp(-(x1 + 0.3 * rng.normal(size=n))))
    pred = score > 0.5
    if shift:
        pred = np.where(sex == "F", rng.random(n) < 0.1, pred)
    truth_agrees = rng.random(n) < (0.6 if shift else 0.9)
    label = np.where(truth_agrees, pred, ~pred).astype(np.float64)
    numeric = {"x1": x1, "x2": b, "x3": x3}
    categorical = {"region": region.astype(object), "channel": channel.astype(object)}
    if degenerate:  # under a shift the constant and the single category change value
        numeric |= {"const": np.full(n, 4.0 if shift else 3.0), "allnan": np.full(n, np.nan)}
        categorical |= {"single": np.full(n, "other" if shift else "only", dtype=object)}
    return Batch(n_rows=n, numeric=numeric, categorical=categorical, sensitive={"sex": sex.astype(object)},
                 timestamp=np.arange(n, dtype=np.int64) * 1_000_000_000 + seed, score=score,
                 prediction=np.where(pred, "1", "0").astype(object), label=label)


def split(batch: Batch, parts: int) -> list[Batch]:
    """The same rows as ``parts`` consecutive batches (to exercise merging)."""
    cuts = np.linspace(0, batch.n_rows, parts + 1).astype(int)

    def sl(v: np.ndarray | None, lo: int, hi: int) -> np.ndarray | None:
        return None if v is None else v[lo:hi]

    return [Batch(n_rows=hi - lo, numeric={k: v[lo:hi] for k, v in batch.numeric.items()},
                  categorical={k: v[lo:hi] for k, v in batch.categorical.items()},
                  sensitive={k: v[lo:hi] for k, v in batch.sensitive.items()}, timestamp=batch.timestamp[lo:hi],
                  score=sl(batch.score, lo, hi), prediction=sl(batch.prediction, lo, hi), label=sl(batch.label, lo, hi))
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]


def raw_numeric(batch: Batch) -> dict[str, np.ndarray]:
    out = dict(batch.numeric)
    if batch.score is not None:
        out[SCORE] = batch.score
    return out


def raw_categorical(batch: Batch) -> dict[str, np.ndarray]:
    out = dict(batch.categorical)
    if batch.prediction is not None:
        out[PREDICTION] = batch.prediction
    return out


def category_counts(values: np.ndarray) -> CategoricalCounts:
    present = np.array([v is not None for v in values], dtype=bool)
    return CategoricalCounts.of(values[present], n_null=int((~present).sum())) if present.any() \
        else CategoricalCounts(n_null=int(values.size))


def reference_profile(batch: Batch, detectors: Sequence[Detector]) -> Profile:
    roles = {c: "feature" for c in [*batch.numeric, *batch.categorical]} | {SCORE: "score", PREDICTION: "prediction"}
    return Profile(
        n_rows=batch.n_rows,
        numeric={c: NumericReference.from_values(v) for c, v in raw_numeric(batch).items()},
        categorical={c: CategoricalReference.from_counts(category_counts(v)) for c, v in raw_categorical(batch).items()},
        roles=roles,
        extras={d.key: d.reference_extra(batch) for d in detectors if d.uses_batches})


def window_profile(reference: Profile, batches: Sequence[Batch], detectors: Sequence[Detector]) -> Profile:
    profile = Profile(n_rows=0, numeric={c: NumericCounts.empty(r) for c, r in reference.numeric.items()},
                      categorical={c: CategoricalCounts() for c in reference.categorical}, roles=dict(reference.roles))
    for b in batches:
        extras = batch_extras(detectors, reference.extras, b)
        profile = profile.merge(Profile(
            n_rows=b.n_rows,
            numeric={c: NumericCounts.of(v, reference.numeric[c]) for c, v in raw_numeric(b).items()
                     if c in reference.numeric},
            categorical={c: category_counts(v) for c, v in raw_categorical(b).items() if c in reference.categorical},
            extras=extras))
    return profile


def run(name: str, ref: Batch, window: Sequence[Batch], **params: Any) -> list[Finding]:
    det = REGISTRY.create(name, **params)
    ref_profile = reference_profile(ref, [det])
    return det.score(det.summarise(ref_profile), window_profile(ref_profile, window, [det]), context=CTX)


def checked(name: str) -> bool:
    return REGISTRY.get(name).kind in CHECKED_KINDS


# =========================================================================== the suite

@pytest.mark.parametrize("name", NAMES)
def test_built_from_defaults(name: str) -> None:
    cls = REGISTRY.get(name)
    assert cls.name == name
    assert cls.parameter_problems({}) == {}
    det = cls()
    assert det.kind in ("drift", "performance", "fairness", "quality")
    assert det.config == {k: p.default for k, p in cls.params.items()}


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameter_rejected_by_name(name: str) -> None:
    cls = REGISTRY.get(name)
    with pytest.raises(ParameterError) as info:
        cls(not_a_parameter=1)
    assert "not_a_parameter" in info.value.problems
    for key in cls.params:
        with pytest.raises(ParameterError) as info:
            cls(**{key: object()})
        assert key in info.value.problems, key
        assert "must be" in info.value.problems[key]
        assert key in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_quiet_on_identical_data(name: str) -> None:
    ref = make_batch(1, 4000)
    findings = run(name, ref, split(ref, 3))
    if checked(name):
        assert findings
    assert [f for f in findings if f.status != "ok"] == []


@pytest.mark.parametrize("name", NAMES)
def test_fires_on_planted_shift(name: str) -> None:
    findings = run(name, make_batch(1, 4000), split(make_batch(2, 3000, shift=True), 3))
    if not findings and not checked(name):
        pytest.skip(f"{name} found nothing it applies to in the generic profile")
    assert any(f.status in ("warn", "alert") for f in findings), [(f.target, f.statistic, f.value) for f in findings]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    ref, cur = make_batch(3, 3000), make_batch(4, 2000, shift=True)
    first = [f.to_dict() for f in run(name, ref, split(cur, 2))]
    second = [f.to_dict() for f in run(name, ref, split(cur, 2))]
    assert first == second


@pytest.mark.parametrize("name", NAMES)
def test_finite_on_degenerate_columns(name: str) -> None:
    ref = make_batch(5, 2000, degenerate=True)
    for cur in (make_batch(6, 1500, degenerate=True), make_batch(7, 1500, degenerate=True, shift=True)):
        findings = run(name, ref, split(cur, 2))
        targets = {f.target for f in findings}
        if checked(name) and name != "multivariate":
            applies = REGISTRY.get(name).applies_to
            if "numeric" in applies:
                assert {"const", "allnan"} <= targets
            if "categorical" in applies:
                assert "single" in targets
        for f in findings:
            assert f.status in ("ok", "warn", "alert", "insufficient_data")
            if f.status != "insufficient_data":
                assert f.value is not None and math.isfinite(f.value), f
            if f.p_value is not None:
                assert 0.0 <= f.p_value <= 1.0, f
            if f.threshold is not None:
                assert math.isfinite(f.threshold), f


@pytest.mark.parametrize("name", NAMES)
def test_empty_window_is_insufficient(name: str) -> None:
    findings = run(name, make_batch(8, 2000), [])
    if checked(name):
        assert findings
    for f in findings:
        assert f.status == "insufficient_data", f
        assert f.n_current == 0


def scaled(batch: Batch, factor: float) -> Batch:
    return Batch(n_rows=batch.n_rows, numeric={c: v * factor for c, v in batch.numeric.items()},
                 categorical=batch.categorical, sensitive=batch.sensitive, timestamp=batch.timestamp,
                 score=batch.score, prediction=batch.prediction, label=batch.label)


@pytest.mark.parametrize("name", NAMES)
def test_finite_on_huge_values_and_still_fires(name: str) -> None:
    """Values past 1e154, whose squares overflow float64: finite results, and a shift is still a shift."""
    ref = scaled(make_batch(1, 4000), 1e160)
    quiet = run(name, ref, split(scaled(make_batch(2, 3000), 1e160), 3))
    loud = run(name, ref, split(scaled(make_batch(2, 3000, shift=True), 1e160), 3))
    for f in quiet + loud:
        if f.status != "insufficient_data":
            assert f.value is not None and math.isfinite(f.value), f
        if f.p_value is not None:
            assert 0.0 <= f.p_value <= 1.0, f
    assert [f for f in quiet if f.status != "ok"] == []
    if name in ("wasserstein", "ks", "mean_shift", "psi"):
        x1 = [f for f in loud if f.target == "x1"]
        assert x1 and all(f.status in ("warn", "alert") for f in x1), x1


def test_a_batch_without_rows_adds_nothing() -> None:
    """A source may hand over an empty batch: each batch hook counts nothing for it."""
    ref = make_batch(1, 2000)
    empty = split(make_batch(2, 1000), 1)[0]
    empty = Batch(n_rows=0, numeric={c: v[:0] for c, v in empty.numeric.items()},
                  categorical={c: v[:0] for c, v in empty.categorical.items()},
                  sensitive={c: v[:0] for c, v in empty.sensitive.items()}, timestamp=empty.timestamp[:0],
                  score=empty.score[:0], prediction=empty.prediction[:0], label=empty.label[:0])
    for name in NAMES:
        det = REGISTRY.create(name)
        if not det.uses_batches:
            continue
        ref_profile = reference_profile(ref, [det])
        window = split(make_batch(3, 1000), 2)
        with_empty = window_profile(ref_profile, [window[0], empty, window[1]], [det])
        without = window_profile(ref_profile, window, [det])
        a = det.score(det.summarise(ref_profile), with_empty, context=CTX)
        b = det.score(det.summarise(ref_profile), without, context=CTX)
        assert [f.to_dict() for f in a] == [f.to_dict() for f in b], name


@pytest.mark.parametrize("name", NAMES)
def test_below_min_rows_is_insufficient(name: str) -> None:
    """Fewer rows than ``min_rows`` on the current side: insufficient_data and no value, not a score of noise;
    at ``min_rows`` exactly the detector scores."""
    ref = make_batch(1, 4000)
    det = REGISTRY.create(name)
    if "min_rows" not in det.params:
        pytest.fail(f"{name} has no min_rows parameter")
    few = run(name, ref, [split(make_batch(2, 4000), 40)[0]], min_rows=150)  # 100 rows
    enough = run(name, ref, [split(make_batch(2, 4000), 40)[0]], min_rows=100)
    if checked(name):
        assert few and enough
    for f in few:
        if f.kind == "quality" and f.statistic in ("missing_rate", "inf_rate") and f.n_current >= 150:
            continue
        assert f.status == "insufficient_data" and f.value is None, f
    assert any(f.status != "insufficient_data" for f in enough) or not checked(name)


@pytest.mark.parametrize("name", [n for n in NAMES if "correction" in REGISTRY.get(n).params])
def test_the_correction_parameter_is_honoured(name: str) -> None:
    """A family of p-values each under alpha, but not all of them after a correction: ``none`` flags more
    than ``bh``, which flags at least as many as ``bonferroni`` (the decision is tested on the family)."""
    ref, cur = graded_batch(1, 4000, shifted=False), graded_batch(2, 400, shifted=True)
    cls = REGISTRY.get(name)
    # every significant finding a warn: the smallest warn and the largest alert the detector accepts
    warn = next(w for w in (1e-12, 1.0 + 1e-9) if "warn" not in cls.parameter_problems({"warn": w}))
    alert = next(a for a in (1e9, 1.0) if not cls.parameter_problems({"warn": warn, "alert": a}))
    counts = {}
    for method in ("none", "bh", "bonferroni"):
        findings = run(name, ref, [cur], correction=method, alpha=0.05, warn=warn, alert=alert)
        counts[method] = sum(f.status == "warn" for f in findings)
        p = [f.p_value for f in findings if f.p_value is not None]
        n = len(p)
        if method == "none":
            expect = sum(x <= 0.05 for x in p)
        elif method == "bonferroni":
            expect = sum(x * n <= 0.05 for x in p)
        else:  # Benjamini–Hochberg step-up: the largest k with p_(k) <= k alpha / n, and all below it
            ranked = sorted(p)
            expect = max((k for k in range(1, n + 1) if ranked[k - 1] <= k * 0.05 / n), default=0)
        assert counts[method] == expect, (method, p)
    assert counts["none"] >= counts["bh"] >= counts["bonferroni"]
    if name != "multivariate":  # a family of one: every correction is the identity
        assert counts["none"] > counts["bonferroni"], counts  # the family tells the methods apart


def graded_batch(seed: int, n: int, *, shifted: bool) -> Batch:
    """Twenty numeric and twenty categorical columns whose shifts grow from none to large, so that a
    family's p-values spread from 1 to tiny: the corrections then decide different numbers of them."""
    rng = np.random.default_rng(seed)
    grades = np.linspace(0.0, 0.3, 20) if shifted else np.zeros(20)
    numeric = {f"n{i:02d}": np.where(rng.random(n) < g / 20, np.nan, rng.normal(g, 1.0, n))  # up to 2.5 % NaN
               for i, g in enumerate(grades)}
    categorical = {f"c{i:02d}": rng.choice(["a", "b", "c"], n, p=[0.5 - g / 2, 0.3, 0.2 + g / 2]).astype(object)
                   for i, g in enumerate(grades)}
    return Batch(n_rows=n, numeric=numeric, categorical=categorical, sensitive={},
                 timestamp=np.arange(n, dtype=np.int64))


def null_batch(n: int) -> Batch:
    """The generic columns with every value missing (a feature not yet populated in the reference period)."""
    shape = make_batch(8, 1)
    return Batch(n_rows=n, numeric={c: np.full(n, np.nan) for c in shape.numeric},
                 categorical={c: np.full(n, None, dtype=object) for c in shape.categorical},
                 sensitive={c: np.full(n, None, dtype=object) for c in shape.sensitive},
                 timestamp=np.arange(n, dtype=np.int64), score=np.full(n, np.nan),
                 prediction=np.full(n, None, dtype=object), label=np.full(n, np.nan))


@pytest.mark.parametrize("rows", [0, 500])
@pytest.mark.parametrize("name", NAMES)
def test_empty_or_all_null_reference_is_insufficient(name: str, rows: int) -> None:
    """A rolling reference on a sink younger than its period is empty; a feature may be all null in it.
    Nothing to compare with: insufficient data — except a quality rate of the reference's rows, which
    an all-null reference does have (its missing rate is 100 %)."""
    findings = run(name, null_batch(rows), split(make_batch(9, 2000), 2))
    if checked(name):
        assert findings
    for f in findings:
        if f.kind == "quality" and rows and f.n_reference == rows:
            assert f.value is not None and math.isfinite(f.value), f
            continue
        assert f.status == "insufficient_data", f
        assert f.n_reference == 0, f


# =========================================================================== naive implementations

Naive = Callable[[Detector, Profile, Batch, Batch], dict[tuple[str, str], tuple[float | None, float | None]]]


def hist(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts on the reference grid, one value at a time."""
    counts = [0] * (len(edges) + 1)
    for v in values.tolist():
        if math.isfinite(v):
            counts[bisect.bisect_right(edges.tolist(), v)] += 1
    return counts


def psi_bins(counts: list[int], cuts: np.ndarray) -> list[int]:
    bounds = [*cuts.tolist(), len(counts)]
    return [sum(counts[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]


def category_table(ref: CategoricalReference, values: np.ndarray) -> tuple[list[int], list[int]]:
    p = [int(c) for c in ref.counts] + [0]
    q = [0] * (len(ref.categories) + 1)
    for v in values.tolist():
        if v is None:
            continue
        q[ref.categories.index(v) if v in ref.categories else len(ref.categories)] += 1
    return p, q


def homogeneity_table_naive(ref: CategoricalReference, values: np.ndarray) -> tuple[list[int], list[int]]:
    """Every category either sample shows its own column (unseen ones in order of decreasing count)."""
    p = [int(c) for c in ref.counts]
    q = [0] * len(ref.categories)
    unseen: dict[str, int] = {}
    for v in values.tolist():
        if v is None:
            continue
        if v in ref.categories:
            q[ref.categories.index(v)] += 1
        else:
            unseen[v] = unseen.get(v, 0) + 1
    for name in sorted(unseen, key=lambda k: -unseen[k]):
        p.append(0)
        q.append(unseen[name])
    return p, q


def merged(p: list[int], q: list[int]) -> tuple[list[int], list[int]]:
    pairs = [(a, b) for a, b in zip(p, q, strict=True) if a + b > 0]
    n, m = sum(a for a, _ in pairs), sum(b for _, b in pairs)
    if n == 0 or m == 0 or len(pairs) < 2:
        return [a for a, _ in pairs], [b for _, b in pairs]
    keep, other = [], [0, 0]
    for a, b in pairs:
        if min(n, m) * (a + b) / (n + m) < 5:
            other[0] += a
            other[1] += b
        else:
            keep.append([a, b])
    if other != [0, 0]:
        if min(n, m) * sum(other) / (n + m) >= 5 or not keep:
            keep.append(other)
        else:
            j = min(range(len(keep)), key=lambda i: (keep[i][0] + keep[i][1], i))
            keep[j][0] += other[0]
            keep[j][1] += other[1]
    return [a for a, _ in keep], [b for _, b in keep]


def contingency(p: list[int], q: list[int], *, g: bool = False) -> tuple[float, float]:
    a, b = merged(p, q)
    if len(a) < 2 or sum(a) == 0 or sum(b) == 0:
        return 0.0, 1.0
    n, m = sum(a), sum(b)
    stat = 0.0
    for j in range(len(a)):
        for obs, tot in ((a[j], n), (b[j], m)):
            exp = tot * (a[j] + b[j]) / (n + m)
            stat += (2 * obs * math.log(obs / exp) if obs > 0 else 0.0) if g else (obs - exp) ** 2 / exp
    tested = stat
    if g:  # Williams' correction: G/q, q from the row totals (n, m) and column totals of the 2 x k table
        total, cols = n + m, [x + y for x, y in zip(a, b, strict=True)]
        tested = stat / (1 + (total * (1 / n + 1 / m) - 1) * (total * sum(1 / c for c in cols) - 1)
                         / (6 * total * (len(a) - 1)))
    return stat, float(stats.chi2.sf(tested, len(a) - 1))


def shares(c: list[int], eps: float | None = None) -> list[float]:
    t = sum(c)
    s = [x / t for x in c]
    return s if eps is None else [max(x, eps) for x in s]


def naive_distance(p: list[int], q: list[int], name: str) -> float:
    if name == "psi":
        ps, qs = shares(p, 1e-4), shares(q, 1e-4)
        return sum((b - a) * math.log(b / a) for a, b in zip(ps, qs, strict=True))
    if name == "kl_divergence":
        ps, qs = shares(p, 1e-4), shares(q, 1e-4)
        sp, sq = sum(ps), sum(qs)
        return sum(b / sq * math.log((b / sq) / (a / sp)) for a, b in zip(ps, qs, strict=True))
    ps, qs = shares(p), shares(q)
    if name == "jensen_shannon":
        tot = 0.0
        for a, b in zip(ps, qs, strict=True):
            mid = (a + b) / 2
            tot += (0.5 * a * math.log2(a / mid) if a else 0.0) + (0.5 * b * math.log2(b / mid) if b else 0.0)
        return math.sqrt(tot)
    if name == "hellinger":
        return math.sqrt(0.5 * sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(ps, qs, strict=True)))
    if name == "total_variation":
        return 0.5 * sum(abs(a - b) for a, b in zip(ps, qs, strict=True))
    raise KeyError(name)


def columns(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch
            ) -> list[tuple[str, Any, np.ndarray, np.ndarray]]:
    out = []
    if "numeric" in det.applies_to:
        rn, cn = raw_numeric(ref), raw_numeric(cur)
        out += [(c, ref_profile.numeric[c], rn[c], cn[c]) for c in ref_profile.numeric]
    if "categorical" in det.applies_to:
        rc, cc = raw_categorical(ref), raw_categorical(cur)
        out += [(c, ref_profile.categorical[c], rc[c], cc[c]) for c in ref_profile.categorical]
    return out


def naive_binned(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch) -> dict:
    out = {}
    for col, r, _, values in columns(det, ref_profile, ref, cur):
        if isinstance(r, NumericReference):
            p = psi_bins(list(r.counts), r.psi_cuts)
            q = psi_bins(hist(values, r.edges), r.psi_cuts)
            tp, tq = p, q
        else:
            p, q = category_table(r, values)
            tp, tq = homogeneity_table_naive(r, values)
        out[(col, det.statistic_name)] = (naive_distance(p, q, det.name), contingency(tp, tq)[1])
    return out


def naive_contingency(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch) -> dict:
    out = {}
    for col, r, _, values in columns(det, ref_profile, ref, cur):
        p, q = homogeneity_table_naive(r, values)
        stat, pv = contingency(p, q, g=det.name == "g_test")
        n, m = sum(p), sum(q)
        out[(col, det.statistic_name)] = (math.sqrt(stat * (n + m) / (n * m)), pv)
    return out


def cdfs(p: list[int], q: list[int]) -> tuple[list[float], list[float]]:
    n, m = sum(p), sum(q)
    f, g, cf, cg = [], [], 0, 0
    for a, b in zip(p, q, strict=True):
        cf += a
        cg += b
        f.append(cf / n)
        g.append(cg / m)
    return f, g


def naive_ks(p: list[int], q: list[int]) -> float:
    f, g = cdfs(p, q)
    return max(abs(a - b) for a, b in zip(f, g, strict=True))


def naive_w1(r: NumericReference, values: np.ndarray) -> float:
    q = hist(values, r.edges)
    f, g = cdfs(list(r.counts), q)
    e = r.edges.tolist()
    total = 0.0
    for k in range(1, len(e)):
        da, db, w = f[k - 1] - g[k - 1], f[k] - g[k], e[k] - e[k - 1]
        if da * db >= 0:
            total += w * (abs(da) + abs(db)) / 2
        else:
            total += w * (da * da + db * db) / (2 * (abs(da) + abs(db)))
    fin = [v for v in values.tolist() if math.isfinite(v)]
    total += sum(e[0] - v for v in fin if v < e[0]) / len(fin)
    total += sum(v - e[-1] for v in fin if v >= e[-1]) / len(fin)
    return total


def naive_scale(r: NumericReference, values: np.ndarray) -> float:
    if r.std > 0:
        return r.std
    fin = [v for v in values.tolist() if math.isfinite(v)]
    both = [*([r.mean] * r.n), *fin]  # a constant reference: every value equals its mean
    mu = sum(both) / len(both)
    return math.sqrt(sum((v - mu) ** 2 for v in both) / (len(both) - 1))


def free_slot(p: list[int], i: int) -> bool:
    return i in (0, len(p) - 1) and p[i] == 0


def tie_h(p: list[int], q: list[int]) -> list[float] | None:
    big_n = sum(p) + sum(q)
    if not any((a + b) / big_n >= 0.01 for i, (a, b) in enumerate(zip(p, q, strict=True)) if not free_slot(p, i)):
        return None
    h = []
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        s = (a + b) / big_n
        if free_slot(p, i) and s > 0:
            k = int(min(b, math.ceil(s / 0.001)))
            h += [s / k] * k
        else:
            h.append(s)
    return [x for x in h if x > 0]


def naive_cvm(p: list[int], q: list[int]) -> tuple[float, float, float]:
    n, m = sum(p), sum(q)
    big_n = n + m
    total, cp, cq = 0.0, 0, 0
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        if free_slot(p, i) and b > 1:
            for _ in range(b):
                cq += 1
                total += (cp / n - cq / m) ** 2
        else:
            cp += a
            cq += b
            total += (a + b) * (cp / n - cq / m) ** 2
    omega2 = total / big_n
    t = omega2 * n * m / big_n
    h = tie_h(p, q)
    ties = None
    if h is not None:
        big_h = [sum(h[:i + 1]) for i in range(len(h))]
        big_h[-1] = 1.0
        mean = sum(x * y * (1 - y) for x, y in zip(h, big_h, strict=True))
        var = 2 * sum(h[i] * h[j] * (min(big_h[i], big_h[j]) - big_h[i] * big_h[j]) ** 2
                      for i in range(len(h)) for j in range(len(h)))
        ties = (mean, var)
    from detectors.drift_numeric import cvm_p_value  # the scalar p-value map, shared with scipy's
    return t, cvm_p_value(t, n_reference=n, n_current=m, ties=ties), omega2


def naive_ad(p: list[int], q: list[int]) -> tuple[float, float, float]:
    from detectors.drift_numeric import ad_p_value
    n, m = sum(p), sum(q)
    big_n = n + m
    groups = []  # (l, f_ref, f_cur) in order, free runs as single values
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        if free_slot(p, i):
            groups += [(1, 0, 1)] * b
        elif a + b > 0:
            groups.append((a + b, a, b))
    if len(groups) < 2:
        return 0.0, 1.0, 0.0
    total, before, mp, mq = 0.0, 0, 0, 0
    for l, a, b in groups:
        ba = before + l / 2
        den = ba * (big_n - ba) - big_n * l / 4
        if den > 0:
            total += l / big_n * (big_n * (mp + a / 2) - ba * n) ** 2 / den / n
            total += l / big_n * (big_n * (mq + b / 2) - ba * m) ** 2 / den / m
        before += l
        mp += a
        mq += b
    a2akn = total * (big_n - 1) / big_n
    hs, hsum = [], 0.0
    for i in range(big_n - 1, 1, -1):
        hsum += 1 / i
        hs.append(hsum)
    h = hs[-1] + 1
    g = sum(x / (k + 2) for k, x in enumerate(hs))
    hn, k = 1 / n + 1 / m, 2
    aa = (4 * g - 6) * (k - 1) + (10 - 6 * g) * hn
    bb = (2 * g - 4) * k ** 2 + 8 * h * k + (2 * g - 14 * h - 4) * hn - 8 * h + 4 * g - 6
    cc = (6 * h + 2 * g - 2) * k ** 2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * hn + 4 * h
    dd = (2 * h + 6) * k ** 2 - 4 * h * k
    sigma2 = (aa * big_n ** 3 + bb * big_n ** 2 + cc * big_n + dd) / ((big_n - 1) * (big_n - 2) * (big_n - 3))
    th = tie_h(p, q)
    if th is not None:
        hi = [sum(th[:i + 1]) for i in range(len(th))]
        hi[-1] = 1.0
        mid = [x - y / 2 for x, y in zip(hi, th, strict=True)]
        var = [x * (1 - x) - y / 4 for x, y in zip(mid, th, strict=True)]
        v = 0.0
        for i in range(len(th)):
            for j in range(len(th)):
                c = var[i] if i == j else min(mid[i], mid[j]) * (1 - max(mid[i], mid[j]))
                v += th[i] * th[j] * (c / math.sqrt(var[i] * var[j])) ** 2
        sigma2 *= 2 * v / (2 * (math.pi ** 2 - 9) / 3)
    a2 = (a2akn - 1) / math.sqrt(sigma2)
    return a2, ad_p_value(a2), a2akn * big_n / (n * m)


def naive_rank_p(p: list[int], q: list[int], kind: str) -> float:
    n, m = sum(p), sum(q)
    big_n = n + m

    def score(r: int) -> float:
        return r if kind == "wilcoxon" else min(r, big_n + 1 - r)

    stat, scores, r = 0.0, [], 0
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        ranks = list(range(r + 1, r + a + b + 1))
        r += a + b
        if not ranks:
            continue
        if free_slot(p, i):
            s = [score(x) for x in ranks]
            stat += sum(s)
        else:
            avg = sum(score(x) for x in ranks) / len(ranks)
            s = [avg] * len(ranks)
            stat += b * avg
        scores += s
    mean = sum(scores) / big_n
    var = n * m / (big_n * (big_n - 1)) * sum((x - mean) ** 2 for x in scores)
    if var <= 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(stat - m * mean) / math.sqrt(var)))


def naive_mean_shift(r: NumericReference, values: np.ndarray) -> tuple[float, float]:
    fin = [v for v in values.tolist() if math.isfinite(v)]
    q = hist(values, r.edges)
    scale = naive_scale(r, values)
    mean_c = sum(fin) / len(fin)
    cum, k = 0, 0
    best = None
    for i, c in enumerate(list(r.counts)[:-1]):
        cum += c
        if best is None or abs(cum / r.n - 0.5) < best:
            best, k = abs(cum / r.n - 0.5), i
    centre = float(r.edges[k])
    e = r.edges.tolist()

    def point(i: int) -> float:  # an atom's bin holds only the atom; any other bin counts at its midpoint
        return next((a for a in r.atoms.tolist() if e[i - 1] <= a < e[i]), (e[i - 1] + e[i]) / 2)

    def mad(counts: list[int], below: float, above: float) -> float:
        tot = sum(counts[i] * abs(point(i) - centre) for i in range(1, len(e)))
        tot += counts[0] * centre - below + above - counts[-1] * centre
        return tot / sum(counts)

    ar = mad(list(r.counts), 0.0, 0.0)
    ac = mad(q, sum(v for v in fin if v < e[0]), sum(v for v in fin if v >= e[-1]))
    d_mean = abs(mean_c - r.mean) / scale if scale > 0 else 0.0
    d_spread = abs(ac / ar - 1) if ar > 0 else (abs(ac - ar) / scale if scale > 0 else 0.0)
    pv = min(1.0, 2 * min(naive_rank_p(list(r.counts), q, "wilcoxon"), naive_rank_p(list(r.counts), q, "ansari")))
    return max(d_mean, d_spread), pv


@functools.lru_cache(maxsize=64)
def naive_permutation(p: tuple[int, ...], q: tuple[int, ...], max_draws: int) -> dict[str, float] | None:
    """The permutation p-values by their definitions, one drawn split at a time, or ``None`` outside
    the small-effective-size regime.  The random splits are the module's own draws (the same seed and
    chunks): what is checked is the effective size, the statistics of each split and the sequential
    stopping, written out here from the definitions."""
    from detectors import permutation as perm
    n, m = sum(p), sum(q)
    big_n = n + m
    pooled = [a + b for a, b in zip(p, q, strict=True)]
    if min(n, m) * (big_n - max(pooled)) / big_n >= perm.PERMUTATION_BELOW:
        return None
    # bins empty on both sides left out; past 256 bins, each bin joins the group of the 1/256 pooled
    # quantile its first value falls in
    bins = [(a, b) for a, b in zip(pooled, q, strict=True) if a > 0]
    if len(bins) > perm.GROUPS:
        groups: dict[int, list[int]] = {}
        before = 0
        for a, b in bins:
            g = groups.setdefault(before * perm.GROUPS // big_n, [0, 0])
            g[0], g[1] = g[0] + a, g[1] + b
            before += a
        bins = [(a, b) for a, b in groups.values()]
    q_kept = [b for _, b in bins]
    l = np.array([a for a, _ in bins], dtype=np.float64)
    hi = np.cumsum(l)
    lo = hi - l
    mid_rank = [(a + b + 1) / 2 for a, b in zip(lo, hi, strict=True)]
    ansari = [sum(min(r, big_n + 1 - r) for r in range(int(a) + 1, int(b) + 1)) / (b - a)
              for a, b in zip(lo, hi, strict=True)]
    pooled_mid = hi - l / 2

    def statistics(cur: np.ndarray) -> list[float]:
        ref_counts = l - cur
        f, g = np.cumsum(ref_counts) / n, np.cumsum(cur) / m
        ks = float(np.max(np.abs(f - g)))
        cvm = n * m / big_n ** 2 * float(np.sum(l * (f - g) ** 2))
        ad = 0.0  # Scholz & Stephens' A2akN, both samples' terms (eq. 7, midranks)
        for size, counts in ((n, ref_counts), (m, cur)):
            own_mid = np.cumsum(counts) - counts / 2
            den = pooled_mid * (big_n - pooled_mid) - big_n * l / 4
            ok = den > 0
            ad += float(np.sum(l[ok] * (big_n * own_mid[ok] - size * pooled_mid[ok]) ** 2 / den[ok])) / size
        ad *= (big_n - 1) / big_n ** 2
        wil = abs(sum(c * r for c, r in zip(cur, mid_rank, strict=True)) - m * (big_n + 1) / 2)
        mean_a = float(np.dot(l, ansari)) / big_n
        ans = abs(sum(c * a for c, a in zip(cur, ansari, strict=True)) - m * mean_a)
        return [ks, cvm, ad, wil, ans]

    observed = statistics(np.array(q_kept, dtype=np.float64))
    kept = np.array([a for a, _ in bins], dtype=np.int64)
    rng = np.random.default_rng([n, m, zlib.crc32(kept.tobytes()),
                                 zlib.crc32(np.array(q_kept, dtype=np.int64).tobytes())])
    hits, stopped, drawn, chunk = [0] * 5, [0] * 5, 0, perm.CHUNK
    sampler = perm._Sampler(kept, m if m <= n else n)  # the smaller side's values
    while drawn < max_draws and not all(stopped):
        rows = min(chunk, max_draws - drawn)
        chunk = min(2 * chunk, perm.CHUNK_MAX)
        which, bins, counts = sampler.draw(rng, rows)
        for r in range(rows):
            drawn += 1
            row = np.bincount(bins[which == r], weights=counts[which == r], minlength=kept.size)
            split = row if m <= n else kept - row
            for t, value in enumerate(statistics(split.astype(np.float64))):
                if not stopped[t] and value >= observed[t] * (1 - 1e-9):
                    hits[t] += 1
                    if hits[t] == perm.STOP_AFTER:
                        stopped[t] = drawn
    return {name: (perm.STOP_AFTER / stopped[t] if stopped[t] else (hits[t] + 1) / (drawn + 1))
            for t, name in enumerate(perm.TESTS)}


def naive_grid(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch) -> dict:
    out = {}
    cols = columns(det, ref_profile, ref, cur)
    # a lone drifted column must be able to reach alpha / columns, mean_shift's doubled p-value with one
    # draw at the observed statistic: 4 columns / alpha draws, at least 2 000
    max_draws = max(2000, math.ceil(4 * len(cols) / det.alpha) - 1)
    for col, r, _, values in cols:
        p, q = list(r.counts), hist(values, r.edges)
        conditional = naive_permutation(tuple(p), tuple(q), max_draws)
        if conditional is not None:  # a small effective size: the permutation p-values
            value, _ = naive_grid_asymptotic(det, r, values, p, q)
            pv = {"ks": conditional["ks"], "wasserstein": conditional["cvm"], "cramer_von_mises": conditional["cvm"],
                  "anderson_darling": conditional["ad"],
                  "mean_shift": min(1.0, 2 * min(conditional["wilcoxon"], conditional["ansari"]))}[det.name]
            out[(col, det.statistic_name)] = (value, pv)
        else:
            out[(col, det.statistic_name)] = naive_grid_asymptotic(det, r, values, p, q)
    return out


def naive_grid_asymptotic(det: Detector, r: NumericReference, values: np.ndarray, p: list[int], q: list[int]
                          ) -> tuple[float, float]:
    """(value, p-value) of one grid detector on one column with the limit laws' p-values."""
    if det.name == "ks":
        d = naive_ks(p, q)
        n, m = sum(p), sum(q)
        pooled = [a + b for a, b in zip(p, q, strict=True)]
        if max(pooled) > 0.01 * (n + m):  # ties: the tie-aware law at d sqrt(n_eff (N-1)/N)
            return d, naive_ks_tied_sf(d * math.sqrt(n * m / (n + m) * (n + m - 1) / (n + m)), pooled)
        return d, float(stats.kstwo.sf(d, round(n * m / (n + m))))
    if det.name == "wasserstein":
        scale = naive_scale(r, values)
        return naive_w1(r, values) / scale if scale > 0 else 0.0, naive_cvm(p, q)[1]
    if det.name == "cramer_von_mises":
        _, pv, omega2 = naive_cvm(p, q)
        return omega2, pv
    if det.name == "anderson_darling":
        _, pv, dist = naive_ad(p, q)
        return dist, pv
    assert det.name == "mean_shift", det.name
    return naive_mean_shift(r, values)


def naive_multivariate(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch) -> dict:
    from detectors.drift_numeric import ks_p_value
    model = ref_profile.extras[det.key]
    errors = []
    for row in range(cur.n_rows):
        z = [(float(cur.numeric[f][row]) - model.center[j]) / model.scale[j] for j, f in enumerate(model.features)]
        if not all(math.isfinite(v) for v in z):
            errors.append(math.nan)
            continue
        scores = [sum(z[j] * model.components[j, c] for j in range(len(z))) for c in range(model.n_components)]
        resid = [z[j] - sum(scores[c] * model.components[j, c] for c in range(model.n_components))
                 for j in range(len(z))]
        mantissa, exponent = math.frexp(sum(x * x for x in resid))  # rounded to 24 significant bits
        errors.append(math.ldexp(round(math.ldexp(mantissa, 24)), exponent - 24))
    fin = [e for e in errors if math.isfinite(e)]
    q = hist(np.array(errors), model.errors.edges)
    d = naive_ks(list(model.errors.counts), q)
    ratio = max(sum(fin) / len(fin), 1e-9) / max(model.errors.mean, 1e-9)
    return {("numeric_features", det.statistic_name): (ratio, ks_p_value(d, n_reference=model.errors.n,
                                                                           n_current=len(fin)))}


def fisher_greater(k: int, m: int, kr: int, n: int) -> float:
    """One-sided Fisher exact test that k of m exceeds kr of n: the hypergeometric tail, in integers."""
    if k == 0:
        return 1.0
    total, events = n + m, k + kr
    return sum(math.comb(events, j) * math.comb(total - events, m - j)
               for j in range(k, min(events, m) + 1)) / math.comb(total, m)


def naive_quality(det: Detector, ref_profile: Profile, ref: Batch, cur: Batch) -> dict:
    out = {}
    rn, cn = raw_numeric(ref), raw_numeric(cur)
    for col, r in ref_profile.numeric.items():
        x, y = rn[col].tolist(), cn[col].tolist()
        k_nan_r = sum(1 for v in x if math.isnan(v))
        k_inf_r = sum(1 for v in x if math.isinf(v))
        k_nan = sum(1 for v in y if math.isnan(v))
        k_inf = sum(1 for v in y if math.isinf(v))
        fin = [v for v in y if math.isfinite(v)]
        k_out = sum(1 for v in fin if v < r.minimum or v > r.maximum)
        for stat, k, kr in (("missing_rate", k_nan, k_nan_r), ("inf_rate", k_inf, k_inf_r)):
            out[(col, stat)] = (k / len(y), fisher_greater(k, len(y), kr, len(x)))
        # exact exchangeable null: K ~ BetaBinomial(m, 2, n - 1); summed by loops, integers
        big_n = r.n + len(fin)
        pv = sum((j + 1) * math.comb(big_n - j - 2, r.n - 2)
                 for j in range(k_out, len(fin) + 1)) / math.comb(big_n, r.n) if k_out else 1.0
        out[(col, "out_of_range_rate")] = (k_out / len(fin), pv) if r.n >= 100 else (None, None)
    rc, cc = raw_categorical(ref), raw_categorical(cur)
    for col, r in ref_profile.categorical.items():
        x, y = rc[col].tolist(), cc[col].tolist()
        k, kr = sum(1 for v in y if v is None), sum(1 for v in x if v is None)
        out[(col, "missing_rate")] = (k / len(y), fisher_greater(k, len(y), kr, len(x)))
        seen = set(v for v in x if v is not None)
        counts = {v: sum(1 for w in x if w == v) for v in seen}
        nonnull = [v for v in y if v is not None]
        unseen = sum(1 for v in nonnull if v not in seen)
        pooled = [counts.get(v, 0) + sum(1 for w in nonnull if w == v) for v in seen | set(nonnull)]
        pv = naive_stop_loss_p(pooled, unseen, r.n)
        out[(col, "unseen_rate")] = (unseen / len(nonnull), pv)
    return out


NAIVE: dict[str, Naive] = {
    **{n: naive_binned for n in ("psi", "jensen_shannon", "kl_divergence", "hellinger", "total_variation")},
    **{n: naive_contingency for n in ("chi2", "g_test")},
    **{n: naive_grid for n in ("ks", "wasserstein", "cramer_von_mises", "anderson_darling", "mean_shift")},
    "multivariate": naive_multivariate,
    "data_quality": naive_quality,
}


def small_inputs() -> tuple[Batch, Batch]:
    """Small data with what the kernels must get right: ties, empty bins, rare and unseen
    categories, NaN and inf, and current values beyond both ends of the reference range."""
    ref = make_batch(11, 300)
    cur = make_batch(12, 220, shift=True)
    rng = np.random.default_rng(13)
    ref.numeric["x4"] = rng.poisson(2.0, 300).astype(np.float64)          # ties: material
    cur.numeric["x4"] = rng.poisson(2.6, 220).astype(np.float64)
    cur.numeric["x4"][:7] = [-3.0, -2.5, 15.0, 16.0, 16.0, 40.0, 12.5]     # beyond both ends
    ref.categorical["rare"] = rng.choice(["a", "b", "c", "d", "e"], 300, p=[0.85, 0.1, 0.03, 0.01, 0.01]).astype(object)
    cur.categorical["rare"] = rng.choice(["a", "b", "c", "new", "newer", "odd"], 220,
                                         p=[0.66, 0.2, 0.05, 0.05, 0.025, 0.015]).astype(object)
    cur.categorical["rare"][:4] = None
    return ref, cur


@pytest.mark.parametrize("name", NAMES)
def test_kernel_equals_naive(name: str) -> None:
    naive = NAIVE.get(name)
    if naive is None:
        pytest.fail(f"no naive implementation registered for {name!r} in tests/test_conformance.py::NAIVE: "
                    "every registered detector's kernel is checked against one")
    ref, cur = small_inputs()
    det = REGISTRY.create(name)  # 220 window rows: above every default min_rows
    ref_profile = reference_profile(ref, [det])
    findings = det.score(det.summarise(ref_profile), window_profile(ref_profile, split(cur, 3), [det]), context=CTX)
    expected = naive(det, ref_profile, ref, cur)
    got = {(f.target, f.statistic): (f.value, f.p_value) for f in findings}
    assert set(got) == set(expected)
    for key, (value, p_value) in expected.items():
        v, p = got[key]
        if value is None:
            assert v is None, key
            continue
        assert v == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert p == pytest.approx(p_value, rel=1e-7, abs=1e-12), key
