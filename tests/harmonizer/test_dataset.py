import json

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.harmonizer.dataset import InsufficientDataError, load_pairs_from_derivatives


def _img(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2, 2, 2, 1])).to_filename(path)


def _pet(root, sub, ses, trc, platform, model):
    name = f"sub-{sub}_ses-{ses}_trc-{trc}_space-T1w_desc-preproc_pet.nii.gz"
    path = root / f"sub-{sub}" / f"ses-{ses}" / "pet" / name
    _img(path, np.ones((4, 4, 4)))
    side = path.with_name(path.name.replace(".nii.gz", ".json"))
    side.write_text(json.dumps({"TracerName": trc, "Platform": platform, "ManufacturersModelName": model}))


def _subject(root, sub, *, ct=True, mr=True, tracer="PiB"):
    _img(root / f"sub-{sub}/anat/sub-{sub}_desc-preproc_T1w.nii.gz", np.ones((4, 4, 4)))
    _img(root / f"sub-{sub}/anat/sub-{sub}_desc-brain_mask.nii.gz", np.ones((4, 4, 4)))
    if ct:
        _img(
            root / f"sub-{sub}/ses-petct/anat/sub-{sub}_ses-petct_space-T1w_desc-preproc_CT.nii.gz",
            np.zeros((4, 4, 4)),
        )
    _pet(root, sub, "petct", tracer, "PET-CT", "Biograph Vision")
    if mr:
        _pet(root, sub, "petmr", tracer, "PET-MR", "Biograph mMR")


def test_pairs_and_exclusions(tmp_path):
    _subject(tmp_path, "01")
    _subject(tmp_path, "02", tracer="FDG")
    _subject(tmp_path, "03", mr=False)
    _subject(tmp_path, "04", ct=False)
    pairs, excluded = load_pairs_from_derivatives(tmp_path)
    assert [(p.subject, p.tracer) for p in pairs] == [("01", "PiB"), ("02", "FDG")]
    assert pairs[0].petmr_model == "Biograph mMR"
    assert pairs[0].load()["t1w"].shape == (4, 4, 4)
    reasons = dict(excluded)
    assert "no PET-MR session" in reasons["sub-03_trc-PiB"]
    assert "no CT" in reasons["sub-04_trc-PiB"]
    pairs, _ = load_pairs_from_derivatives(tmp_path, participant_labels=["sub-02"])
    assert [p.subject for p in pairs] == ["02"]
    pairs, _ = load_pairs_from_derivatives(tmp_path, tracers=["pib"])
    assert [p.subject for p in pairs] == ["01"]


def test_insufficient_data_message(tmp_path):
    _subject(tmp_path, "01")
    _subject(tmp_path, "03", mr=False)
    with pytest.raises(InsufficientDataError) as err:
        load_pairs_from_derivatives(tmp_path, min_pairs=5)
    message = str(err.value)
    assert "found 1 usable" in message and "at least 5" in message
    assert "sub-03_trc-PiB: no PET-MR session" in message
    with pytest.raises(InsufficientDataError, match="does not exist"):
        load_pairs_from_derivatives(tmp_path / "missing")
