"""The tracer table: sources for every constant, FP-CIT vs SPECT, user tables, unknown tracers."""

import pytest
import yaml

from bids_harmonize import tracers
from bids_harmonize.tracers import (
    NotPetError,
    TracerTableError,
    UnknownTracerError,
    check_pet_metadata,
    get_tracer,
    load_tracer_file,
    resolve_tracer,
    tracer_table,
)


@pytest.fixture(autouse=True)
def _no_user_table(monkeypatch):
    monkeypatch.delenv(tracers.TRACER_FILE_ENV, raising=False)
    monkeypatch.delenv(tracers.RUNTIME_TRACERS_ENV, raising=False)


def test_every_constant_has_a_source():
    for name, tracer in tracer_table().items():
        for key in ("window_min", "reference", "half_life_min"):
            assert tracer.sources.get(key), f"{name}: {key} has no source"
        for eq_name, eq in tracer.centiloid_equations.items():
            assert eq["source"] and eq.get("pipeline"), f"{name}: centiloid {eq_name}"
        if tracer.cutoff:
            assert tracer.cutoff["source"], name
            if tracer.cutoff["value"] is None:
                assert tracer.cutoff["source"].startswith("none:"), name


def test_no_invented_cutoffs():
    table = tracer_table()
    # tau and DaT: no published value for these measures/references, so none is given
    for name in ("flortaucipir", "MK6240", "FPCIT"):
        assert table[name].cutoff["value"] is None, name
    # amyloid: one Centiloid cut-off with its neuropathology source
    for tracer in table.values():
        if tracer.family == "amyloid":
            assert tracer.cutoff == {"measure": "centiloid", "value": 20.1,
                                     "source": tracer.cutoff["source"]}
            assert "Amadoru" in tracer.cutoff["source"]


def test_half_lives_match_the_radionuclide_table():
    for tracer in tracer_table().values():
        assert tracer.half_life_min == tracers.half_life_of(tracer.radionuclide)


def test_florbetapir_default_is_the_standard_method():
    fbp = get_tracer("florbetapir")
    assert list(fbp.centiloid_equations) == ["standard", "avid", "spm12_refit"]
    assert (fbp.centiloid["slope"], fbp.centiloid["intercept"]) == (175.4, -182.3)
    with pytest.raises(tracers.TracerError, match="has no Centiloid equation 'berkeley'"):
        fbp.centiloid_from_suvr(1.2, "berkeley")


@pytest.mark.parametrize("name", ["FP-CIT", "fp_cit"])
def test_fpcit_alias_is_not_matched_silently(name):
    with pytest.raises(UnknownTracerError, match="ambiguous.*SPECT.*TracerRadionuclide"):
        get_tracer(name)
    assert get_tracer(name, radionuclide="F18").name == "FPCIT"
    assert get_tracer("[18F]FP-CIT").name == "FPCIT"


@pytest.mark.parametrize("name", ["DaTSCAN", "ioflupane", "[123I]FP-CIT"])
def test_spect_tracer_names_are_refused(name):
    with pytest.raises(NotPetError, match="SPECT tracer; bids_harmonize processes PET only"):
        get_tracer(name)


def test_dataset_label_fpcit_needs_the_radionuclide():
    meta = {"TracerName": "FP-CIT"}
    with pytest.raises(UnknownTracerError, match="ambiguous"):
        resolve_tracer("FPCIT", "FP-CIT", meta)
    assert resolve_tracer("FPCIT", None, {**meta, "TracerRadionuclide": "F18"}).name == "FPCIT"
    with pytest.raises(NotPetError, match="I123 is a SPECT radionuclide"):
        resolve_tracer("FPCIT", None, {"TracerRadionuclide": "I123"})


@pytest.mark.parametrize("meta", [{"Modality": "NM"}, {"ImagingModality": "SPECT"},
                                  {"TracerRadionuclide": "Tc99m"}])
def test_spect_sidecar_is_refused(meta):
    with pytest.raises(NotPetError, match="SPECT") as info:
        check_pet_metadata(meta)
    assert "\n" not in str(info.value)


def _write(tmp_path, data, name="tracers.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


GOOD = {"UCBJ": {"family": "fdg", "radionuclide": "C11", "half_life_min": 20.364,
                 "window_min": [60, 90], "reference": "whole_cerebellum",
                 "sources": {"window_min": "lab protocol"}, "aliases": ["UCB-J"]}}


def test_user_tracer_file(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD)
    monkeypatch.setenv(tracers.TRACER_FILE_ENV, str(path))
    ucbj = get_tracer("ucb-j")
    assert (ucbj.name, ucbj.window_min, ucbj.origin) == ("UCBJ", (60.0, 90.0), str(path))
    assert get_tracer("PiB").origin == "built-in"


@pytest.mark.parametrize(("data", "message"), [
    ("a: [1, 2", "not valid YAML at line"),
    ([1, 2], "expected a mapping of tracer labels"),
    ({"UCB-J": GOOD["UCBJ"]}, "not a BIDS label"),
    ({"X": {**GOOD["UCBJ"], "family": "synaptic"}}, "family must be one of"),
    ({"X": {k: v for k, v in GOOD["UCBJ"].items() if k != "reference"}}, "missing reference"),
    ({"X": {**GOOD["UCBJ"], "window_min": [90, 60]}}, "start must be >= 0 and before"),
    ({"X": {**GOOD["UCBJ"], "window_min": "60-90"}}, "window_min must be"),
    ({"X": {**GOOD["UCBJ"], "half_life_min": "20"}}, "half_life_min must be a finite"),
    ({"X": {**GOOD["UCBJ"], "half_life_min": -1}}, "must be positive"),
    ({"X": {**GOOD["UCBJ"], "radionuclide": "I123"}}, "SPECT radionuclide"),
    ({"X": {**GOOD["UCBJ"], "windows": [1, 2]}}, "unknown field"),
    ({"X": {**GOOD["UCBJ"], "aliases": ["FP-CIT"]}}, "also names a SPECT tracer"),
    ({"X": {**GOOD["UCBJ"], "cutoff": {"measure": "suvr", "value": 1.2}}}, "cutoff needs"),
    ({"X": {**GOOD["UCBJ"], "family": "amyloid",
            "centiloid": {"standard": {"slope": 1, "intercept": 0}}}}, "needs slope, intercept"),
    ({"X": {**GOOD["UCBJ"], "centiloid": {"s": {"slope": 1, "intercept": 0, "source": "x"}}}},
     "only amyloid tracers"),
])
def test_bad_tracer_file(tmp_path, data, message):
    path = _write(tmp_path, data, name=f"t{abs(hash(message))}.yaml")
    with pytest.raises(TracerTableError, match=message) as info:
        load_tracer_file(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_unreadable_tracer_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"X: {family: \xe9}")
    with pytest.raises(TracerTableError, match="not UTF-8"):
        load_tracer_file(path)
    with pytest.raises(TracerTableError, match="cannot read"):
        load_tracer_file(tmp_path / "missing.yaml")


def test_unknown_tracer_error_names_the_options():
    with pytest.raises(UnknownTracerError) as info:
        resolve_tracer("AZ10419369", None, {"TracerRadionuclide": "C11"})
    text = str(info.value)
    assert "--tracer-file" in text and "--uptake-window AZ10419369=START-END" in text


def test_unknown_tracer_runs_with_user_window_and_reference():
    meta = {"TracerRadionuclide": "C11"}
    tracer = resolve_tracer("AZ10419369", None, meta, windows={"AZ10419369": [20, 60]},
                            references={"AZ10419369": "cerebellar_grey"})
    assert tracer.family == "unknown" and not tracer.known
    assert (tracer.window_min, tracer.reference, tracer.half_life_min) == (
        (20.0, 60.0), "cerebellar_grey", 20.364)
    whole = resolve_tracer("DASB", None, meta, references={"DASB": None})
    assert whole.window_min is None and whole.reference is None
    # registered: found by name here and (through the environment) in worker processes
    assert get_tracer("AZ10419369").window_min == (20.0, 60.0)
    import json
    import os
    assert set(json.loads(os.environ[tracers.RUNTIME_TRACERS_ENV])) == {"AZ10419369", "DASB"}
    with pytest.raises(UnknownTracerError, match="not a known PET radionuclide"):
        resolve_tracer("PE2I", None, {"TracerRadionuclide": "Xx1"}, windows={"PE2I": [0, 10]})


def test_unknown_tracer_with_a_session_window_only():
    tracer = resolve_tracer("UCBJ", None, {"TracerRadionuclide": "C11"},
                            windows={"ses-b:UCBJ": [60, 90]})
    assert tracer.window_min is None  # the session's window is applied per session
    assert tracers.session_window({"ses-b:UCBJ": [60, 90]}, tracer, "b") == (60.0, 90.0)
    assert tracers.session_window({"ses-b:UCBJ": [60, 90]}, tracer, "a") is None


@pytest.mark.parametrize("name, expected", [
    ("[11C]PiB", "PiB"), ("11C-PiB", "PiB"), ("18F-AV45", "florbetapir"),
    ("[18F]AV-45", "florbetapir"), ("C-11 PiB", "PiB"), ("[18F] florbetaben", "florbetaben"),
    ("[18F]FP-CIT", "FPCIT")])
def test_free_text_tracer_names_resolve(name, expected):
    """TracerName is free text: a radionuclide written before a known name is understood."""
    assert get_tracer(name).name == expected
    assert tracers.names_tracer(name, get_tracer(expected))


def test_radionuclide_prefix_must_match_the_tracer():
    with pytest.raises(UnknownTracerError, match="'\\[11C\\]FDG=START-END'"):
        get_tracer("[11C]FDG")  # the message quotes what the shell would glob
    with pytest.raises(NotPetError, match="SPECT"):
        get_tracer("[123I]FP-CIT")
    # hyphenated names are names, not radionuclides
    assert tracers.split_radionuclide("MK-6240") == (None, "MK-6240")
    assert get_tracer("MK-6240").name == "MK6240"


@pytest.mark.parametrize("typed", ["AZ-10419369", "AZ10419369", "az-10419369", "[11C]AZ-10419369"])
def test_unknown_free_text_name_runs_as_typed(typed):
    """The name and the label stay apart: options may use either spelling."""
    meta = {"TracerRadionuclide": "C11"}
    tracer = resolve_tracer(None, "AZ-10419369", meta, windows={typed: [20, 60]},
                            references={typed: None})
    assert (tracer.name, tracer.label, tracer.window_min) == ("AZ-10419369", "AZ10419369",
                                                             (20.0, 60.0))
    assert get_tracer("AZ10419369") == get_tracer("AZ-10419369") == tracer
    # a trc- label with the same letters keeps the sidecar's spelling as the name
    both = resolve_tracer("AZ10419369", "AZ-10419369", meta, references={typed: None})
    assert both.name == "AZ-10419369"


def test_unknown_tracer_message_gives_the_name_to_type():
    with pytest.raises(UnknownTracerError) as info:
        resolve_tracer(None, "AZ-10419369", {"TracerRadionuclide": "C11"})
    assert "--uptake-window AZ-10419369=START-END" in str(info.value)
    with pytest.raises(UnknownTracerError, match="not usable"):
        tracers.unknown_tracer("--", "C11")


def test_fpcit_with_radionuclide_in_any_spelling():
    """The simulator writes TracerRadionuclide "18F": FPCIT must resolve with it (it was refused
    as ambiguous when only "F18" was compared), and a SPECT nuclide is still refused."""
    from bids_harmonize.tracers import NotPetError, resolve_tracer

    for nuclide in ("18F", "F18", "F-18", "[18F]"):
        meta = {"TracerName": "FPCIT", "TracerRadionuclide": nuclide}
        assert resolve_tracer("FPCIT", "FPCIT", meta).name == "FPCIT"
    with pytest.raises(NotPetError):
        resolve_tracer("FPCIT", "FPCIT", {"TracerName": "FPCIT", "TracerRadionuclide": "I123"})
