"""Multivariate drift: PCA reconstruction error against the reference.

A change of the *joint* distribution — a flipped correlation, a new
cluster in an empty corner — can leave every marginal as it was, so no
per-feature detector sees it.  A principal-component model of the
reference does: rows that break the reference's correlations no longer
lie near its principal subspace and are reconstructed badly.

Reference (once, :meth:`Multivariate.reference_extra`)
    The numeric features are standardised with the reference mean and sd;
    the principal components are fitted on the even rows of the reference
    (``eigh`` of the d x d covariance) and the smallest number *k* of them
    explaining at least ``variance`` (0.9) of the variance is kept
    (1 ≤ k ≤ d-1).  The reconstruction errors of the **odd** rows — held out
    from the fit, so they are honest out-of-sample errors like the current
    window's — summarised on a fine grid (:class:`~detectors.profile.NumericReference`)
    are the reference distribution.  Fitting and scoring the same rows would
    understate the reference error (the smallest eigen-directions are picked
    for being small), and every large window would then look drifted.

Window (per batch, :meth:`Multivariate.batch_extra`)
    The squared reconstruction error of each row,
    :math:`e = \\|z - z V V^\\top\\|^2 = \\|z U\\|^2` (*U*: the eigenvectors left
    out), is counted on the reference error grid
    (:class:`~detectors.profile.NumericCounts`: mergeable, memory independent
    of the window).  Rows with a missing or infinite feature get no error
    and are excluded, which the finding's note states.

Score
    value: the ratio of mean errors, current over reference; p-value: the
    binned two-sample KS test of the two error distributions.  Features
    constant or empty in the reference are left out of the model (stated in
    the note); fewer than two usable features give no finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Batch, Context, Detector, Finding, Param, number, one_of, optional, str_list
from .decision import adjust_p_values, classify
from .drift_common import iso
from .drift_numeric import ks_binned, ks_p_value
from .profile import NumericCounts, NumericReference, Profile, scaled_moments

__all__ = ["PCAModel", "Multivariate", "fit_pca", "reconstruction_errors", "TARGET"]

#: the finding's target: the joint distribution of the numeric features
TARGET = "numeric_features"
#: mean reference errors below this (standardised units) are treated as this, so exact collinearity stays finite
ERROR_FLOOR = 1e-9


@dataclass(frozen=True, kw_only=True)
class PCAModel:
    """What the reference leaves for the window: scaling, components and the held-out error grid."""

    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # d x k
    explained: float
    errors: NumericReference
    #: the other d - k eigenvectors: a row's residual is its projection on them
    complement: np.ndarray  # d x (d - k)
    dropped: tuple[str, ...] = ()

    @property
    def n_components(self) -> int:
        return int(self.components.shape[1])


def _matrix(columns: dict[str, np.ndarray], features: tuple[str, ...], n_rows: int) -> np.ndarray:
    cols = [np.asarray(columns[f], dtype=np.float64) if f in columns else np.full(n_rows, np.nan) for f in features]
    return np.column_stack(cols) if cols else np.empty((n_rows, 0))


def _feature_rows(columns: dict[str, np.ndarray], features: tuple[str, ...], n_rows: int) -> np.ndarray:
    """The features as the rows of a d x n float64 matrix (a missing one all NaN): elementwise work on it runs
    along the n rows of the batch, not along the d features of a row."""
    out = np.empty((len(features), n_rows))
    for i, f in enumerate(features):
        out[i] = columns[f] if f in columns else np.nan
    return out


def reconstruction_errors(model: PCAModel, x: np.ndarray) -> np.ndarray:
    """Squared reconstruction error of each row of ``x`` (n x d, model feature order); NaN for incomplete rows.

    The residual :math:`z - z V V^\\top` of a standardised row *z* is its projection on the
    eigenvectors left out, *U* (``complement``), so the error is :math:`\\|z U\\|^2`; when more
    eigenvectors are left out than twice those kept, the residual itself is cheaper and is formed
    instead.  Either way the error is formed directly (the shortcut
    :math:`\\|z\\|^2 - \\|z V\\|^2` loses the digits of an error far below :math:`\\|z\\|^2`).
    Each error is rounded to 24 significant bits: the same row gives
    errors a few ulps apart in the reference and in a window (the BLAS takes other paths for
    other layouts and sizes), and on discrete features, whose errors take a few values, a
    window's atom one ulp below the reference's fell into the grid bin below it and KS saw the
    whole atom move.

    >>> m = fit_pca({"a": np.arange(10.0), "b": np.arange(10.0) * 2 + 1, "c": np.sin(np.arange(10.0))},
    ...             features=("a", "b", "c"), variance=0.5)
    >>> bool(np.all(reconstruction_errors(m, np.array([[3.0, 7.0, np.sin(3.0)]])) >= 0))
    True
    """
    return _errors(model, np.ascontiguousarray(np.asarray(x, dtype=np.float64).T))


def _errors(model: PCAModel, xt: np.ndarray) -> np.ndarray:
    """:func:`reconstruction_errors` of the columns of ``xt`` (d x n, a feature per row)."""
    complete = np.isfinite(xt).all(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):  # features near 1e300: see the end
        z = (xt - model.center[:, None]) / model.scale[:, None]
        if not complete.all():
            z = np.where(complete, z, 0.0)
        # the cheaper of two exact forms: zU costs d(d-k) per row, z - V(V'z) costs 2dk (features strongly
        # correlated, few components kept: the residual)
        if model.complement.shape[1] <= 2 * model.n_components:
            q = model.complement.T @ z
        else:
            q = z - model.components @ (model.components.T @ z)
        err = np.einsum("ij,ij->j", q, q)
        mantissa, exponent = np.frexp(err)  # 24 significant bits, whatever the magnitude (no overflow)
        err = np.ldexp(np.rint(np.ldexp(mantissa, 24)), exponent - 24)
    # a complete row whose error passes float64 (features near 1e300) has the largest error there is:
    # it is not a missing row
    return np.where(complete, np.where(np.isfinite(err), err, np.finfo(np.float64).max), np.nan)


def fit_pca(columns: dict[str, np.ndarray], *, features: tuple[str, ...], variance: float) -> PCAModel | None:
    """Fit the reference model (see the module docstring); ``None`` with fewer than two usable features."""
    n_rows = len(next(iter(columns.values()))) if columns else 0
    x = _matrix(columns, features, n_rows)
    fit, held = x[0::2], x[1::2]
    finite = np.isfinite(fit)
    counts = finite.sum(axis=0)
    center, sd = scaled_moments(fit, axis=0)
    usable = (counts >= 2) & (sd > 0) & np.isfinite(sd)
    if usable.sum() < 2:
        return None
    kept = tuple(f for f, u in zip(features, usable, strict=True) if u)
    dropped = tuple(f for f, u in zip(features, usable, strict=True) if not u)
    center, sd = center[usable], sd[usable]
    z = (fit[:, usable] - center) / sd
    z = z[np.all(np.isfinite(z), axis=1)]
    if z.shape[0] < 2:
        return None
    cov = (z.T @ z) / (z.shape[0] - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
    share = np.cumsum(vals) / vals.sum() if vals.sum() > 0 else np.ones_like(vals)
    k = int(np.clip(np.searchsorted(share, variance - 1e-12) + 1, 1, z.shape[1] - 1))
    # a deterministic sign for each component (eigh's is arbitrary)
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    proto = PCAModel(features=kept, center=center, scale=sd, components=vecs[:, :k], explained=float(share[k - 1]),
                     errors=NumericReference.from_values(np.empty(0)), complement=vecs[:, k:], dropped=dropped)
    err = reconstruction_errors(proto, held[:, usable])
    return PCAModel(features=kept, center=center, scale=sd, components=vecs[:, :k], explained=float(share[k - 1]),
                    errors=NumericReference.from_values(err), complement=vecs[:, k:], dropped=dropped)


class Multivariate(Detector):
    """PCA reconstruction-error drift of the numeric features' joint distribution.

    Value: :math:`\\bar e_{cur} / \\bar e_{ref}`, the mean squared
    reconstruction error of the window over that of the held-out reference
    rows (1 when nothing changed; see the module docstring for the model).
    p-value: binned two-sample KS test of the two error distributions
    (:func:`~detectors.drift_numeric.ks_binned`), so the ratio of a heavy-tailed
    error stream is not taken at face value.

    Parameters: ``features`` (default every numeric feature), ``variance``
    (0.9: share of the reference variance the kept components explain),
    ``warn`` 1.2 and ``alert`` 1.5 (the mean error grows by 20 % / 50 %),
    ``alpha`` 0.05, ``correction`` ("bh"; one test, so it changes nothing),
    ``min_rows`` 100 (on both sides: held-out reference rows and window rows),
    ``sample_rows`` 4096: each batch is scored on at most this many rows, an
    even stride through it, so a 10M-row window costs about 160,000 rows of
    linear algebra; ``n_current`` is the number of rows scored.
    ``reference_rows`` 200,000: the reference is thinned to at most this many
    rows by an even stride; half fit the model, half calibrate the error
    distribution (a 1M-row reference fitted in 1.9 s whole, 0.4 s thinned).

    A flipped correlation that no marginal shows:

    >>> from detectors.base import Batch
    >>> from datetime import datetime, timezone
    >>> rng = np.random.default_rng(0)
    >>> def batch(rho, n):
    ...     a = rng.normal(size=n); b = rho * a + np.sqrt(1 - rho ** 2) * rng.normal(size=n)
    ...     return Batch(n_rows=n, numeric={"a": a, "b": b, "c": rng.normal(size=n)}, categorical={},
    ...                  sensitive={}, timestamp=np.zeros(0, np.int64))
    >>> det = Multivariate()
    >>> ref = Profile(n_rows=4000, extras={det.key: det.reference_extra(batch(0.8, 4000))})
    >>> cur = Profile(n_rows=2000, extras={det.key: det.batch_extra(ref.extras[det.key], batch(-0.8, 2000))})
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> f = det.score(ref, cur, context=Context(model="m", window_start=t, window_end=t))[0]
    >>> f.status, round(f.value) > 3
    ('alert', True)
    """

    name: ClassVar[str] = "multivariate"
    kind: ClassVar = "drift"
    applies_to = frozenset({"numeric"})
    statistic_name: ClassVar[str] = "reconstruction_error_ratio"
    uses_batches: ClassVar[bool] = True
    joint: ClassVar[bool] = True
    batch_fields = frozenset({"numeric"})
    params = {
        "features": Param(None, str_list, "numeric features of the model (default: all)"),
        "sample_rows": Param(4096, number(ge=100, integer=True),
                             "rows scored per batch at most (an even stride through the batch)"),
        "reference_rows": Param(200_000, number(ge=200, integer=True),
                                "reference rows the model is fitted and calibrated on at most (an even stride)"),
        "variance": Param(0.9, number(gt=0, lt=1), "share of the reference variance the kept components explain"),
        "warn": Param(1.2, number(gt=1), "error ratio at which the status becomes warn"),
        "alert": Param(1.5, number(gt=1), "error ratio at which the status becomes alert"),
        "min_rows": Param(100, number(ge=1, integer=True), "fewer rows on either side: insufficient_data"),
        "alpha": Param(0.05, optional(number(gt=0, lt=1)), "significance level"),
        "correction": Param("bh", one_of("bh", "bonferroni", "none"), "multiple-testing correction"),
    }

    def _features(self, batch: Batch) -> tuple[str, ...]:
        chosen = self.features or list(batch.numeric)
        return tuple(f for f in chosen if f in batch.numeric)

    def reference_extra(self, reference: Batch) -> PCAModel | None:
        step = max(1, -(-reference.n_rows // self.reference_rows))
        cols = {f: v[::step] for f, v in reference.numeric.items()}
        return fit_pca(cols, features=self._features(reference), variance=self.variance)

    def batch_extra(self, reference_extra: PCAModel | None, batch: Batch) -> NumericCounts | None:
        if reference_extra is None:
            return None
        if batch.n_rows == 0:
            return NumericCounts.empty(reference_extra.errors)
        step = -(-batch.n_rows // self.sample_rows)  # ceil: an even stride keeps the batch's time spread
        cols = {f: v[::step] for f, v in batch.numeric.items()}
        n = -(-batch.n_rows // step)
        xt = _feature_rows(cols, reference_extra.features, n)
        return NumericCounts.of(_errors(reference_extra, xt), reference_extra.errors)

    def score(self, summary: Profile, current: Profile, *, context: Context) -> list[Finding]:
        model: PCAModel | None = summary.extras.get(self.key)
        value: float | None = None
        p_value: float | None = None
        threshold = self.warn
        status = "insufficient_data"
        if model is None:  # configured but unable to run: said, not left out
            n_ref, n_cur = 0, current.n_rows
            notes = ["no reference model: fewer than two features with finite, non-constant values in the reference"]
        else:
            counts: NumericCounts = current.extras.get(self.key) or NumericCounts.empty(model.errors)
            n_ref, n_cur = model.errors.n, counts.n_finite
            notes = [f"{len(model.features)} features, {model.n_components} components "
                     f"({model.explained:.0%} of the reference variance)"]
            if model.dropped:
                notes.append(f"left out (constant or empty in the reference): {', '.join(model.dropped)}")
            if counts.n_missing:
                notes.append(f"excluded {counts.n_missing} of {counts.n_total} rows with a missing or infinite feature")
            if n_ref >= self.min_rows and n_cur >= self.min_rows:
                ref_mean = max(model.errors.mean, ERROR_FLOOR)
                with np.errstate(over="ignore"):
                    value = float(min(max(counts.mean, ERROR_FLOOR) / ref_mean, np.finfo(np.float64).max))
                d = ks_binned(model.errors.counts, counts.counts)
                p_value = ks_p_value(d, n_reference=n_ref, n_current=n_cur,
                                     pooled=model.errors.counts + counts.counts)  # tie-aware on discrete features
                notes.append(f"mean error {counts.mean:.4g} (reference {model.errors.mean:.4g}), KS D {d:.4f}")
                p_adj = float(adjust_p_values(np.array([p_value]), method=self.correction)[0])
                status, threshold = classify(value, p_adjusted=p_adj, warn=self.warn, alert=self.alert,
                                             alpha=self.alpha)
        return [Finding(model=context.model, detector=self.name, kind=self.kind, target=TARGET,
                        statistic=self.statistic_name, value=value, threshold=threshold, p_value=p_value,
                        status=status, n_reference=n_ref, n_current=n_cur,
                        window_start=iso(context.window_start), window_end=iso(context.window_end),
                        note="; ".join(notes))]
