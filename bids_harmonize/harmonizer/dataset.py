"""Training pairs: one subject and tracer with same-day PET-CT and PET-MR on one grid.

:func:`load_pairs_from_derivatives` reads the participant workflow's outputs
(``CONTRIBUTING.md``, "Participant outputs"): per subject and tracer, the PET-CT and
PET-MR ``space-T1w_desc-preproc_pet`` images, the preprocessed T1w, the brain mask and the
PET-CT session's ``space-T1w_desc-preproc_CT``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)

ARRAY_FIELDS = ("t1w", "ct_hu", "pet_ct", "pet_mr", "brain_mask")


class InsufficientDataError(RuntimeError):
    """Fewer usable training pairs than required."""


@dataclass
class TrainingPair:
    """One training example: arrays (or NIfTI paths) on ONE common grid (the T1w grid).

    ``labels`` (integer region map, 0 = background) is optional; without it the regional
    loss uses the brain mask as a single region. ``mu_map`` is the PET-MR scanner's own
    attenuation map (1/cm at 511 keV) on the same grid, when the data have one;
    ``ac_setup`` names the PET-MR attenuation-correction setup
    (``bids_harmonize.acsetups``; "unknown" when not known).
    """

    subject: str
    tracer: str
    t1w: np.ndarray | str | Path
    ct_hu: np.ndarray | str | Path
    pet_ct: np.ndarray | str | Path
    pet_mr: np.ndarray | str | Path
    brain_mask: np.ndarray | str | Path
    labels: np.ndarray | str | Path | None = None
    petct_model: str = "unknown"
    petmr_model: str = "unknown"
    extra: dict = field(default_factory=dict)
    mu_map: np.ndarray | str | Path | None = None
    ac_setup: str = "unknown"

    def load(self) -> dict[str, np.ndarray]:
        """Arrays of every field (paths are read with nibabel); checks they share a shape."""
        out = {}
        for name in (*ARRAY_FIELDS, "labels", "mu_map"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str | Path):
                import nibabel as nb

                value = np.asanyarray(nb.load(str(value)).dataobj)
            out[name] = np.asarray(value)
        shapes = {k: v.shape for k, v in out.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"pair {self.key}: arrays are not on one grid: {shapes}")
        return out

    @property
    def key(self) -> str:
        return f"sub-{self.subject}_trc-{self.tracer}"


_PET_RE = re.compile(
    r"sub-(?P<sub>[^_]+)_ses-(?P<ses>[^_]+)_trc-(?P<trc>[^_]+)_space-T1w_desc-preproc_pet\.nii(\.gz)?$"
)


def _sidecar(path: Path) -> dict:
    side = Path(re.sub(r"\.nii(\.gz)?$", ".json", str(path)))
    if side.exists():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            LOGGER.warning("unreadable sidecar %s", side)
    return {}


def _platform(path: Path, meta: dict) -> str | None:
    platform = meta.get("Platform")
    if platform in ("PET-MR", "PET-CT"):
        return platform
    ses = _PET_RE.search(path.name).group("ses").lower()
    if "petmr" in ses or ses.endswith("mr"):
        return "PET-MR"
    if "petct" in ses or ses.endswith("ct"):
        return "PET-CT"
    return None


def load_pairs_from_derivatives(
    derivatives_dir,
    *,
    participant_labels=None,
    tracers=None,
    min_pairs: int = 1,
) -> tuple[list[TrainingPair], list[tuple[str, str]]]:
    """Pairs found under a participant-level output folder.

    Returns ``(pairs, excluded)`` where ``excluded`` lists ``(what, why)``. Raises
    :class:`InsufficientDataError` when fewer than ``min_pairs`` pairs are usable.
    """
    root = Path(derivatives_dir)
    if not root.is_dir():
        raise InsufficientDataError(f"derivatives folder {root} does not exist")
    wanted_subjects = {s.removeprefix("sub-") for s in participant_labels or []}
    wanted_tracers = {t.lower() for t in tracers or []}
    pairs: list[TrainingPair] = []
    excluded: list[tuple[str, str]] = []
    for subdir in sorted(root.glob("sub-*")):
        if not subdir.is_dir():
            continue
        sub = subdir.name.removeprefix("sub-")
        if wanted_subjects and sub not in wanted_subjects:
            continue
        anat = subdir / "anat"
        t1w = anat / f"sub-{sub}_desc-preproc_T1w.nii.gz"
        mask = anat / f"sub-{sub}_desc-brain_mask.nii.gz"
        dseg = sorted(anat.glob(f"sub-{sub}*_dseg.nii.gz"))
        by_tracer: dict[str, dict[str, tuple[Path, dict]]] = {}
        for pet in sorted(subdir.glob("ses-*/pet/*_space-T1w_desc-preproc_pet.nii*")):
            match = _PET_RE.search(pet.name)
            if not match:
                continue
            trc = match.group("trc")
            if wanted_tracers and trc.lower() not in wanted_tracers:
                continue
            meta = _sidecar(pet)
            platform = _platform(pet, meta)
            if platform is None:
                excluded.append((pet.name, "platform unknown (no Platform in the sidecar)"))
                continue
            by_tracer.setdefault(trc, {})[platform] = (pet, meta)
        for trc, found in sorted(by_tracer.items()):
            what = f"sub-{sub}_trc-{trc}"
            missing = [p for p in ("PET-CT", "PET-MR") if p not in found]
            if missing:
                excluded.append((what, f"no {' and no '.join(missing)} session"))
                continue
            if not t1w.exists() or not mask.exists():
                excluded.append((what, "preprocessed T1w or brain mask missing"))
                continue
            ct_pet = found["PET-CT"][0]
            ses_ct = _PET_RE.search(ct_pet.name).group("ses")
            ct = (
                subdir
                / f"ses-{ses_ct}"
                / "anat"
                / (f"sub-{sub}_ses-{ses_ct}_space-T1w_desc-preproc_CT.nii.gz")
            )
            if not ct.exists():
                excluded.append((what, f"no CT on the T1w grid ({ct.name})"))
                continue
            pairs.append(
                TrainingPair(
                    subject=sub,
                    tracer=trc,
                    t1w=t1w,
                    ct_hu=ct,
                    pet_ct=ct_pet,
                    pet_mr=found["PET-MR"][0],
                    brain_mask=mask,
                    labels=dseg[0] if dseg else None,
                    petct_model=found["PET-CT"][1].get("ManufacturersModelName", "unknown"),
                    petmr_model=found["PET-MR"][1].get("ManufacturersModelName", "unknown"),
                )
            )
    for what, why in excluded:
        LOGGER.info("excluded %s: %s", what, why)
    if len(pairs) < min_pairs:
        reasons = "; ".join(f"{w}: {y}" for w, y in excluded) or "no PET sessions found"
        raise InsufficientDataError(
            f"found {len(pairs)} usable PET-CT/PET-MR pair(s) under {root}, "
            f"need at least {min_pairs}; excluded {len(excluded)}: {reasons}"
        )
    return pairs, excluded


def pairs_from_simulation(subject, tracers=None) -> list[TrainingPair]:
    """Training pairs of a :class:`bids_harmonize.synth.SimulatedSubject` (in memory).

    With simulator v2 the pairs carry the PET-MR scanner's mu-map (``mu_mr``) and its
    attenuation-correction setup (``sessions["petmr"].ac_setup``).
    """
    sessions = getattr(subject, "sessions", {}) or {}
    petct = sessions.get("petct")
    petmr = sessions.get("petmr")
    pairs = []
    for tracer in tracers or subject.tracers:
        pairs.append(
            TrainingPair(
                subject=subject.subject,
                tracer=tracer,
                t1w=subject.t1w,
                ct_hu=subject.ct_hu,
                pet_ct=subject.pet_ct[tracer],
                pet_mr=subject.pet_mr[tracer],
                brain_mask=subject.brain_mask,
                labels=subject.labels,
                petct_model=getattr(petct, "model", "unknown"),
                petmr_model=getattr(petmr, "model", "unknown"),
                extra={"mrac": getattr(petmr, "attenuation_correction", "unknown")},
                mu_map=getattr(subject, "mu_mr", None),
                ac_setup=getattr(petmr, "ac_setup", None) or "unknown",
            )
        )
    return pairs
