"""Agreement statistics against hand computations and closed forms."""

import numpy as np
import pytest
from scipy import stats

from bids_harmonize.group import agreement as ag

CT = np.array([10.0, 30.0, 50.0, 20.0])
MR = np.array([2.0, 20.0, 40.0, 15.0])  # differences -8, -10, -10, -5


def test_differences_by_hand():
    d = ag.difference_stats(CT, MR)
    assert d["n"] == 4
    assert d["mean_diff"] == pytest.approx(-8.25)
    # deviations 0.25, -1.75, -1.75, 3.25 -> SS 16.75 -> var 16.75 / 3
    assert d["sd_diff"] == pytest.approx(np.sqrt(16.75 / 3))
    assert d["mean_abs_diff"] == pytest.approx(8.25)
    ba = ag.bland_altman(CT, MR)
    assert ba["loa_lower"] == pytest.approx(-8.25 - 1.96 * np.sqrt(16.75 / 3))
    assert ba["loa_upper"] == pytest.approx(-8.25 + 1.96 * np.sqrt(16.75 / 3))
    # (-80 % - 33.3 % - 20 % - 25 %) / 4
    assert ag.percent_bias(CT, MR) == pytest.approx((-80 - 100 / 3 - 20 - 25) / 4)


def test_icc_closed_forms_for_two_raters():
    # For k = 2: ICC(3,1) = 2 cov / (var x + var y);
    # ICC(2,1) = 2 cov / (var x + var y + mean(d)^2 - var(d) / n), d = y - x.
    vx, vy = CT.var(ddof=1), MR.var(ddof=1)
    cov = np.cov(CT, MR, ddof=1)[0, 1]
    d = MR - CT
    assert ag.icc(CT, MR, "3,1") == pytest.approx(2 * cov / (vx + vy))
    assert ag.icc(CT, MR, "2,1") == pytest.approx(
        2 * cov / (vx + vy + d.mean() ** 2 - d.var(ddof=1) / 4))
    # hand ANOVA for x = (1, 2, 3), y = (2, 3, 4): MSR = 2, MSC = 1.5, MSE = 0
    assert ag.icc([1, 2, 3], [2, 3, 4], "2,1") == pytest.approx(2 / (2 + 0 + 2 * 1.5 / 3))
    assert ag.icc(CT, CT, "2,1") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="form"):
        ag.icc(CT, MR, "1,1")


def test_correlations_match_scipy():
    assert ag.pearson(CT, MR) == pytest.approx(stats.pearsonr(CT, MR)[0])
    assert ag.spearman(CT, MR) == pytest.approx(stats.spearmanr(CT, MR)[0])
    assert np.isnan(ag.pearson([1, 2], [2, 3]))


def test_missing_pairs_are_left_out():
    d = ag.difference_stats([1.0, np.nan, 3.0], [2.0, 5.0, np.nan])
    assert d["n"] == 1 and d["mean_diff"] == 1.0 and np.isnan(d["sd_diff"])


def test_classification_by_hand():
    # classes at 24.1: CT N P P N; MR N N P N -> one change, kappa by hand
    r = ag.classification_agreement(CT, MR, 24.1)
    assert (r["n"], r["n_agree"], r["pos_to_neg"], r["neg_to_pos"]) == (4, 3, 1, 0)
    po, pe = 3 / 4, (2 / 4) * (1 / 4) + (2 / 4) * (3 / 4)
    assert r["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert r["changed"].tolist() == [False, True, False, False]
    below = ag.classification_agreement([1.5, 2.5], [2.5, 2.5], 2.0, below=True)
    assert below["ref_positive"] == 1 and below["test_positive"] == 0


def test_matrix_similarity():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 5))
    a = ag.correlation_matrix(x)
    assert a == pytest.approx(np.corrcoef(x, rowvar=False))
    b = ag.correlation_matrix(x + rng.normal(scale=0.5, size=x.shape))
    iu = np.triu_indices(5, 1)
    assert ag.matrix_similarity(a, b) == pytest.approx(np.corrcoef(a[iu], b[iu])[0, 1])
