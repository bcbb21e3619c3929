"""BIDS discovery (pybids), platform inference and input checks.

The participant level turns a BIDS dataset into one :class:`SubjectPlan` per
subject: the T1w to use, and every PET series with its sidecar, tracer,
platform (PET-MR or PET-CT, and how that was decided) and CT when present.
All checks of the input happen here, before any work starts.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_harmonize.petmath import FrameWindowError, window_weights
from bids_harmonize.tracers import UnknownTracerError, get_tracer

LOGGER = logging.getLogger("bids_harmonize.bids")
PLATFORMS = ("PET-MR", "PET-CT")


class InputError(ValueError):
    """The input dataset or an option is unusable; the message is one line for the user."""


@dataclass
class PetSeries:
    """One PET image of a session, with what the pipeline needs to know about it."""

    path: Path
    subject: str
    session: str | None
    tracer: str
    metadata: dict
    platform: str
    platform_source: str
    ct: Path | None = None

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("ManufacturersModelName", "unknown"))

    @property
    def key(self) -> str:
        """A unique, Nipype-safe name: ``ses_petmr_trc_PiB``."""
        parts = ([f"ses_{self.session}"] if self.session else []) + [f"trc_{self.tracer}"]
        return "_".join(parts)


@dataclass
class SubjectPlan:
    """What the participant workflow will do for one subject."""

    subject: str
    t1w: Path
    pet: list[PetSeries] = field(default_factory=list)


# --------------------------------------------------------------------------- platforms


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


@cache
def scanner_table() -> dict[str, str]:
    """Known scanner models (normalised name or alias) -> platform."""
    path = resources.files("bids_harmonize.data").joinpath("scanners.tsv")
    table = {}
    with path.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            names = [row["model"], *filter(None, (row.get("aliases") or "").split(";"))]
            for name in names:
                table[_norm(name)] = row["platform"]
    return table


def platform_from_model(model: str | None) -> str | None:
    """Platform of a known scanner model, or None.

    >>> platform_from_model("Biograph mMR"), platform_from_model("Discovery MI")
    ('PET-MR', 'PET-CT')
    >>> platform_from_model("SIGNA PET/MR"), platform_from_model("Unknown 3000") is None
    ('PET-MR', True)
    """
    if not model:
        return None
    return scanner_table().get(_norm(model))


def platform_from_ac_text(text: str | None) -> str | None:
    """Platform implied by an ``AttenuationCorrection`` text, or None.

    >>> platform_from_ac_text("MR-based Dixon 4-class segmentation")
    'PET-MR'
    >>> platform_from_ac_text("CT-based attenuation correction")
    'PET-CT'
    >>> platform_from_ac_text("measured") is None
    True
    """
    if not text:
        return None
    words = text.lower()
    if any(k in words for k in ("dixon", "mr-based", "mrac", "mr based", "ute", "zte", "mri")):
        return "PET-MR"
    if any(k in words for k in ("ct-based", "ct based", "ctac", "computed tomography", " ct")) or (
        words.startswith("ct")
    ):
        return "PET-CT"
    return None


def read_platform_map(path: Path | None) -> dict[str, str]:
    """Read a ``--platform-map`` TSV (columns ``key``, ``platform``)."""
    if path is None:
        return {}
    mapping = {}
    with open(path) as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not reader.fieldnames or not {"key", "platform"} <= set(reader.fieldnames):
            raise InputError(f"--platform-map {path}: needs tab-separated columns 'key' and 'platform'")
        for row in reader:
            platform = row["platform"].strip().upper()
            if platform not in PLATFORMS:
                raise InputError(
                    f"--platform-map {path}: platform {row['platform']!r} is not PET-MR or PET-CT"
                )
            mapping[row["key"].strip()] = platform
    return mapping


def infer_platform(
    metadata: dict,
    *,
    subject: str,
    session: str | None,
    has_ct: bool,
    platform_map: dict[str, str] | None = None,
) -> tuple[str | None, str]:
    """Decide PET-MR or PET-CT for one PET series; return ``(platform, how)``.

    Order: the user's map, the scanner model, the attenuation-correction text,
    a CT in the session. A model that disagrees with the text wins, with a warning.

    >>> infer_platform({"ManufacturersModelName": "Biograph mMR",
    ...                 "AttenuationCorrection": "CT-based"}, subject="01", session="a",
    ...                has_ct=False)
    ('PET-MR', 'ManufacturersModelName "Biograph mMR" (conflicting AttenuationCorrection text ignored)')
    >>> infer_platform({}, subject="01", session="a", has_ct=True)
    ('PET-CT', 'a CT image in the same session')
    """
    platform_map = platform_map or {}
    model = metadata.get("ManufacturersModelName")
    keys = [f"sub-{subject}_ses-{session}", f"ses-{session}"] if session else []
    keys += [f"sub-{subject}", str(model)] if model else [f"sub-{subject}"]
    for key in keys:
        if key in platform_map:
            return platform_map[key], f"--platform-map entry {key!r}"
    by_model = platform_from_model(model)
    by_text = platform_from_ac_text(metadata.get("AttenuationCorrection"))
    if by_model:
        how = f'ManufacturersModelName "{model}"'
        if by_text and by_text != by_model:
            LOGGER.warning(
                "sub-%s ses-%s: scanner %r is %s but AttenuationCorrection says %r; trusting the "
                "scanner model", subject, session, model, by_model, metadata["AttenuationCorrection"],
            )
            how += " (conflicting AttenuationCorrection text ignored)"
        return by_model, how
    if by_text:
        return by_text, f'AttenuationCorrection "{metadata["AttenuationCorrection"]}"'
    if has_ct:
        return "PET-CT", "a CT image in the same session"
    return None, "no scanner model, attenuation text or CT to decide from"


# --------------------------------------------------------------------------- checks


def check_nifti(path: Path, *, ndim: tuple[int, ...] = (3, 4)) -> nb.Nifti1Image:
    """Load an image and refuse empty, corrupt, NaN-holding or wrongly shaped ones."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        img = nb.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI ({type(exc).__name__}: {exc})") from None
    if img.ndim not in ndim:
        raise InputError(f"{path}: expected a {' or '.join(map(str, ndim))}-D image, got {img.ndim}-D")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise InputError(f"{path}: the image holds NaN or infinite values")
    return img


def check_pet(path: Path, metadata: dict | None) -> None:
    """Check a PET image against its sidecar (frame timing, lengths, image)."""
    if metadata is None:
        raise InputError(f"{path}: PET image without a JSON sidecar")
    for key in ("FrameTimesStart", "FrameDuration"):
        if not metadata.get(key):
            raise InputError(f"{path}: sidecar lacks {key}, needed to pick the uptake window")
    img = check_nifti(path)
    n_frames = img.shape[3] if img.ndim == 4 else 1
    starts, durations = metadata["FrameTimesStart"], metadata["FrameDuration"]
    if not (len(starts) == len(durations) == n_frames):
        raise InputError(
            f"{path}: image has {n_frames} frame(s) but FrameTimesStart has {len(starts)} and "
            f"FrameDuration {len(durations)} entries"
        )


# --------------------------------------------------------------------------- discovery


def validate_bids(bids_dir: Path) -> None:
    """Run the BIDS validator (bids-validator-deno) and refuse a dataset with errors."""
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        LOGGER.warning("bids-validator-deno not found: skipping BIDS validation")
        return
    LOGGER.info("Validating %s with bids-validator-deno", bids_dir)
    proc = subprocess.run(
        [exe, str(bids_dir), "--json", "--ignoreNiftiHeaders"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (ValueError, KeyError):
        LOGGER.warning("BIDS validator gave no readable report: %s", proc.stderr.strip()[:300])
        return
    errors = sorted({i["code"] for i in issues if i.get("severity") == "error"})
    if errors:
        raise InputError(
            f"{bids_dir} fails BIDS validation ({', '.join(errors[:5])}); fix it or pass "
            "--skip-bids-validation"
        )


def load_layout(bids_dir: Path):
    """Index a BIDS dataset with pybids (CT files included, derivatives left out)."""
    from bids import BIDSLayout

    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    return BIDSLayout(str(bids_dir), validate=False, derivatives=False)


def _filters(bids_filters: dict, query: str) -> dict:
    return dict(bids_filters.get(query, {}))


def discover(
    bids_dir: Path,
    *,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    tracer_label: list[str] | None = None,
    bids_filters: dict | None = None,
    platform_map: dict[str, str] | None = None,
    uptake_windows: dict[str, list[float]] | None = None,
) -> tuple[list[SubjectPlan], list[str]]:
    """Build a plan per subject; return ``(plans, skipped)`` with one message per skip.

    Raises :class:`InputError` for problems that make the whole run unsafe
    (unknown participants, unreadable images, PET without usable sidecar).
    """
    layout = load_layout(bids_dir)
    bids_filters = bids_filters or {}
    subjects = sorted(layout.get_subjects())
    if participant_label:
        missing = sorted(set(participant_label) - set(subjects))
        if missing:
            raise InputError(
                f"participant(s) not in {bids_dir}: {', '.join('sub-' + m for m in missing)}"
            )
        subjects = [s for s in subjects if s in set(participant_label)]
    if not subjects:
        raise InputError(f"{bids_dir}: no subjects found")

    plans, skipped = [], []
    for subject in subjects:
        plan, why = _plan_subject(
            layout, subject, session_label=session_label, tracer_label=tracer_label,
            bids_filters=bids_filters, platform_map=platform_map or {},
            uptake_windows=uptake_windows or {},
        )
        if plan is None:
            LOGGER.warning("Skipping sub-%s: %s", subject, why)
            skipped.append(f"sub-{subject}: {why}")
        else:
            plans.append(plan)
    return plans, skipped


def _plan_subject(layout, subject, *, session_label, tracer_label, bids_filters, platform_map,
                  uptake_windows):
    query = {"subject": subject, "extension": [".nii", ".nii.gz"], "return_type": "filename"}
    pets = layout.get(suffix="pet", datatype="pet", **query, **_filters(bids_filters, "pet"))
    if session_label:
        pets = [p for p in pets if _entity(layout, p, "session") in set(session_label)]
    if tracer_label:
        wanted = {t.lower() for t in tracer_label}
        pets = [p for p in pets if (_entity(layout, p, "tracer") or "").lower() in wanted]
    if not pets:
        return None, "no PET images match the selection"

    t1ws = layout.get(suffix="T1w", datatype="anat", **query, **_filters(bids_filters, "t1w"))
    series = []
    for pet in sorted(pets):
        path = Path(pet)
        session = _entity(layout, pet, "session")
        metadata = layout.get_metadata(pet) or None
        if not path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json")).exists():
            metadata = None
        check_pet(path, metadata)
        tracer = _resolve_tracer(_entity(layout, pet, "tracer"), metadata.get("TracerName"), path)
        window = uptake_windows.get(tracer.name, tracer.window_min)
        try:
            window_weights(metadata["FrameTimesStart"], metadata["FrameDuration"], tuple(window))
        except FrameWindowError as exc:
            raise InputError(f"{path}: {exc} ({tracer.name}); see --uptake-window") from None
        cts = layout.get(
            suffix="CT", session=session, **query, **_filters(bids_filters, "ct")
        ) if session else []
        ct = Path(cts[0]) if cts else None
        if ct is not None:
            check_nifti(ct, ndim=(3,))
        platform, how = infer_platform(
            metadata, subject=subject, session=session, has_ct=ct is not None,
            platform_map=platform_map,
        )
        if platform is None:
            raise InputError(f"{path}: cannot tell PET-MR from PET-CT ({how}); use --platform-map")
        LOGGER.info("sub-%s ses-%s trc-%s: %s, from %s", subject, session, tracer.name, platform,
                    how)
        series.append(PetSeries(path, subject, session, tracer.name, metadata, platform, how, ct))

    sessions_with_pet = {s.session for s in series}
    t1w = _pick_t1w(layout, t1ws, sessions_with_pet)
    if t1w is None:
        if any(s.platform == "PET-MR" for s in series):
            return None, "PET-MR session(s) but no T1w in any session of this subject"
        return None, "no T1w in any session (needed for registration)"
    check_nifti(Path(t1w), ndim=(3,))
    return SubjectPlan(subject=subject, t1w=Path(t1w), pet=series), ""


def _resolve_tracer(label: str | None, tracer_name: str | None, path: Path):
    """The tracer of a PET file: its ``trc-`` label, else the sidecar's ``TracerName``."""
    error = None
    for candidate in filter(None, (label, tracer_name)):
        try:
            return get_tracer(candidate)
        except UnknownTracerError as exc:
            error = error or exc
    raise InputError(f"{path}: {error or 'no trc- label and no TracerName in the sidecar'}")


def _entity(layout, filename: str, name: str):
    return layout.parse_file_entities(filename).get(name)


def _pick_t1w(layout, t1ws: list[str], sessions: set) -> str | None:
    """The subject's T1w: from a PET session when there is one, else from any session."""
    if not t1ws:
        return None
    in_pet_sessions = [t for t in sorted(t1ws) if _entity(layout, t, "session") in sessions]
    if len(t1ws) > 1:
        LOGGER.info("Several T1w images; using %s", (in_pet_sessions or sorted(t1ws))[0])
    return (in_pet_sessions or sorted(t1ws))[0]


def bids_uri(path: Path, bids_dir: Path, dataset: str = "raw") -> str:
    """A BIDS URI (``bids:raw:sub-01/...``) for a file inside ``bids_dir``.

    >>> bids_uri(Path("/d/sub-01/anat/sub-01_T1w.nii.gz"), Path("/d"))
    'bids:raw:sub-01/anat/sub-01_T1w.nii.gz'
    """
    return f"bids:{dataset}:{Path(path).relative_to(bids_dir).as_posix()}"
