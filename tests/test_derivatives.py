"""The one derivatives contract (``data/io_spec.json``): names round-trip, sinks write them."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize import derivatives as drv
from bids_harmonize.workflows.outputs import spec_sink

#: Names the participant level wrote before the specification existed (the committed demo
#: manifest, workflows/container/demo-manifest.txt): they must not change.
LEGACY = {
    "sub-01/anat/sub-01_desc-brain_mask.nii.gz": "brain_mask",
    "sub-01/anat/sub-01_desc-preproc_T1w.json": "t1w_preproc",
    "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz": "t1w_preproc",
    "sub-01/anat/sub-01_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.h5": "tpl2t1w_xfm",
    "sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5": "t1w2tpl_xfm",
    "sub-01/anat/sub-01_label-CSF_probseg.nii.gz": "probseg",
    "sub-01/figures/sub-01_desc-template_T1w.svg": "figure_template",
    "sub-01/figures/sub-01_ses-petct_desc-ct2t1w_CT.svg": "figure_ct",
    "sub-01/figures/sub-01_ses-petct_trc-PiB_desc-pet2t1w_pet.svg": "figure_pet",
    "sub-01/figures/sub-01_ses-petct_trc-PiB_desc-window_pet.svg": "figure_window",
    "sub-01/figures/sub-01_ses-petmr_trc-PiB_desc-harmonization_pet.svg": "figure_harmonization",
    "sub-01/ses-petct/anat/sub-01_ses-petct_space-T1w_desc-preproc_CT.nii.gz": "ct_preproc",
    "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_seg-synth_desc-preproc_measures.json":
        "measures",
    "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_seg-synth_desc-preproc_suvr.tsv": "suvr",
    "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_space-MNI152NLin2009aSym_desc-preproc_pet"
    ".nii.gz": "pet_preproc",
    "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_space-T1w_desc-harmonized_pet.json":
        "pet_harmonized",
    "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_space-T1w_desc-pseudo_CT.nii.gz": "pseudo_ct",
    "sub-01.html": "report",
}

#: Example entities of each kind, with the entities that tripped the old readers (run, rec).
PET = {"subject": "01", "session": "petmr", "tracer": "PiB", "reconstruction": "OSEM",
       "run": "2"}
EXAMPLES = {
    "t1w_preproc": {"subject": "01", "run": "1"},
    "brain_mask": {"subject": "01"},
    "probseg": {"subject": "01", "label": "GM"},
    "t1w2tpl_xfm": {"subject": "01", "to": "MNI152NLin2009aSym"},
    "tpl2t1w_xfm": {"subject": "01", "from": "MNI152NLin2009aSym"},
    "ct_preproc": {"subject": "01", "session": "petct", "acquisition": "lowdose"},
    "pet_preproc": {**PET, "space": "T1w"},
    "pet_harmonized": {**PET, "space": "MNI152NLin2009aSym"},
    "pseudo_ct": PET,
    "pet_uncertainty": PET,
    "suvr": {**PET, "seg": "synth", "desc": "harmonized"},
    "measures": {**PET, "seg": "centiloid", "desc": "preproc"},
    "figure_template": {"subject": "01"},
    "figure_ct": {"subject": "01", "session": "petct"},
    "figure_pet": PET,
    "figure_window": PET,
    "figure_harmonization": PET,
    "figure_vspetct": PET,
    "figure_regionbias": PET,
    "figure_correction": PET,
    "report": {"subject": "01"},
}


def test_every_kind_has_an_example():
    assert set(EXAMPLES) == set(drv.kinds())


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_round_trip(kind, tmp_path):
    entities = EXAMPLES[kind]
    spec = drv.kind_spec(kind)
    (tmp_path / "sub-01").mkdir()  # a subject is a sub-* folder (the report lies next to it)
    for ext in spec.get("extension", [None]):
        rel = drv.build_path(kind, extension=ext, **entities)
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        if "path" not in spec:
            parsed = drv.parse_name(path.name)
            assert drv.classify(parsed, spec["datatype"]) == kind
            fixed = {k: v for k, v in spec["entities"].items() if isinstance(v, str) and v != "*"}
            expected = {**entities, **fixed}
            if spec["scope"] == "subject":
                expected.pop("session", None)
            assert {k: v for k, v in parsed.items() if k not in ("suffix", "extension")} \
                == expected
        found = drv.collect_derivatives(tmp_path, kinds=[kind])
        assert [d.path for d in found] == [path]
        path.unlink()


@pytest.mark.parametrize("rel", sorted(LEGACY))
def test_legacy_names_unchanged(rel, tmp_path):
    """Every name written before the specification is read back and rebuilt byte for byte."""
    kind = LEGACY[rel]
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    (tmp_path / "sub-01").mkdir(exist_ok=True)
    (found,) = drv.collect_derivatives(tmp_path)
    assert found.kind == kind and found.path == path
    entities = {k: v for k, v in found.entities.items()
                if k not in ("suffix", "extension", "datatype")}
    extension = found.entities.get("extension")
    assert drv.build_path(kind, extension=extension, **entities) == rel


def test_collect_filters_and_foreign_files(tmp_path):
    names = ["sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_run-1_space-T1w_desc-preproc_pet.nii.gz",
             "sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_run-2_space-T1w_desc-preproc_pet.nii.gz",
             "sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_run-2_space-T1w_desc-other_pet.nii.gz",
             "sub-01/ses-a/pet/sub-01_ses-b_trc-PiB_space-T1w_desc-preproc_pet.nii.gz",
             "sub-01/ses-a/pet/notes.txt",
             "sub-02/anat/sub-02_desc-preproc_T1w.nii.gz"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    pets = drv.collect_derivatives(tmp_path, kinds=["pet_preproc"])
    assert [d.get("run") for d in pets] == ["1", "2"]  # wrong desc, wrong folder: ignored
    assert [d.series for d in pets] == [
        (("session", "a"), ("tracer", "PiB"), ("run", r)) for r in ("1", "2")]
    assert len(drv.collect_derivatives(tmp_path, run="2")) == 1
    assert [d.kind for d in drv.collect_derivatives(tmp_path, subject="sub-02")] == [
        "t1w_preproc"]
    with pytest.raises(drv.DerivativeNameError):
        drv.collect_derivatives(tmp_path, kinds=["nonsense"])


def test_metadata_errors_name_the_file(tmp_path):
    path = tmp_path / "sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_space-T1w_desc-preproc_pet.nii.gz"
    path.parent.mkdir(parents=True)
    path.write_text("")
    (found,) = drv.collect_derivatives(tmp_path)
    with pytest.raises(ValueError, match="preproc_pet.json"):
        found.metadata()
    found.sidecar.write_text(json.dumps({"Platform": "PET-MR"}))
    assert found.metadata() == {"Platform": "PET-MR"}
    found.sidecar.write_text("[1]")
    with pytest.raises(ValueError, match="not a JSON object"):
        found.metadata()


def _source(bids: Path, rel: str, ndim: int = 3) -> Path:
    path = bids / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (3, 3, 3) if ndim == 3 else (3, 3, 3, 2)
    nb.Nifti1Image(np.ones(shape, np.float32), np.eye(4)).to_filename(path)
    return path


SOURCES = {
    "subject": "sub-01/ses-petmr/anat/sub-01_ses-petmr_run-1_T1w.nii.gz",
    "session": "sub-01/ses-petct/anat/sub-01_ses-petct_acq-lowdose_CT.nii.gz",
    "pet": "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_rec-OSEM_run-2_pet.nii.gz",
}
IN_FILES = {".nii.gz": "img.nii.gz", ".json": "dict.json", ".tsv": "table.tsv",
            ".h5": "xfm.h5", ".svg": "fig.svg"}


@pytest.mark.parametrize("kind", [k for k in sorted(EXAMPLES) if k != "report"])
def test_sink_writes_the_declared_name(kind, tmp_path):
    """The DerivativesDataSink of each kind writes exactly :func:`build_path`'s name."""
    spec = drv.kind_spec(kind)
    source = _source(tmp_path / "bids", SOURCES[spec["scope"]])
    extension = next(e for e in spec["extension"] if e != ".json" or kind in ("suvr",
                                                                              "measures"))
    in_file = tmp_path / IN_FILES[extension]
    if extension == ".nii.gz":
        nb.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)).to_filename(in_file)
    else:
        in_file.write_text("x\n")
    entities = {k: v for k, v in EXAMPLES[kind].items()
                if k not in drv.parse_name(source.name) and k != "subject"}
    open_values = {k: v for k, v in entities.items() if k in spec["entities"]}
    out = tmp_path / "out"
    node = spec_sink(kind, "ds", out, source, extension=extension, **open_values)
    node.inputs.in_file = str(in_file)
    result = node.interface.run(cwd=str(tmp_path))
    written = Path(result.outputs.out_file).relative_to(out).as_posix()
    source_entities = {k: v for k, v in drv.parse_name(source.name).items()
                       if k not in ("suffix", "extension")}
    assert written == drv.build_path(kind, extension=extension,
                                     **{**source_entities, **open_values})


# --------------------------------------------------------------------------- every consumer

MR_SERIES = ({"run": "1"}, {"run": "2"}, {"reconstruction": "OSEM", "run": "1"})


def _nifti(path: Path, value: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((6, 6, 6), value, np.float32)
    data[1:5, 1:5, 1:5] *= 2
    nb.Nifti1Image(data, np.diag([2, 2, 2, 1])).to_filename(path)


def _tables(out: Path, entities: dict, desc: str, cl: float) -> None:
    for kind, text in (
        ("measures", "measure\tvalue\tunits\ncentiloid\t{cl}\tCL\nsuvr_cortical\t{s}\tunitless\n"),
        ("suvr", "region\tkind\tmean\treference_region\tsuvr\nwhole_cerebellum\tregion\t1.0\t"
                 "whole_cerebellum\t1.0\ncortical_composite\tcomposite\t{s}\twhole_cerebellum\t{s}\n"),
    ):
        path = out / drv.build_path(kind, seg="synth", desc=desc, **entities)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(cl=cl, s=cl / 100 + 1))


@pytest.fixture
def outputs(tmp_path):
    """A participant output tree: one PET-CT, and PET-MR run-1, run-2 and rec-OSEM_run-1."""
    out = tmp_path / "out"
    sub = {"subject": "01"}
    _nifti(out / drv.build_path("t1w_preproc", **sub))
    _nifti(out / drv.build_path("brain_mask", **sub))
    _nifti(out / drv.build_path("ct_preproc", session="petct", **sub), -1000)
    series = [({**sub, "session": "petct", "tracer": "PiB"}, "PET-CT")]
    series += [({**sub, "session": "petmr", "tracer": "PiB", **extra}, "PET-MR")
               for extra in MR_SERIES]
    for i, (ent, platform) in enumerate(series):
        descs = ["preproc"] + (["harmonized"] if platform == "PET-MR" else [])
        for desc in descs:
            path = out / drv.build_path(f"pet_{desc}", space="T1w", **ent)
            _nifti(path, 1.0 + i)
            path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(
                {"Platform": platform, "TracerName": "PiB", "ManufacturersModelName": "m"}))
            _tables(out, ent, desc, 10.0 * (i + 1))
        fig = out / drv.build_path("figure_window", **ent)
        fig.parent.mkdir(parents=True, exist_ok=True)
        fig.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return out


def test_every_consumer_finds_runs_and_reconstructions(outputs):
    from bids_harmonize.group.collect import collect_participant_tables
    from bids_harmonize.harmonizer.dataset import load_pairs_from_derivatives
    from bids_harmonize.quant.io import derivative_name
    from bids_harmonize.reports.subject import build_subject_report

    labels = {"ses-petmr_trc-PiB_run-1", "ses-petmr_trc-PiB_run-2",
              "ses-petmr_trc-PiB_rec-OSEM_run-1"}
    # group: every series is its own image, raw and harmonized
    col = collect_participant_tables(outputs, n_procs=1)
    assert not col.problems
    mr = col.images[col.images["platform"] == "PET-MR"]
    assert set(mr["series"]) == labels and len(mr) == 6
    # train: each PET-MR series pairs with the session's one PET-CT
    pairs, excluded = load_pairs_from_derivatives(outputs)
    assert not excluded
    assert {p.extra["petmr_series"] for p in pairs} == labels
    assert {Path(p.pet_ct).name for p in pairs} == {
        "sub-01_ses-petct_trc-PiB_space-T1w_desc-preproc_pet.nii.gz"}
    assert all(Path(p.ct_hu).name == "sub-01_ses-petct_space-T1w_desc-preproc_CT.nii.gz"
               for p in pairs)
    # report: a summary row per image, each series' figures
    html = build_subject_report(outputs, "01").read_text()
    for label in labels:
        assert f"sub-01_{label}_space-T1w_desc-preproc" in html
        assert f"sub-01_{label}_desc-window_pet.svg" in html
        assert f"sub-01_{label}_desc-vspetct_pet.svg" in html  # drawn per series
    # quantification: tables named after each series
    names = {derivative_name(f"sub-01_{label}_space-MNI_desc-preproc_pet.nii.gz", seg="synth",
                             desc="preproc", suffix="suvr") for label in labels}
    assert len(names) == 3 and all("_seg-synth_desc-preproc_suvr.tsv" in n for n in names)


def test_unreadable_folder_is_skipped_with_a_warning(tmp_path, caplog, monkeypatch):
    import os

    pet = tmp_path / "sub-01/ses-a/pet"
    pet.mkdir(parents=True)
    (pet / "sub-01_ses-a_trc-PiB_space-T1w_desc-preproc_pet.nii.gz").write_text("")
    scandir = os.scandir

    def denied(path):  # chmod 0 does not stop root, who runs CI containers
        if os.fspath(path) == str(pet):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    assert drv.collect_derivatives(tmp_path) == []
    assert "cannot list this folder (Permission denied)" in caplog.text
