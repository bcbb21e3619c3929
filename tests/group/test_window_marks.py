"""Group tables mark the pairs whose PET-CT and PET-MR uptake windows differ."""

import json

import pandas as pd

from bids_harmonize.group.run import run_group


def write_image(out, sub, ses, trc, platform, desc, measures, suvr, seg="synth"):
    """A participant's sidecar and tables, as the participant level names them."""
    pet = out / f"sub-{sub}" / f"ses-{ses}" / "pet"
    pet.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_ses-{ses}_trc-{trc}"
    (pet / f"{stem}_space-T1w_desc-preproc_pet.json").write_text(
        json.dumps({"Platform": platform, "TracerName": trc}))
    pd.DataFrame({"measure": list(measures), "value": list(measures.values()),
                  "units": ["CL" if k == "centiloid" else "unitless" for k in measures],
                  "reference": "whole_cerebellum", "description": "test"}).to_csv(
        pet / f"{stem}_seg-{seg}_desc-{desc}_measures.tsv", sep="\t", index=False)
    pd.DataFrame({"region": [*suvr, "whole_cerebellum"], "kind": "region",
                  "suvr": [*suvr.values(), 1.0]}).to_csv(
        pet / f"{stem}_seg-{seg}_desc-{desc}_suvr.tsv", sep="\t", index=False)


def test_pairs_with_different_windows_are_marked(tmp_path, caplog):
    windows = {"01": ([90, 110], [90, 110]), "02": ([90, 110], [130, 150]), "03": (None, None)}
    for sub, (ct, mr) in windows.items():
        for ses, platform, window in (("petct", "PET-CT", ct), ("petmr", "PET-MR", mr)):
            write_image(tmp_path, sub, ses, "florbetaben", platform, "preproc",
                        {"suvr_cortical": 1.4, "centiloid": 40.0}, {"frontal_cortex": 1.4})
            side = (tmp_path / f"sub-{sub}" / f"ses-{ses}" / "pet" /
                    f"sub-{sub}_ses-{ses}_trc-florbetaben_space-T1w_desc-preproc_pet.json")
            meta = json.loads(side.read_text())
            if window is not None:
                meta["TimeWindow"] = window
            side.write_text(json.dumps(meta))
    written = run_group(tmp_path)
    pairs = pd.read_csv(written["pairs"], sep="\t", dtype={"subject": str})
    one = pairs.loc[pairs["measure"] == "centiloid"].set_index("subject")
    assert one.loc["01", "windows_differ"] == 0
    assert one.loc["02", "windows_differ"] == 1
    assert (one.loc["02", "window_petct"], one.loc["02", "window_petmr"]) == ("90-110",
                                                                              "130-150")
    assert pd.isna(one.loc["03", "windows_differ"]) and pd.isna(one.loc["03", "window_petct"])
    assert "sub-02 florbetaben" in caplog.text
    sidecar = json.loads(written["pairs"].with_suffix(".json").read_text())
    assert "windows_differ" in sidecar
