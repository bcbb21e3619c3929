"""The PET-MR scanner's own mu-map of a PET series: discovery, checks, and the setup.

Discovery follows the convention of :mod:`bids_harmonize.acsetups` (``..._mumap.nii.gz``
next to the PET series, :func:`~bids_harmonize.acsetups.mumap_path`). Before the
harmonizer uses a mu-map it is checked (:func:`mumap_problems`):

- units: the sidecar's ``Units`` must be 1/cm, and the values those of attenuation at
  511 keV (none negative, none above :data:`MU_UNITS_MAX`): a CT in HU (-1000 ... 3000)
  or a map in 1/mm or scaled by 10,000 (as some vendors store it) fails;
- belongs to this PET: the sidecar's ``IntendedFor`` (when present) names this series;
- covers the PET: every PET voxel with signal lies inside the mu-map's field of view.

A problem is then either a one-line :class:`MuMapError` (the harmonizer cannot go on), or,
when the attenuation-correction setup is known from the metadata (scanner model, software
version, ``AttenuationCorrection`` text; :func:`~bids_harmonize.acsetups.infer_ac_setup`),
a logged fallback to that setup, recorded in the sidecar notes (:func:`series_attenuation`).

>>> import numpy as np
>>> unit_problem(np.array([0.0, 0.096, 0.15]), "cm^-1") is None
True
>>> unit_problem(np.array([-1000.0, 40.0, 1200.0]), "cm^-1")
'values from -1000 to 1200: not attenuation in 1/cm at 511 keV (HU of a CT?)'
>>> unit_problem(np.array([0.0, 0.1]), "HU")
"sidecar Units 'HU', expected 1/cm (cm^-1)"
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)

#: Values above this are not attenuation in 1/cm at 511 keV: dense cortical bone is
#: 0.17-0.19 1/cm (Carney et al., Med. Phys. 2006); 1 leaves room for metal and noise and
#: is far below HU (up to 3000) or 1/cm x 10,000 scaling (issue 13: "values > 1 or negative").
MU_UNITS_MAX = 1.0
#: Small negative values from interpolation are tolerated.
MU_UNITS_MIN = -0.01
UNITS_OK = ("cm^-1", "1/cm", "/cm", "cm-1", "cm**-1")
#: A PET voxel "has signal" above this fraction of the PET's 99th percentile.
SIGNAL_FRACTION = 0.05
#: Tolerance (voxels of the mu-map) of the coverage check.
COVERAGE_TOLERANCE_VOX = 1.0


class MuMapError(ValueError):
    """A scanner mu-map that cannot be used, with no setup to fall back to (one line)."""


def unit_problem(values, units: str | None) -> str | None:
    """What is wrong with the units of a mu-map, or None."""
    if units is not None and str(units).strip() not in UNITS_OK:
        return f"sidecar Units {units!r}, expected 1/cm (cm^-1)"
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "no finite values"
    lo, hi = float(finite.min()), float(finite.max())
    if lo < MU_UNITS_MIN or hi > MU_UNITS_MAX:
        return (f"values from {lo:.4g} to {hi:.4g}: not attenuation in 1/cm at 511 keV"
                + (" (HU of a CT?)" if lo <= -500 or hi >= 500 else ""))
    return None


def intended_for_problem(intended_for, pet_path: Path, bids_dir: Path | None = None) -> str | None:
    """Whether a sidecar's ``IntendedFor`` names ``pet_path`` (BIDS URI or relative path).

    >>> p = Path("/d/sub-01/ses-mr/pet/sub-01_ses-mr_trc-PiB_pet.nii.gz")
    >>> intended_for_problem(["bids::sub-01/ses-mr/pet/sub-01_ses-mr_trc-PiB_pet.nii.gz"], p) is None
    True
    >>> intended_for_problem("bids::sub-01/ses-ct/pet/sub-01_ses-ct_trc-PiB_pet.nii.gz", p)
    'IntendedFor names another PET series (sub-01_ses-ct_trc-PiB_pet.nii.gz)'
    >>> intended_for_problem(None, p) is None
    True
    """
    if not intended_for:
        return None
    targets = [intended_for] if isinstance(intended_for, str) else list(intended_for)
    name = Path(pet_path).name
    for target in targets:
        rel = str(target).split(":")[-1].lstrip("/")
        if Path(rel).name == name:
            return None
    shown = ", ".join(Path(str(t).split(":")[-1]).name for t in targets)
    return f"IntendedFor names another PET series ({shown})"


def coverage_problem(pet_img, mu_img) -> str | None:
    """Whether the mu-map's field of view covers every PET voxel with signal (world space)."""
    pet = np.asanyarray(pet_img.dataobj, dtype=np.float32)
    if pet.ndim == 4:
        pet = pet.mean(axis=3)
    finite = np.isfinite(pet)
    level = SIGNAL_FRACTION * float(np.percentile(pet[finite], 99)) if finite.any() else 0.0
    idx = np.argwhere(finite & (pet > level))
    if idx.size == 0:
        return None
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])], dtype=float)
    world = corners @ pet_img.affine[:3, :3].T + pet_img.affine[:3, 3]
    inv = np.linalg.inv(mu_img.affine)
    vox = world @ inv[:3, :3].T + inv[:3, 3]
    shape = np.asarray(mu_img.shape[:3], dtype=float)
    tol = COVERAGE_TOLERANCE_VOX
    outside = (vox < -0.5 - tol) | (vox > shape - 0.5 + tol)
    if outside.any():
        far = float(np.max(np.maximum(-0.5 - vox, vox - (shape - 0.5))))
        return f"does not cover the PET field of view (PET signal up to {far:.0f} voxels outside it)"
    return None


def mumap_problems(mumap: Path, pet: Path, bids_dir: Path | None = None) -> list[str]:
    """Every problem of a scanner mu-map for a PET series (empty: usable)."""
    import nibabel as nb

    sidecar = {}
    side = Path(str(mumap).replace(".nii.gz", ".json").replace(".nii", ".json"))
    if side.exists():
        try:
            sidecar = json.loads(side.read_text())
        except (OSError, ValueError) as err:
            return [f"sidecar {side.name} unreadable ({err})"]
    try:
        mu_img = nb.load(str(mumap))
        values = np.asanyarray(mu_img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        return [f"not a readable NIfTI ({type(err).__name__})"]
    if values.ndim != 3:
        return [f"a 3-D image is expected, got shape {values.shape}"]
    problems = [p for p in (
        unit_problem(values, sidecar.get("Units")),
        intended_for_problem(sidecar.get("IntendedFor"), pet, bids_dir),
        coverage_problem(nb.load(str(pet)), mu_img),
    ) if p]
    return problems


@dataclass
class Attenuation:
    """How a PET series was corrected for attenuation, as far as the input tells."""

    setup: str | None  #: a name of ``data/acsetups.tsv``, or None when unknown
    how: str  #: how the setup was inferred
    mumap: Path | None = None  #: the scanner's mu-map, when present and usable
    notes: list = field(default_factory=list)  #: fallbacks, for the sidecar

    def sidecar(self) -> dict:
        return {"AttenuationCorrectionSetup": self.setup or "unknown",
                "AttenuationCorrectionSetupInference": self.how,
                "ScannerMuMap": "used" if self.mumap else "none"}


def series_attenuation(pet: Path, metadata: dict, bids_dir: Path | None = None) -> Attenuation:
    """The setup of a PET series (from its metadata) and its checked scanner mu-map.

    Raises :class:`MuMapError` (one line naming the file) when the mu-map is unusable and
    the setup is unknown; with a known setup the mu-map is dropped with a warning and a note.
    """
    from bids_harmonize.acsetups import infer_ac_setup, mumap_path

    setup, how = infer_ac_setup(metadata.get("ManufacturersModelName"),
                                metadata.get("SoftwareVersions"),
                                metadata.get("AttenuationCorrection"))
    result = Attenuation(setup=setup, how=how)
    path = mumap_path(pet)
    if not path.exists():
        return result
    problems = mumap_problems(path, Path(pet), bids_dir)
    if not problems:
        result.mumap = path
        return result
    line = f"{path}: {'; '.join(problems)}"
    if setup is None:
        raise MuMapError(line + " (and the attenuation-correction setup is unknown: " + how + ")")
    note = f"scanner mu-map not used ({'; '.join(problems)}): fell back to setup {setup!r} ({how})"
    LOGGER.warning("%s: %s", path, note)
    result.notes.append(note)
    return result
