"""The attenuation-correction setup table, inference from metadata, the μ-map convention."""

from __future__ import annotations

from importlib import resources

import pytest

from bids_harmonize.acsetups import (
    ACSetupError,
    get_setup,
    infer_ac_setup,
    load_setups,
    mumap_path,
    read_setups,
    scanner_setups,
)


def _table_text() -> str:
    return resources.files("bids_harmonize.data").joinpath("acsetups.tsv").read_text()


def test_table_has_the_contract_names_and_every_number_has_a_source():
    table = load_setups()
    assert {"ct", "dixon-nobone", "dixon-bone", "zte", "atlas"} <= set(table)
    for setup in table.values():
        for key in setup.params:
            assert setup.sources[key], f"{setup.name}.{key} has no source"
        if setup.platform == "PET-MR":
            assert setup.model and setup.software_versions and setup.ac_text
            assert setup.name in scanner_setups(setup.model)
    assert table["dixon-nobone"].bone_model == "none"
    assert table["dixon-bone"].get("mu_bone") > table["dixon-bone"].get("mu_soft")


@pytest.mark.parametrize(("setup", "key", "value", "message"), [
    ("dixon-bone", "mu_bone", "-0.1", "negative"),
    ("dixon-bone", "mu_bone", "0.09", "not above mu_soft"),
    ("zte", "mu_soft", "", "missing value for 'mu_soft'"),
    ("atlas", "mu_bone", "0.9", "not physical"),
    ("dixon-nobone", "fat_water_swap_probability", "1.5", "above 1"),
    ("zte", "bone_calibration_sd", "abc", "not a number"),
])
def test_bad_rows_name_the_setup_and_key(tmp_path, setup, key, value, message):
    lines = _table_text().splitlines()
    out = [lines[0]]
    found = False
    for line in lines[1:]:
        cols = line.split("\t")
        if cols[0] == setup and cols[1] == key:
            cols[2] = value
            found = True
        out.append("\t".join(cols))
    assert found
    path = tmp_path / "acsetups.tsv"
    path.write_text("\n".join(out) + "\n")
    with pytest.raises(ACSetupError) as err:
        read_setups(path)
    text = str(err.value)
    assert str(path) in text and setup in text and message in text
    assert "\n" not in text


def test_missing_required_row_is_an_error(tmp_path):
    lines = [ln for ln in _table_text().splitlines()
             if not ln.startswith("dixon-nobone\tmu_fat\t")]
    path = tmp_path / "acsetups.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ACSetupError, match="dixon-nobone.*mu_fat"):
        read_setups(path)


def test_unknown_setup_name():
    with pytest.raises(ValueError, match="unknown attenuation-correction setup 'ute2'"):
        get_setup("ute2")


@pytest.mark.parametrize(("model", "version", "text", "expected"), [
    ("Biograph mMR", "syngo MR B20P", "MR-based Dixon", "dixon-nobone"),
    ("Biograph mMR", "syngo MR E11", "MR-based Dixon", "dixon-bone"),
    ("Biograph mMR", ["syngo MR E11"], None, "dixon-bone"),
    ("mMR", "syngo MR B20P", "Dixon with model-based bone", "dixon-bone"),
    ("SIGNA PET/MR", "MP26", "ZTE bone and air", "zte"),
    ("SIGNA PET/MR", "MP24", "MR-based", "atlas"),
    ("SIGNA PET/MR", "MP26", "head atlas", "atlas"),
    ("Biograph Vision", None, "MR-based Dixon", "ct"),
    ("Unknown", None, "ZTE", "zte"),
    ("Unknown", None, "CT-based", "ct"),
    ("Biograph mMR", None, "MR-based Dixon", "dixon-nobone"),
    ("SIGNA PET/MR", None, "MR-based", None),
    ("Unknown", None, None, None),
])
def test_infer_ac_setup(model, version, text, expected):
    name, how = infer_ac_setup(model, version, text)
    assert name == expected
    assert how


def test_every_synth_setup_is_inferred_from_what_the_simulator_writes():
    for setup in load_setups().values():
        if setup.platform != "PET-MR":
            continue
        name, _ = infer_ac_setup(setup.model, setup.software_versions[-1], setup.ac_text)
        assert name == setup.name


def test_mumap_path_keeps_entities():
    p = mumap_path("/d/sub-01/ses-mr/pet/sub-01_ses-mr_trc-FDG_run-2_pet.nii.gz")
    assert str(p) == "/d/sub-01/ses-mr/pet/sub-01_ses-mr_trc-FDG_run-2_mumap.nii.gz"
    with pytest.raises(ValueError, match="not a PET series"):
        mumap_path("/d/sub-01/anat/sub-01_T1w.nii.gz")
