"""The consortium benchmark's scoring (benchmarks/accuracy/consortium.py and the
end_to_end.py functions it shares) on small hand-made tables: fast, nothing run.

Every assertion sits far from any boundary: exact values only where the arithmetic is
exact (constant differences, identical or reversed labels), otherwise wide margins."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e = _load("end_to_end")
cons = _load("consortium")


# ---------------------------------------------------------------- Cohen's kappa of status


def test_kappa_identical_labels_is_one():
    cl = [-5.0, 3.0, 10.0, 45.0, 80.0, 120.0]
    r = e2e.status_agreement(cl, cl)
    assert r["kappa"] == 1.0
    assert r["percent_agreement"] == 100.0
    assert r["changed"] == 0
    assert r["kappa_ci"] == (1.0, 1.0)


def test_kappa_reversed_labels_is_minus_one():
    ref = [0.0, 5.0, 60.0, 90.0]
    test = [60.0, 90.0, 0.0, 5.0]  # every call flipped, both classes equally often
    r = e2e.status_agreement(ref, test)
    assert r["kappa"] == -1.0
    assert r["changed"] == 4 and r["pos_to_neg"] == 2 and r["neg_to_pos"] == 2


def test_kappa_of_independent_labels_is_near_zero():
    rng = np.random.default_rng(7)
    n = 4000  # SD of kappa about 1 / sqrt(n) = 0.016; the bound below is 6 SD away
    ref = np.where(rng.random(n) < 0.5, 60.0, 0.0)
    test = np.where(rng.random(n) < 0.5, 60.0, 0.0)
    r = e2e.status_agreement(ref, test, n_boot=200)
    assert abs(r["kappa"]) < 0.1
    lo, hi = r["kappa_ci"]
    assert -0.2 < lo < r["kappa"] < hi < 0.2


def test_kappa_uses_the_cutoff_and_reports_changes():
    # PET-CT calls: - - + + ; test: 15 -> 25 crosses 20.1 upwards, the rest stay
    r = e2e.status_agreement([0.0, 15.0, 60.0, 90.0], [1.0, 25.0, 58.0, 95.0], cutoff=20.1)
    assert r["changed"] == 1 and r["neg_to_pos"] == 1
    assert 0.2 < r["kappa"] < 0.8  # 0.5 exactly: (0.75 - 0.5) / (1 - 0.5)
    # a cut-off above everything: one class on both sides, kappa undefined
    assert np.isnan(e2e.status_agreement([0.0, 15.0], [1.0, 25.0], cutoff=500.0)["kappa"])


def test_kappa_interval_resamples_subjects():
    rng = np.random.default_rng(3)
    ref = rng.choice([0.0, 60.0], size=60)
    test = ref.copy()
    test[:6] = 60.0 - test[:6]  # 6 of 60 calls changed
    r = e2e.status_agreement(ref, test, [f"s{i}" for i in range(60)], n_boot=300)
    lo, hi = r["kappa_ci"]
    assert 0.5 < r["kappa"] < 0.95
    assert lo < r["kappa"] < hi
    assert hi <= 1.0


# ---------------------------------------------------------------- paired bootstrap interval


def test_bootstrap_mean_of_constant_values_is_exact():
    assert e2e.bootstrap_mean([-3.0] * 10) == (-3.0, -3.0, -3.0)


def test_bootstrap_interval_of_a_clear_difference_excludes_zero():
    rng = np.random.default_rng(1)
    diff = -5.0 + rng.uniform(-1.0, 1.0, size=20)
    m, lo, hi = e2e.bootstrap_mean(diff)
    assert lo < m < hi
    assert -6.0 < lo and hi < -3.0


def test_bootstrap_interval_of_no_difference_includes_zero():
    diff = np.tile([-2.0, 2.0], 15)  # mean 0 exactly, wide spread
    m, lo, hi = e2e.bootstrap_mean(diff)
    assert m == 0.0
    assert lo < -0.3 and hi > 0.3


# ---------------------------------------------------------------- per-site summary


def _cases() -> pd.DataFrame:
    """Three sites of four subjects, PiB: raw and harmonized Centiloid differences.

    Site A: raw +-10 CL, harmonized +-1; site B: raw +10 (subject 15 CL crosses the
    cut-off), harmonized +-1; site C: raw +-1, harmonized +-8 (made worse)."""
    design = {"A": ([0.0, 5.0, 60.0, 90.0], [10, -10, 10, -10], [1, -1, 1, -1]),
              "B": ([0.0, 15.0, 60.0, 90.0], [10, 10, 10, 10], [1, -1, 1, -1]),
              "C": ([0.0, 5.0, 60.0, 90.0], [1, -1, 1, -1], [8, -8, 8, -8])}
    rows = []
    for site, (ct, d_raw, d_harm) in design.items():
        for i, cl_ct in enumerate(ct):
            subject = f"{site}{i}"
            for method, d, pct in (("raw", d_raw[i], 4.0), ("harmonized", d_harm[i], 2.0)):
                rows.append({"set": "consortium", "site": site, "subject": subject,
                             "tracer": "PiB", "ac_setup": f"setup-{site}", "method": method,
                             "mean_abs_pct": pct, "worst_pct": 2 * pct,
                             "worst_region": "frontal_cortex", "worst_no_csf_pct": 2 * pct,
                             "cl_petct": cl_ct, "cl": cl_ct + d, "dcl": float(d)})
    return pd.DataFrame(rows)


def test_per_site_summary():
    blocks = cons.summarise_sites(_cases())
    assert list(blocks) == ["all", "A", "B", "C"]
    assert blocks["all"]["n_subjects"] == 12
    assert {k: blocks[k]["n_subjects"] for k in "ABC"} == {"A": 4, "B": 4, "C": 4}
    # constant |dCL| within a site: mean and interval exact
    assert blocks["A"]["methods"]["raw"]["abs_dcl"] == (10.0, 10.0, 10.0)
    assert blocks["A"]["methods"]["harmonized"]["abs_dcl"] == (1.0, 1.0, 1.0)
    assert blocks["C"]["methods"]["harmonized"]["abs_dcl"] == (8.0, 8.0, 8.0)
    # signed mean = Bland-Altman bias: site A cancels, site B +10
    assert blocks["A"]["methods"]["raw"]["mean_dcl"] == 0.0
    assert blocks["B"]["methods"]["raw"]["bias"] == 10.0
    lo, hi = blocks["A"]["methods"]["raw"]["loa"]
    assert lo < -10.0 and hi > 10.0
    # paired harmonized - raw, per subject: A -9, B -9, C +7
    assert blocks["A"]["paired"]["harmonized - raw"]["abs_dcl"] == (-9.0, -9.0, -9.0)
    assert blocks["C"]["paired"]["harmonized - raw"]["abs_dcl"] == (7.0, 7.0, 7.0)
    assert blocks["A"]["no_worse_than_raw"]["not_worse"] is True
    assert blocks["C"]["no_worse_than_raw"]["not_worse"] is False
    # status: only site B's 15 CL subject changes, and only raw
    assert blocks["B"]["methods"]["raw"]["class_changes"] == 1
    assert blocks["all"]["methods"]["raw"]["class_changes"] == 1
    assert blocks["all"]["methods"]["harmonized"]["kappa"] == 1.0
    assert blocks["all"]["methods"]["raw"]["kappa"] < 0.95
    # regional SUVR rides along unchanged
    assert blocks["all"]["methods"]["harmonized"]["mean_abs_pct"] == (2.0, 2.0, 2.0)
    assert set(blocks["all"]["per_setup"]) == {"setup-A", "setup-B", "setup-C"}


def test_targets_from_the_per_site_summary():
    rows = cons.targets(cons.summarise_sites(_cases()))
    assert len(rows) == 4
    by_start = {r["target"][:20]: r["met"] for r in rows}
    # overall harmonized |dCL| (1 + 1 + 8) / 3 = 3.3 <= 4.1; site C 8 > 5; kappa 1; C worse
    assert by_start["mean |dCL| overall <"] is True
    assert by_start["mean |dCL| <= 5 CL a"] is False
    assert by_start["amyloid status kappa"] is True
    assert by_start["no site worse than r"] is False


def test_no_worse_needs_a_paired_interval():
    assert cons.no_worse({"paired": {}})["not_worse"] is None


def test_report_names_the_model_recipe_and_its_guard(tmp_path):
    """The report says how many steps the model trained and where its guard switched the
    correction off, read from the model card."""
    import json

    stage = {"epochs": 8, "steps_per_epoch": 110, "batch_size": 8}
    card = {"config": {"stage1": stage, "stage2": stage, "stage3": {**stage, "epochs": 10}},
            "guard": {"by_setup": {"zte": {"k": 0.25}, "dixon-nobone": {"k": "inf"}}}}
    (tmp_path / "model.json").write_text(json.dumps(card))
    recipe = cons.model_recipe(tmp_path)
    assert recipe == {"steps_per_epoch": [110, 110, 110], "epochs": [8, 8, 10],
                      "guard_k": {"dixon-nobone": "inf", "zte": "0.25"}}
    blocks = cons.summarise_sites(_cases())
    meta = {"date": "2026-12-04", "consortium": "paper", "train_subjects": 36,
            "test_subjects": 60, "tracers": "PiB", "common_resolution": "8 mm",
            "train_steps_scale": 1.0, "machine": "2 CPU cores", "model": recipe,
            "timings": {}}
    text = cons.markdown(blocks, cons.targets(blocks), meta)
    assert "8/8/10 epochs of 110/110/110 steps" in text
    assert "dixon-nobone inf, zte 0.25" in text


@pytest.mark.parametrize("module", ["end_to_end", "consortium"])
def test_doctests(module):
    failed, _ = doctest.testmod(sys.modules[module], optionflags=doctest.ELLIPSIS)
    assert failed == 0
