"""The do-no-harm guard: chosen on held-out pairs, applied per attenuation-correction setup."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from bids_harmonize.harmonizer import guard
from bids_harmonize.harmonizer import uncertainty as unc
from bids_harmonize.harmonizer.weights import load_model


def _guarded(model, pair, card_guard, setup=None):
    model = copy.copy(model)
    model.card = {**model.card, "guard": card_guard}
    a = pair.load()
    result, sd, members, _ = unc.harmonize_with_assessment(
        a["pet_mr"], a["t1w"], a["brain_mask"], model, tracer="PiB", ac_setup=setup, device="cpu")
    return a, result, sd, members


def _entry(k):
    return {"k": k, "n_pairs": 3, "error_as_acquired": 0.03, "error_full_correction": 0.02,
            "error_guarded": 0.02}


def test_card_guard_is_the_best_of_its_grid_on_the_held_out_pairs(ensemble_dir):
    block = json.loads((ensemble_dir / "model.json").read_text())["guard"]
    pooled = block["pooled"]
    assert pooled["n_pairs"] == 2 and block["grid"][0] == 0.0 and block["grid"][-1] == "inf"
    errors = pooled["error_by_k"]
    assert set(errors) == {str(guard.k_to_json(k)) for k in guard.K_GRID}
    # the chosen strength has the smallest held-out error of the grid: never above the
    # image as acquired, nor above the full correction (same rounding on both sides)
    assert pooled["error_guarded"] == min(errors.values())
    assert errors[str(pooled["k"])] == pooled["error_guarded"]
    assert pooled["error_guarded"] <= pooled["error_as_acquired"]
    assert pooled["error_guarded"] <= pooled["error_full_correction"]
    assert pooled["subjects"] and not block["by_setup"].keys() - {"unknown"}


def test_no_correction_strength_writes_the_pet_as_acquired(ensemble_dir, phantom_pairs):
    model = load_model(ensemble_dir)
    a, result, sd, members = _guarded(model, phantom_pairs[0],
                                      {"pooled": _entry(0.0), "by_setup": {"atlas": _entry("inf")}},
                                      setup="atlas")
    np.testing.assert_array_equal(result.harmonized, a["pet_mr"].astype(np.float32))
    assert not result.log_ratio.any()
    assert result.guard["K"] == "inf" and result.guard["Source"] == "setup atlas"
    assert "left as acquired" in result.notes[-1]
    # the members keep their spread around the applied (zero) correction: the uncertainty
    # is still reported, and member 0 is the written image
    brain = a["brain_mask"] > 0.5
    assert float(np.median(sd[brain])) > 0
    np.testing.assert_array_equal(members[0], result.harmonized)
    assert float(np.abs(members[1] - members[0])[brain].max()) > 0


def test_full_strength_is_the_model_as_trained(ensemble_dir, phantom_pairs):
    model = load_model(ensemble_dir)
    _, plain, _, _ = _guarded(model, phantom_pairs[0], {})
    _, full, _, _ = _guarded(model, phantom_pairs[0], {"pooled": _entry(0.0), "by_setup": {}},
                             setup="zte")
    assert plain.guard is None and full.guard["Source"] == "pooled"
    np.testing.assert_array_equal(full.harmonized, plain.harmonized)


def test_stronger_guard_keeps_less_of_the_correction(ensemble_dir, phantom_pairs):
    model = load_model(ensemble_dir)
    a, plain, _, _ = _guarded(model, phantom_pairs[1], {})
    brain = a["brain_mask"] > 0.5
    kept = []
    for k in (0.5, 2.0, 8.0):
        _, res, _, _ = _guarded(model, phantom_pairs[1], {"pooled": _entry(k), "by_setup": {}})
        # shrinkage only: same sign, never larger than the correction as trained
        assert np.all(np.abs(res.log_ratio) <= np.abs(plain.log_ratio) + 1e-7)
        assert np.all(res.log_ratio * plain.log_ratio >= 0)
        kept.append(float(np.abs(res.log_ratio)[brain].sum()))
    assert kept[0] > kept[1] > kept[2] > 0


def test_choice_prefers_the_cautious_strength_on_ties():
    errors = {0.0: [0.02, 0.02], 1.0: [0.01, 0.03], math.inf: [0.03, 0.01]}
    assert guard.choose_k(errors) == math.inf
    with pytest.raises(ValueError, match="no held-out errors"):
        guard.choose_k({0.0: []})


def test_setups_with_too_few_pairs_get_the_pooled_strength():
    rows = [("zte", "amyloid", "01", {0.0: 0.01, math.inf: 0.03}, None),
            ("zte", "amyloid", "02", {0.0: 0.01, math.inf: 0.03}, None),
            ("zte", "fdg", "02", {0.0: 0.05, math.inf: 0.03}, None),
            ("atlas", "amyloid", "03", {0.0: 0.19, math.inf: 0.01}, None)]
    block = guard.fit_guard(rows, grid=(0.0, math.inf))
    assert list(block["by_setup"]) == ["zte"] and list(block["by_setup_family"]) == ["zte/amyloid"]
    # zte pooled over families: k=0 -> 0.0233, none -> 0.03: corrected
    assert block["by_setup"]["zte"]["k"] == 0.0 and block["by_setup"]["zte"]["n_pairs"] == 3
    # all pooled: k=0 -> 0.065, none -> 0.025: "no correction"
    assert block["pooled"]["k"] == "inf" and block["pooled"]["n_pairs"] == 4
    card = {"guard": block}
    assert guard.guard_for(card, "atlas", "amyloid").source == "pooled"
    assert guard.guard_for(card, "zte", "amyloid").source == "setup zte, tracer family amyloid"
    assert guard.guard_for(card, "zte", "fdg").source == "setup zte"
    with pytest.raises(ValueError, match="must hold 0"):
        guard.fit_guard(rows, grid=(0.0, 1.0))
    with pytest.raises(ValueError, match=">= 0 or 'inf'"):
        guard.k_from_json(-1)


def test_summary_target_is_never_made_worse_on_the_held_out_pairs():
    """The full correction wins on the regional error but moves the summary target (the
    Centiloid cortex) away from PET-CT: a weaker strength that keeps the target is chosen."""
    rows = [("dixon-nobone", "amyloid", s, {0.0: 0.030, 1.0: 0.035, math.inf: 0.041},
             {0.0: 0.030, 1.0: 0.008, math.inf: 0.010}) for s in ("13", "14")]
    entry = guard.fit_guard(rows, grid=(0.0, 1.0, math.inf))["by_setup_family"]["dixon-nobone/amyloid"]
    assert entry["k"] == 1.0
    assert entry["summary_error_guarded"] <= entry["summary_error_as_acquired"]
    assert entry["error_guarded"] < entry["error_as_acquired"]
    # without the summary errors, the full correction would have been chosen
    plain = [r[:4] for r in rows]
    assert guard.fit_guard(plain, grid=(0.0, 1.0, math.inf))["by_setup"]["dixon-nobone"]["k"] == 0.0
