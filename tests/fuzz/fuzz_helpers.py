"""Helpers shared by the fuzz tests (constants, file replacement, argument lists)."""

from __future__ import annotations

from pathlib import Path

PET_MR = "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet"
T1W = "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"


def replace(path: Path, data: bytes | str) -> Path:
    """Write a file of the copied dataset without touching the shared original."""
    path.unlink(missing_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def fast_args(bids: Path, out: Path, *extra) -> list:
    """A participant run that fails (or passes) its pre-flight in seconds."""
    return [bids, out, "participant", "--skip-bids-validation", "--no-harmonization",
            "--output-spaces", "MNI152NLin2009aSym", "T1w", *extra]


def error_line(err: str) -> str:
    """The one error line; asserts there is exactly one."""
    lines = [line for line in err.splitlines() if line.startswith("bids_harmonize: error:")]
    assert len(lines) == 1, err
    return lines[0]


def pet_mr_sidecar(bids: Path) -> dict:
    """The PET-MR sidecar of sub-01 as a dict."""
    import json

    return json.loads((bids / f"{PET_MR}.json").read_text())


def with_pet_mr_sidecar(bids: Path, **changes) -> Path:
    """Rewrite sub-01's PET-MR sidecar with ``changes`` applied."""
    import json

    meta = pet_mr_sidecar(bids)
    meta.update(changes)
    return replace(bids / f"{PET_MR}.json", json.dumps(meta))
