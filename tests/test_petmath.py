"""Units between sessions and frame selection: the pure functions of ``petmath``."""

import numpy as np
import pytest

from bids_harmonize.petmath import (
    FrameWindowError,
    body_weight,
    select_frames,
    uptake_scaling,
)

C11_HALF_LIFE_S = 20.364 * 60


def _session(dose_mbq, suv, weight_kg=None, decay_time_s=0.0):
    """Concentration (Bq/mL) of a region of true SUV ``suv`` after ``dose_mbq``."""
    meta = {"Units": "Bq/mL", "InjectedRadioactivity": dose_mbq,
            "InjectedRadioactivityUnits": "MBq", "ImageDecayCorrectionTime": decay_time_s,
            "_HalfLifeSeconds": C11_HALF_LIFE_S}
    dose_bq = dose_mbq * 1e6 * 0.5 ** (decay_time_s / C11_HALF_LIFE_S)
    concentration = suv * dose_bq / (70.0 * 1000.0)  # true weight 70 kg
    if weight_kg is not None:
        meta["BodyWeight"] = weight_kg
    return meta, concentration


@pytest.mark.parametrize("where", ["participants", "sessions", "sidecar", "none"])
def test_two_injections_compare_on_uptake_not_dose(tmp_path, where):
    """C-11 needs one injection per scan (416 vs 351 MBq): same uptake, different dose."""
    (tmp_path / "sub-01").mkdir()
    if where == "participants":
        (tmp_path / "participants.tsv").write_text(
            "\ufeffparticipant_id\tage\tweight\nsub-01\t70\t70\n", encoding="utf-8")
    if where == "sessions":
        (tmp_path / "sub-01" / "sub-01_sessions.tsv").write_text(
            "session_id\tweight\nses-petct\t70\nses-petmr\t70\n")
    values, units = {}, set()
    for session, dose, decay in (("petct", 416.0, 0.0), ("petmr", 351.0, 600.0)):
        meta, conc = _session(dose, suv=1.8, weight_kg=70 if where == "sidecar" else None,
                              decay_time_s=decay)
        kg, source = body_weight(tmp_path, "01", session, meta)
        assert source == {"participants": "participants.tsv", "sessions": "sessions.tsv",
                          "sidecar": "sidecar BodyWeight", "none": "none"}[where]
        factor, unit, how = uptake_scaling(meta, kg)
        values[session] = conc * factor
        units.add(unit)
        raw = values.setdefault(f"raw_{session}", conc)
        assert raw == conc
    assert units == ({"%ID/L"} if where == "none" else {"g/mL"})
    raw_diff = values["raw_petmr"] / values["raw_petct"] - 1
    assert abs(raw_diff) > 0.15  # raw Bq/mL differ by the dose (and decay)
    assert values["petmr"] == pytest.approx(values["petct"], rel=1e-6)
    if where != "none":
        assert values["petct"] == pytest.approx(1.8)


def test_unknown_dose_keeps_units_and_says_so():
    factor, units, how = uptake_scaling({"Units": "kBq/mL"}, 70)
    assert factor is None and units == "kBq/mL" and "not comparable" in how


@pytest.mark.parametrize("text", ["participant_id\tweight\nsub-01\tn/a\n",
                                  "participant_id\tweight\nsub-01\t-3\n",
                                  "participant_id\tsex\nsub-01\tF\n"])
def test_implausible_or_missing_weight(tmp_path, text):
    (tmp_path / "participants.tsv").write_text(text)
    assert body_weight(tmp_path, "01", None, {"BodyWeight": "heavy"}) == (None, "none")


def test_same_day_pair_nearest_policy():
    # florbetaben pair with one injection: PET-CT 90-110 min, PET-MR 130-150 min
    starts, durations = [7800, 8100, 8400, 8700], [300] * 4
    with pytest.raises(FrameWindowError, match="frames cover 0.0 of 20.0 min"):
        select_frames(starts, durations, (90, 110))
    sel = select_frames(starts, durations, (90, 110), policy="nearest")
    assert sel.moved and sel.window_min == (130.0, 150.0) and sel.requested_min == (90.0, 110.0)
    assert np.allclose(sel.weights, 0.25)
    assert "130-150" in sel.note
    # a window the frames cover is kept as is
    sel = select_frames(starts, durations, (130, 140), policy="nearest")
    assert not sel.moved and np.allclose(sel.weights, [0.5, 0.5, 0, 0])


def test_nearest_policy_partial_and_early_frames():
    # frames 40-60 min for a 50-70 window: coverage 10/20 is enough under both policies
    assert select_frames([2400, 3000], [600, 600], (50, 70)).window_min == (50.0, 70.0)
    # frames 0-30 min for a 50-70 window: the last 20 covered minutes
    sel = select_frames([0, 600, 1200], [600] * 3, (50, 70), policy="nearest")
    assert sel.window_min == (10.0, 30.0)
    # a series shorter than the window: all of it
    sel = select_frames([0], [600], (50, 70), policy="nearest")
    assert sel.window_min == (0.0, 10.0) and sel.weights.tolist() == [1.0]


def test_no_window_averages_every_frame():
    sel = select_frames([0, 300, 900], [300, 600, 900], None)
    assert sel.window_min is None and np.allclose(sel.weights, [1 / 6, 2 / 6, 3 / 6])
