"""Agreement statistics between paired measurements (PET-MR vs PET-CT).

All functions take the reference (PET-CT) values first and the test (PET-MR) values
second; differences are *test - reference*. Pairs with a missing value on either side
are left out. Functions return plain floats / dicts so they are easy to test by hand.

>>> ref = [1.0, 2.0, 3.0, 4.0]
>>> test = [1.1, 2.1, 2.9, 4.3]
>>> d = difference_stats(ref, test)
>>> round(d["mean_diff"], 4), round(d["sd_diff"], 4)
(0.1, 0.1633)
>>> round(icc(ref, test, form="2,1"), 4)
0.9914
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _stats

#: z for 95 % Bland-Altman limits of agreement.
Z95 = 1.96


def _pairs(ref, test) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=float).ravel()
    test = np.asarray(test, dtype=float).ravel()
    if ref.shape != test.shape:
        raise ValueError(f"paired arrays differ in length: {ref.size} vs {test.size}")
    keep = np.isfinite(ref) & np.isfinite(test)
    return ref[keep], test[keep]


def difference_stats(ref, test) -> dict[str, float]:
    """n, mean and sample SD (ddof=1) of test - ref, and mean absolute difference.

    >>> difference_stats([10, 20], [12, 21])
    {'n': 2, 'mean_diff': 1.5, 'sd_diff': 0.7071067811865476, 'mean_abs_diff': 1.5}
    """
    ref, test = _pairs(ref, test)
    d = test - ref
    n = d.size
    return {
        "n": n,
        "mean_diff": float(d.mean()) if n else np.nan,
        "sd_diff": float(d.std(ddof=1)) if n > 1 else np.nan,
        "mean_abs_diff": float(np.abs(d).mean()) if n else np.nan,
    }


def percent_bias(ref, test) -> float:
    """Mean over pairs of 100 * (test - ref) / ref, in percent.

    Only defined for strictly positive reference values (ratios such as SUVR); n/a
    when any reference value is zero or negative (e.g. Centiloid near 0).

    >>> round(percent_bias([1.0, 2.0], [0.9, 1.9]), 6)
    -7.5
    >>> percent_bias([-5.0, 20.0], [-4.0, 18.0])
    nan
    """
    ref, test = _pairs(ref, test)
    if ref.size == 0 or (ref <= 0).any():
        return np.nan
    return float(np.mean(100.0 * (test - ref) / ref))


def bland_altman(ref, test, z: float = Z95) -> dict[str, float]:
    """Bland-Altman bias and limits of agreement (bias +/- z * SD of the differences).

    >>> ba = bland_altman([10, 20, 30], [11, 23, 32])
    >>> ba["bias"], round(ba["sd"], 6), round(ba["loa_lower"], 4), round(ba["loa_upper"], 4)
    (2.0, 1.0, 0.04, 3.96)
    """
    d = difference_stats(ref, test)
    bias, sd = d["mean_diff"], d["sd_diff"]
    return {"n": d["n"], "bias": bias, "sd": sd,
            "loa_lower": bias - z * sd, "loa_upper": bias + z * sd}


def icc(ref, test, form: str = "2,1") -> float:
    """Intraclass correlation of two single measurements per subject (Shrout & Fleiss 1979).

    ``form="2,1"``: two-way random effects, absolute agreement, single measurement
    (McGraw & Wong ICC(A,1)); a constant bias between platforms lowers it.
    ``form="3,1"``: two-way mixed effects, consistency, single measurement (ICC(C,1));
    blind to a constant bias.

    With n subjects, k = 2 platforms, and the two-way ANOVA mean squares
    MSR (subjects), MSC (platforms), MSE (residual)::

        ICC(2,1) = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)
        ICC(3,1) = (MSR - MSE) / (MSR + (k-1) MSE)

    >>> round(icc([1, 2, 3], [2, 3, 4], form="3,1"), 6), round(icc([1, 2, 3], [2, 3, 4]), 4)
    (1.0, 0.6667)
    """
    ref, test = _pairs(ref, test)
    x = np.column_stack([ref, test])
    n, k = x.shape
    if n < 2:
        return np.nan
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    if form == "2,1":
        den = msr + (k - 1) * mse + k * (msc - mse) / n
    elif form == "3,1":
        den = msr + (k - 1) * mse
    else:
        raise ValueError(f"ICC form {form!r} not supported; use '2,1' or '3,1'")
    return float((msr - mse) / den) if den > 0 else np.nan


def pearson(ref, test) -> float:
    """Pearson correlation coefficient (n/a below 3 pairs or with no variance).

    >>> pearson([1, 2, 3], [2, 4, 6])
    1.0
    """
    ref, test = _pairs(ref, test)
    if ref.size < 3:
        return np.nan
    x, y = ref - ref.mean(), test - test.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())  # elementwise: no BLAS threads for 1-D
    return float(np.clip((x * y).sum() / den, -1.0, 1.0)) if den > 0 else np.nan


def spearman(ref, test) -> float:
    """Spearman rank correlation (Pearson of average ranks).

    >>> spearman([1, 2, 3, 4], [1, 4, 9, 100])
    1.0
    """
    ref, test = _pairs(ref, test)
    return pearson(_stats.rankdata(ref), _stats.rankdata(test)) if ref.size >= 3 else np.nan


def agreement_summary(ref, test, *, ratio_scale: bool = True) -> dict[str, float]:
    """All paired statistics at once: the columns of the group agreement tables.

    ``ratio_scale=False`` (Centiloid, signed asymmetry indices) leaves out the percent bias.
    """
    d = difference_stats(ref, test)
    ba = bland_altman(ref, test)
    return {
        "n": d["n"],
        "mean_diff": d["mean_diff"],
        "sd_diff": d["sd_diff"],
        "mean_abs_diff": d["mean_abs_diff"],
        "percent_bias": percent_bias(ref, test) if ratio_scale else np.nan,
        "loa_lower": ba["loa_lower"],
        "loa_upper": ba["loa_upper"],
        "icc_2_1": icc(ref, test, "2,1"),
        "icc_3_1": icc(ref, test, "3,1"),
        "pearson_r": pearson(ref, test),
        "spearman_rho": spearman(ref, test),
    }


def classification_agreement(ref, test, cutoff: float, *, below: bool = False) -> dict:
    """Agreement of positive/negative calls at one cut-off.

    Positive means ``value >= cutoff`` (or ``value < cutoff`` with ``below=True``,
    e.g. DaT specific binding ratios). Returns n, the 2x2 counts, percent agreement,
    Cohen's kappa and the boolean mask (over the finite pairs) of changed calls.

    >>> r = classification_agreement([10, 30, 50, 20], [12, 20, 55, 26], cutoff=24.1)
    >>> r["n"], r["n_agree"], r["percent_agreement"], r["changed"].tolist()
    (4, 2, 50.0, [False, True, False, True])
    >>> r["kappa"]
    0.0
    """
    ref, test = _pairs(ref, test)
    pos_ref = ref < cutoff if below else ref >= cutoff
    pos_test = test < cutoff if below else test >= cutoff
    n = ref.size
    both_pos = int((pos_ref & pos_test).sum())
    both_neg = int((~pos_ref & ~pos_test).sum())
    agree = both_pos + both_neg
    if n:
        po = agree / n
        pe = (pos_ref.mean() * pos_test.mean()) + ((~pos_ref).mean() * (~pos_test).mean())
        kappa = float((po - pe) / (1 - pe)) if pe < 1 else np.nan
    else:
        po, kappa = np.nan, np.nan
    return {
        "n": n,
        "n_agree": agree,
        "percent_agreement": 100.0 * po if n else np.nan,
        "kappa": kappa,
        "ref_positive": int(pos_ref.sum()),
        "test_positive": int(pos_test.sum()),
        "pos_to_neg": int((pos_ref & ~pos_test).sum()),
        "neg_to_pos": int((~pos_ref & pos_test).sum()),
        "changed": pos_ref != pos_test,
    }


def correlation_matrix(values: np.ndarray) -> np.ndarray:
    """Pearson correlation between columns (regions) across rows (subjects).

    Rows with any missing value are left out.

    >>> correlation_matrix(np.array([[1., 2.], [2., 4.], [3., 7.]])).round(3).tolist()
    [[1.0, 0.993], [0.993, 1.0]]
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values).all(axis=1)]
    if values.shape[0] < 3:
        return np.full((values.shape[1],) * 2, np.nan)
    centred = values - values.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", centred, centred))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = centred / norm
    # einsum rather than a BLAS product: no thread start-up cost on a busy machine
    return np.clip(np.einsum("ij,ik->jk", z, z), -1.0, 1.0)


def matrix_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the upper triangles (diagonal excluded) of two matrices.

    >>> a = np.array([[1, .5, .2], [.5, 1, .1], [.2, .1, 1]])
    >>> matrix_similarity(a, a)
    1.0
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    iu = np.triu_indices_from(a, k=1)
    return pearson(a[iu], b[iu])
