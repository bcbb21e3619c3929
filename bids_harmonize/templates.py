"""Output templates from TemplateFlow's local cache, never from the network.

:func:`get_template` finds a template's T1w, brain mask and tissue maps in
``TEMPLATEFLOW_HOME`` and raises :class:`TemplateNotFoundError` (naming the
template and the command that pre-fetches it) when they are not there.

:func:`build_nilearn_template` writes ``tpl-MNI152NLin2009aSym`` into a
TemplateFlow home from the MNI152 2009a files that nilearn ships, so that the
tests, the demo and a container built without network have a template.
``bids_harmonize-templates DIR`` runs it from the shell.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from bids_harmonize.safeio import atomic_write_json

NILEARN_TEMPLATE = "MNI152NLin2009aSym"


class TemplateNotFoundError(RuntimeError):
    """A template is not in the local TemplateFlow cache."""


@dataclass(frozen=True)
class TemplateFiles:
    """The files of one template at one resolution."""

    name: str
    t1w: Path
    brain_mask: Path
    probseg: dict[str, Path]


def templateflow_home() -> Path:
    """``$TEMPLATEFLOW_HOME``, or TemplateFlow's own default."""
    default = Path.home() / ".cache" / "templateflow"
    return Path(os.environ.get("TEMPLATEFLOW_HOME", default)).expanduser()


def _find(folder: Path, name: str, resolution: int, suffix: str, **entities) -> Path | None:
    extra = "".join(f"_{k}-{v}" for k, v in entities.items())
    for res in (f"{resolution:02d}", str(resolution)):
        path = folder / f"tpl-{name}_res-{res}{extra}_{suffix}.nii.gz"
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def get_template(name: str, resolution: int = 2) -> TemplateFiles:
    """T1w, brain mask and GM/WM/CSF maps of a template from the local cache."""
    home = templateflow_home()
    folder = home / f"tpl-{name}"
    t1w = _find(folder, name, resolution, "T1w")
    mask = _find(folder, name, resolution, "mask", desc="brain")
    probseg = {
        tissue: _find(folder, name, resolution, "probseg", label=tissue)
        for tissue in ("GM", "WM", "CSF")
    }
    missing = [what for what, p in [("T1w", t1w), ("brain mask", mask), *probseg.items()] if p is None]
    if missing:
        offline = f"offline: run 'bids_harmonize-templates {home}'"
        hint = f"{offline} (builds it from nilearn's files)" if name == NILEARN_TEMPLATE else (
            f"{offline} and use --output-spaces {NILEARN_TEMPLATE} T1w; or, with network, "
            f"python -c \"import templateflow.api as tf; tf.get('{name}', "
            f"resolution={resolution})\" with TEMPLATEFLOW_HOME set to that folder"
        )
        raise TemplateNotFoundError(
            f"template {name} (res-{resolution:02d}) is not in the TemplateFlow cache at {home} "
            f"(missing: {', '.join(missing)}); {hint}"
        )
    return TemplateFiles(name, t1w, mask, probseg)


def build_nilearn_template(home: Path | None = None) -> Path:
    """Write ``tpl-MNI152NLin2009aSym`` (res-02) from nilearn's packaged MNI152 2009a files."""
    import nibabel as nb
    import numpy as np
    from nilearn import datasets

    home = Path(home) if home else templateflow_home()
    folder = home / f"tpl-{NILEARN_TEMPLATE}"
    folder.mkdir(parents=True, exist_ok=True)
    t1w = datasets.load_mni152_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    affine = t1w.affine
    gm_data = np.clip(gm.get_fdata(), 0, 1)
    wm_data = np.clip(wm.get_fdata(), 0, 1)
    mask_data = mask.get_fdata() > 0.5
    csf_data = np.clip(mask_data - gm_data - wm_data, 0, 1) * mask_data

    def save(data, dtype, stem):
        img = nb.Nifti1Image(np.asarray(data, dtype=dtype), affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, 4)
        img.set_sform(affine, 4)
        path = folder / f"tpl-{NILEARN_TEMPLATE}_res-02_{stem}.nii.gz"
        nb.save(img, path)
        return path

    save(t1w.get_fdata(), np.float32, "T1w")
    save(mask_data, np.uint8, "desc-brain_mask")
    for label, data in (("GM", gm_data), ("WM", wm_data), ("CSF", csf_data)):
        save(data, np.float32, f"label-{label}_probseg")
    description = {
        "Name": "ICBM 2009a Nonlinear Symmetric (from nilearn's packaged copy)",
        "Identifier": NILEARN_TEMPLATE,
        "Authors": ["Fonov V", "Evans AC", "McKinstry RC", "Almli CR", "Collins DL"],
        "Acknowledgements": "Built offline by bids_harmonize from the files nilearn ships; "
        "the T1w is brain-extracted (nilearn's copy has no skull).",
        "BIDSVersion": "1.1.0",
        "HowToAcknowledge": "Cite Fonov et al. 2009 and 2011.",
        "License": "See the ICBM 2009 licence shipped with nilearn.",
        "ReferencesAndLinks": ["https://doi.org/10.1016/S1053-8119(09)70884-5"],
        "TemplateFlowVersion": "1.0.0",
        "res": {"02": {"origin": [float(v) for v in affine[:3, 3]], "shape": list(t1w.shape),
                       "zooms": [2.0, 2.0, 2.0]}},
    }
    atomic_write_json(folder / "template_description.json", description)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``bids_harmonize-templates [DIR]``: build the offline template into a TemplateFlow home."""
    parser = argparse.ArgumentParser(
        prog="bids_harmonize-templates",
        description=f"Write tpl-{NILEARN_TEMPLATE} from nilearn's packaged MNI152 2009a files "
        "into a TemplateFlow home (no network needed).",
    )
    parser.add_argument("home", nargs="?", type=Path, help="TemplateFlow home (default: $TEMPLATEFLOW_HOME)")
    args = parser.parse_args(argv)
    folder = build_nilearn_template(args.home)
    print(f"wrote {folder}")
    return 0
