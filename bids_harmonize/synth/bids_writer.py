"""Write simulated subjects as a BIDS dataset, with the ground truth as a derivative.

Layout (``XX`` = 01, 02, ...; ``T`` = tracer label of ``tracers.yaml``)::

    dataset_description.json  README.md  CHANGES  .bidsignore
    participants.tsv/.json
    sub-XX/sub-XX_sessions.tsv
    sub-XX/ses-petct/anat/sub-XX_ses-petct_CT.nii.gz/.json   (CT in HU, listed in .bidsignore)
    sub-XX/ses-petct/pet/sub-XX_ses-petct_trc-T_pet.nii.gz/.json
    sub-XX/ses-petmr/anat/sub-XX_ses-petmr_T1w.nii.gz/.json
    sub-XX/ses-petmr/pet/sub-XX_ses-petmr_trc-T_pet.nii.gz/.json
    derivatives/synth-truth/   ground truth, see TRUTH_README below

The dataset is written into a temporary folder next to the target and renamed at
the end, so a failure leaves nothing behind.  Files are byte-identical for the same
seed and options: NIfTI headers are set explicitly, gzip streams carry no time
stamp or file name, JSON keys are written in a fixed order.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bids_harmonize.__about__ import __version__
from bids_harmonize.acsetups import get_setup, mumap_path, mumap_sidecar
from bids_harmonize.atlas import synth_label_table
from bids_harmonize.synth import physics as phy
from bids_harmonize.synth.api import SynthConfig
from bids_harmonize.synth.simulate import SESSIONS, _simulate
from bids_harmonize.synth.template import make_nifti, padded_template
from bids_harmonize.tracers import get_tracer

LOGGER = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"
TRUTH_DIR = Path("derivatives") / "synth-truth"

#: Nominal injected mass (ug) per tracer family (specific radioactivity follows).
INJECTED_MASS_UG = {"amyloid": 4.0, "tau": 2.0, "fdg": 1.0, "dat": 1.5}

TRUTH_README = """\
# synth-truth: ground truth of the bids_harmonize synthetic dataset

Reference grid (`space-ref`): each subject's own head on a RAS grid with isotropic
voxels (the simulator's `resolution_mm`), the extent of nilearn's 2 mm MNI152 2009a
grid padded to hold the whole head.  Coordinates are *subject millimetres* (the
subject's deformed anatomy, roughly MNI-centred, not MNI space).  All `space-ref`
images of a subject share one affine, also in `sub-XX_desc-truth_params.json`
(`reference_affine`).

From the reference grid to a session's scanner: `sessions.<ses>.pose` in the params
JSON is the 4x4 rigid matrix with `x_scanner = pose @ x_ref` (mm).  The raw images of
that session (CT or T1w, PET) have affines in scanner millimetres, so
`inv(pose) @ native_affine` maps their voxels to reference millimetres
(`sessions.<ses>.to_ref_affines` lists these per file).

Files per subject:

- `anat/sub-XX_space-ref_dseg.nii.gz`: synth atlas labels (1-24, `dseg.tsv` at root);
- `anat/sub-XX_space-ref_desc-brain_mask.nii.gz`, `anat/sub-XX_space-ref_label-{GM,WM,CSF}_probseg.nii.gz`;
- `anat/sub-XX_space-ref_desc-true_CT.nii.gz`: the CT (HU, with CT noise) on the reference
  grid, i.e. `SimulatedSubject.ct_hu`;
- `anat/sub-XX_space-ref_desc-{true,mrac}_mumap.nii.gz`: true 511 keV attenuation (1/cm,
  bilinear conversion of the noiseless CT) and the scanner's map of the PET-MR session
  (its attenuation-correction setup, `sessions.petmr.ac_setup` in the params; the same
  map is in the raw dataset next to each PET-MR series, `*_mumap.nii.gz`, on the PET grid);
- `pet/sub-XX_ses-<ses>_trc-<T>_space-ref_desc-true_pet.nii.gz`: true activity (Bq/mL,
  decay corrected to injection) averaged over the tracer's standard window, for that
  session's injected dose;
- `pet/sub-XX_ses-<ses>_trc-<T>_space-ref_desc-recon_pet.nii.gz`: the session's static
  reconstruction (mean of the frames in the window) resampled to the reference grid
  (int16 with a scale factor, Bq/mL);
- `sub-XX_desc-truth_regional.tsv`: per session, tracer and region: voxels, true mean,
  reconstructed mean, recovery (recon/true) and, for PET-MR rows, the PET-MR/PET-CT
  ratio of recoveries (dose-independent);
- `sub-XX_desc-truth_params.json`: demographics, latent disease (Centiloid, Braak
  stage, hypometabolism, DaT loss), per-tracer targets and scatter fractions, anatomy,
  scanners, poses, the PET-MR setup (`ac_setups`) and what its μ-map got wrong
  (`mr_attenuation`: fat/water swap, air found, bone shifts, MR-AC to PET motion),
  `petmr_delay_min`.

`regional_ratios.tsv` at the root summarises PET-MR/PET-CT ratios over subjects.
"""


INSTITUTION = {
    "InstitutionName": "bids_harmonize synthetic site",
    "InstitutionAddress": "none (simulated data)",
    "InstitutionalDepartmentName": "simulation",
}


class SynthError(ValueError):
    """A user error of the simulator (bad argument or output folder)."""


def _json_dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _clean(obj):
    """JSON-able copy: numpy scalars/arrays to Python, tuples to lists, floats to 10 digits."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(f"{float(obj):.10g}") if np.isfinite(obj) else None
    return obj


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_json_dump(_clean(obj)))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, dtype=np.float32,
                tr: float | None = None) -> None:
    """Write a .nii.gz deterministically (no gzip time stamp, fixed header).

    ``int16`` data of a float image are scaled with ``scl_slope`` like scanners do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if np.dtype(dtype) == np.int16 and np.issubdtype(data.dtype, np.floating):
        peak = float(np.max(np.abs(data))) or 1.0
        slope = float(np.float32(peak / 32000.0))
        stored = np.round(data / slope).astype(np.int16)
        img = make_nifti(stored, affine, zooms_t=tr)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = make_nifti(np.asarray(data, dtype=dtype), affine, zooms_t=tr)
        if np.issubdtype(np.dtype(dtype), np.integer):
            img.header.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    with open(path, "wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle,
                                                   mtime=0, compresslevel=1) as gz:
        gz.write(raw)


def _flip_first_axis(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store a RAS-ordered PET grid as LAS (first axis reversed), as dcm2niix often does."""
    n = data.shape[0]
    flip = np.eye(4)
    flip[0, 0] = -1.0
    flip[0, 3] = n - 1
    return np.ascontiguousarray(data[::-1]), affine @ flip


def _clock_plus(clock: str, seconds: float) -> str:
    h, m, s = (int(v) for v in clock.split(":"))
    total = h * 3600 + m * 60 + s + int(round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def pet_sidecar(*, tracer, scanner: phy.ScannerModel, ac_setup: str, software: str,
                dose_mbq: float, scatter_fraction=None,
                weight_kg: float, starts_min, durations_min, injection_clock: str,
                config: SynthConfig, institution: dict | None = None) -> dict:
    """The BIDS PET sidecar of one session and tracer (``institution``: the site's
    ``Institution*`` fields, default :data:`INSTITUTION`)."""
    setup = get_setup(ac_setup)
    starts_s = [round(float(v) * 60.0, 3) for v in starts_min]
    durs_s = [round(float(v) * 60.0, 3) for v in durations_min]
    mass = INJECTED_MASS_UG[tracer.family]
    decay = phy.decay_factor(np.asarray(starts_min), np.asarray(durations_min),
                             tracer.half_life_min)
    radionuclide = {"C11": "11C", "F18": "18F"}.get(tracer.radionuclide, tracer.radionuclide)
    return {
        "Manufacturer": scanner.manufacturer,
        "ManufacturersModelName": scanner.model,
        "SoftwareVersions": software,
        **(institution or INSTITUTION),
        "BodyPart": "Brain",
        "Units": "Bq/mL",
        "TracerName": tracer.name,
        "TracerRadionuclide": radionuclide,
        "InjectedRadioactivity": round(dose_mbq, 3),
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": mass,
        "InjectedMassUnits": "ug",
        "SpecificRadioactivity": round(dose_mbq / mass, 3),
        "SpecificRadioactivityUnits": "MBq/ug",
        "SpecificRadioactivityMeasTime": injection_clock,
        "InjectedMassPerWeight": round(mass / weight_kg, 6),
        "InjectedMassPerWeightUnits": "ug/kg",
        "InjectedVolume": 10,
        "ModeOfAdministration": "bolus",
        "BodyWeight": weight_kg,
        "TimeZero": injection_clock,
        "ScanStart": starts_s[0],
        "InjectionStart": 0,
        "InjectionEnd": 10,
        "FrameTimesStart": starts_s,
        "FrameDuration": durs_s,
        "DecayCorrectionFactor": [round(float(1.0 / d), 6) for d in decay],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0,
        "ReconMethodName": ("FBP (2D, ramp filter with Hann window"
                            + (", capped PSF deconvolution" if scanner.psf_recon else "")
                            + ")" + (f" emulating {scanner.recon}" if scanner.recon else "")),
        "ReconMethodParameterLabels": ["angles", "hann_cutoff"],
        "ReconMethodParameterUnits": ["none", "Nyquist"],
        "ReconMethodParameterValues": [config.n_angles, scanner.hann_cutoff],
        "ReconMethodImplementationVersion": f"bids_harmonize.synth {__version__}",
        "ReconFilterType": "Gaussian",
        "ReconFilterSize": scanner.postfilter_fwhm_mm,
        "AttenuationCorrection": setup.ac_text,
        "AttenuationCorrectionMethodReference": setup.reference,
        "DoseCalibrationFactor": 1.0,
        "ScaleFactor": [1.0] * len(starts_s),
        "ScatterFraction": ([round(100.0 * float(v), 2) for v in scatter_fraction]
                            if scatter_fraction is not None else [0.0] * len(starts_s)),
        "ScatterCorrectionMethod": "model-based: Gaussian-kernel scatter estimate from the "
                                   "scanner's attenuation map, scaled to the scatter tails",
        "RandomsCorrectionMethod": "none (randoms not simulated)",
        "ImageVoxelSize": [float(v) for v in scanner.voxel_mm],
        "ScannerPSFFWHM": scanner.psf_fwhm_mm,
        "TimeWindowStandard": list(tracer.window_min),
    }


def _check_output(out: Path, overwrite: bool) -> Path:
    out = Path(out).expanduser().absolute()
    parent = out.parent
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"output folder {out} is not empty (use --overwrite to replace it)")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SynthError(f"cannot create {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SynthError(f"output location {probe} is not writable")
    return out


def validate_request(n_subjects: int, tracers: Sequence[str], config: SynthConfig) -> list[str]:
    """Check the arguments; returns canonical tracer names (raises :class:`SynthError`)."""
    if int(n_subjects) < 1:
        raise SynthError(f"need at least 1 subject, got {n_subjects}")
    if not tracers:
        raise SynthError("need at least one tracer")
    try:
        names = [get_tracer(t).name for t in tracers]
    except ValueError as err:
        raise SynthError(str(err)) from None
    if len(set(names)) != len(names):
        raise SynthError(f"duplicate tracers: {', '.join(tracers)}")
    for name in config.petmr_setups:
        try:
            get_setup(name)
        except ValueError as err:
            raise SynthError(str(err)) from None
    if config.petmr_delay_min > 0:
        from bids_harmonize.synth.uptake import kinetic_model

        for name in names:
            try:
                kinetic_model(get_tracer(name))
            except ValueError as err:
                raise SynthError(f"--petmr-delay {config.petmr_delay_min:g}: {err}") from None
    for models, platform in ((config.petct_models, "PET-CT"),):
        for model in models:
            if model not in phy.SCANNERS:
                raise SynthError(f"unknown scanner model {model!r}; simulated models: "
                                 f"{', '.join(phy.SCANNERS)}")
            if phy.SCANNERS[model].platform != platform:
                raise SynthError(f"{model!r} is a {phy.SCANNERS[model].platform} scanner, "
                                 f"not {platform}")
    return names


def write_dataset(out_dir, *, n_subjects: int = 3, tracers: Sequence[str] = ("PiB",),
                  seed: int = 0, config: SynthConfig | None = None, overwrite: bool = False,
                  progress: Callable[[str], None] | None = None, jobs: int = 1) -> pd.DataFrame:
    """Simulate ``n_subjects`` and write them as a BIDS dataset at ``out_dir``.

    ``jobs`` > 1 simulates that many subjects at a time in forked processes (one torch
    thread each); the files are the same whatever ``jobs`` is.

    Returns the regional truth table of all subjects (one row per subject, session,
    tracer and region; see ``TRUTH_README``).  Raises :class:`SynthError` for bad
    arguments or an unusable output folder, before anything is written.
    """
    config = config or SynthConfig()
    names = validate_request(n_subjects, tracers, config)
    out = _check_output(Path(out_dir), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        table = _write_all(tmp, n_subjects=int(n_subjects), tracers=names, seed=int(seed),
                           config=config, progress=progress, jobs=max(1, int(jobs)))
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table


def _one_subject(task, threads: int | None = 1):
    """Simulate and write one subject: its truth rows, participants.tsv row and log line.

    ``threads``: torch threads of this process (1 in a pool worker; ``None`` leaves them).
    """
    root, index, seed, tracers, config = task
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    subject, native, tracer_data = _simulate(index, seed=seed, tracers=tracers,
                                             config=config, keep_native=True)
    rows = _write_subject(root, subject, native, tracer_data, config)
    p = subject.params
    participant = {
        "participant_id": f"sub-{subject.subject}", "age": p["age"], "sex": p["sex"],
        "weight": p["weight_kg"],
        "amyloid_status": "positive" if p["amyloid_positive"] else "negative",
        "centiloid": round(p["centiloid"], 2), "braak_stage": p["braak_stage"],
        "dat_status": "reduced" if p["dat_loss"] > 0 else "normal",
        "petct_scanner": p["scanners"]["petct"], "petmr_scanner": p["scanners"]["petmr"],
        "petmr_ac_setup": p["ac_setups"]["petmr"],
    }
    if "site" in p:
        participant["site"] = p["site"]["name"]
        participant["institution"] = p["site"]["institution"]
    msg = (f"sub-{subject.subject}: {p['scanners']['petct']} / {p['scanners']['petmr']}, "
           f"CL {p['centiloid']:.0f}, Braak {p['braak_stage']}, "
           f"{p['timing_s']['total']:.1f} s")
    return rows, participant, msg


def _write_all(root: Path, *, n_subjects, tracers, seed, config, progress,
               jobs: int = 1) -> pd.DataFrame:
    write_json(root / "dataset_description.json", {
        "Name": "bids_harmonize synthetic paired PET-CT / PET-MR brain PET",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["bids_harmonize developers", "bids_harmonize.synth simulator"],
        "GeneratedBy": [{
            "Name": "bids_harmonize-synth", "Version": __version__,
            "Description": (f"bids_harmonize.synth, seed {seed}, tracers {','.join(tracers)}, "
                            f"resolution {config.resolution_mm} mm, "
                            + (f"consortium {config.consortium.name} (sites "
                               f"{','.join(s.name for s in config.consortium.sites)})"
                               if config.consortium else
                               f"PET-MR setups {','.join(config.petmr_setups)}")),
        }],
    })
    (root / "README.md").write_text(
        "# Synthetic paired PET-CT / PET-MR brain PET\n\n"
        f"Simulated by `bids_harmonize-synth` {__version__} (seed {seed}). Each subject has a "
        "PET-CT session (`ses-petct`: CT + PET) and a PET-MR session (`ses-petmr`: T1w + PET) "
        "on the same day. The PET-MR differs from the PET-CT through attenuation correction "
        "(MR-based maps ignore bone), scanner resolution and noise. CT images (`*_CT.nii.gz`, "
        "HU) are not part of BIDS yet and are listed in `.bidsignore`; so are the scanners' own "
        "attenuation maps of the PET-MR series (`*_mumap.nii.gz`, 1/cm at 511 keV, next to "
        "each PET with the same entities). Ground truth is in "
        "`derivatives/synth-truth/`.\n")
    (root / "CHANGES").write_text("1.0.0 2026-01-01\n  - Simulated by bids_harmonize-synth.\n")
    (root / ".bidsignore").write_text("*_CT.nii.gz\n*_CT.json\n*_mumap.nii.gz\n*_mumap.json\n")
    truth = root / TRUTH_DIR
    write_json(truth / "dataset_description.json", {
        "Name": "bids_harmonize synthetic dataset: ground truth",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_harmonize-synth", "Version": __version__}],
    })
    (truth / "README.md").write_text(TRUTH_README)
    labels_tsv = synth_label_table()[["index", "name", "abbreviation"]]
    labels_tsv.to_csv(truth / "dseg.tsv", sep="\t", index=False, lineterminator="\n")

    t0 = time.perf_counter()
    padded_template()  # one-time: nilearn template, tissue maps, label map (cached)
    LOGGER.info("template and synth label map ready (%.1f s, once per process)",
                time.perf_counter() - t0)
    participants, tables = [], []
    tasks = [(root, index, seed, tracers, config) for index in range(1, n_subjects + 1)]
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp

        # forked workers, one subject each at a time: a subject is a function of its index
        # and the seed alone, so the files do not depend on ``jobs``
        with mp.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            results = pool.imap(_one_subject, tasks, chunksize=1)
            for rows, participant, msg in results:
                tables.append(rows)
                participants.append(participant)
                LOGGER.info(msg)
                if progress:
                    progress(msg)
    else:
        for task in tasks:
            rows, participant, msg = _one_subject(task, threads=None)
            tables.append(rows)
            participants.append(participant)
            LOGGER.info(msg)
            if progress:
                progress(msg)
    pd.DataFrame(participants).to_csv(root / "participants.tsv", sep="\t", index=False,
                                      lineterminator="\n", na_rep="n/a")
    cohort = config.consortium.cohort if config.consortium else None
    write_json(root / "participants.json", {
        **PARTICIPANTS_JSON, **(SITE_JSON if config.consortium else {}),
        **(COHORT_JSON if cohort else {})})
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(truth / "regional.tsv", sep="\t", index=False, lineterminator="\n",
                 float_format="%.6g", na_rep="n/a")
    summary = ratio_summary(table)
    summary.to_csv(truth / "regional_ratios.tsv", sep="\t", index=False, lineterminator="\n",
                   float_format="%.6g", na_rep="n/a")
    return table


PARTICIPANTS_JSON = {
    "age": {"Description": "age at scan", "Units": "year"},
    "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    "weight": {"Description": "body weight", "Units": "kg"},
    "amyloid_status": {"Description": "true amyloid status of the simulation (Centiloid >= 25)",
                       "Levels": {"positive": "amyloid positive",
                                  "negative": "amyloid negative"}},
    "centiloid": {"Description": "true cortical amyloid load the amyloid tracers were "
                                 "simulated from", "Units": "Centiloid"},
    "braak_stage": {"Description": "true Braak-like tau stage (0-6) of the tau tracers"},
    "dat_status": {"Description": "true dopamine transporter status",
                   "Levels": {"normal": "normal striatal binding",
                              "reduced": "posterior-putamen-first loss"}},
    "petct_scanner": {"Description": "PET-CT scanner model of ses-petct"},
    "petmr_scanner": {"Description": "PET-MR scanner model of ses-petmr"},
    "petmr_ac_setup": {"Description": "attenuation-correction setup of ses-petmr (names of "
                                      "bids_harmonize/data/acsetups.tsv)"},
}

#: participants.json entries of a consortium dataset (``SynthConfig.consortium``).
SITE_JSON = {
    "site": {"Description": "site of the consortium (bids_harmonize/data/consortia.yaml)"},
    "institution": {"Description": "InstitutionName of the site's sidecars"},
}
#: participants.json entry of a consortium with a cohort.
COHORT_JSON = {
    "amyloid_status": {"Description": "true amyloid status drawn by the consortium's cohort "
                                      "(positive subjects have a Centiloid above the cohort's "
                                      "positive_centiloid_min, negative ones at most 20)",
                       "Levels": {"positive": "amyloid positive",
                                  "negative": "amyloid negative"}},
}


def ratio_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, min and max over subjects (and tracers) of the PET-MR/PET-CT ratio per region."""
    mr = table[table["session"] == "petmr"]
    grouped = mr.groupby(["index", "region"], sort=True)["ratio_petmr_petct"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"mean": "ratio_mean", "std": "ratio_sd", "min": "ratio_min",
                               "max": "ratio_max", "count": "n"})


def _write_subject(root: Path, subject, native, tracer_data, config) -> pd.DataFrame:
    sub = f"sub-{subject.subject}"
    p = subject.params
    jobs = []
    site = config.consortium.site_for(subject.index) if config.consortium else None
    institution = site.institution_fields() if site else INSTITUTION

    def queue(*args, **kwargs):
        jobs.append((args, kwargs))

    truth = root / TRUTH_DIR / sub
    sessions_rows = []
    to_ref = {}
    for ses in SESSIONS:
        nat = native[ses]
        st = subject.sessions[ses]
        base = root / sub / f"ses-{ses}"
        inv_pose = np.linalg.inv(st.pose)
        if ses == "petct":
            anat_path = base / "anat" / f"{sub}_ses-{ses}_CT.nii.gz"
            queue(anat_path, nat.anat, nat.anat_affine, dtype=np.int16)
            write_json(anat_path.with_name(anat_path.name.replace(".nii.gz", ".json")), {
                **institution, "Modality": "CT", "Manufacturer": st.manufacturer,
                "ManufacturersModelName": st.model, "BodyPart": "Brain", "KVP": 120,
                "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "Units": "HU",
            })
        else:
            anat_path = base / "anat" / f"{sub}_ses-{ses}_T1w.nii.gz"
            queue(anat_path, nat.anat, nat.anat_affine, dtype=np.int16)
            write_json(anat_path.with_name(anat_path.name.replace(".nii.gz", ".json")), {
                **institution, "Manufacturer": st.manufacturer,
                "ManufacturersModelName": st.model, "DeviceSerialNumber": "0000",
                "StationName": "SYNTH-PETMR", "SoftwareVersions": f"bids_harmonize {__version__}",
                "MagneticFieldStrength": 3, "ScanningSequence": "GR_IR",
                "SequenceVariant": "SK_SP_MP", "SequenceName": "tfl3d1",
                "PulseSequenceDetails": "simulated MPRAGE-like contrast",
                "ReceiveCoilName": "Head/Neck", "ReceiveCoilActiveElements": "HE1-4",
                "CoilCombinationMethod": "sum of squares", "MatrixCoilMode": "n/a",
                "NonlinearGradientCorrection": False, "DwellTime": 1e-05, "MRAcquisitionType": "3D",
                "PulseSequenceType": "MPRAGE", "RepetitionTime": 2.3, "EchoTime": 0.00298,
                "InversionTime": 0.9, "FlipAngle": 9, "SliceThickness": float(
                    abs(nat.anat_affine[:3, 2]).max()),
            })
        to_ref[ses] = {anat_path.name: (inv_pose @ nat.anat_affine).tolist()}
        for t_i, (name, frames) in enumerate(nat.pet.items()):
            tracer = get_tracer(name)
            starts, durs = nat.frames[name]
            data, aff = _flip_first_axis(frames, nat.pet_affine)
            pet_path = base / "pet" / f"{sub}_ses-{ses}_trc-{name}_pet.nii.gz"
            tr = float(durs[0] * 60.0)
            queue(pet_path, data, aff, dtype=np.int16, tr=tr)
            write_json(pet_path.with_name(pet_path.name.replace(".nii.gz", ".json")),
                       pet_sidecar(tracer=tracer, scanner=nat.scanner,
                                   ac_setup=st.ac_setup, software=st.software_versions,
                                   scatter_fraction=nat.scatter_fraction.get(name),
                                   dose_mbq=nat.dose_mbq[name], weight_kg=p["weight_kg"],
                                   starts_min=starts, durations_min=durs,
                                   injection_clock=nat.injection_clock[name], config=config,
                                   institution=institution))
            to_ref[ses][pet_path.name] = (inv_pose @ aff).tolist()
            if ses == "petmr":  # the scanner's own μ-map, on the PET grid
                mu_path = mumap_path(pet_path)
                mu_data, mu_aff = _flip_first_axis(nat.mumap, nat.pet_affine)
                queue(mu_path, mu_data, mu_aff)
                uri = f"bids::{sub}/ses-{ses}/pet/{pet_path.name}"
                write_json(mu_path.with_name(mu_path.name.replace(".nii.gz", ".json")),
                           mumap_sidecar(get_setup(st.ac_setup), uri,
                                         software_versions=st.software_versions))
                to_ref[ses][mu_path.name] = (inv_pose @ mu_aff).tolist()
            if t_i == 0:
                sessions_rows.append({"session_id": f"ses-{ses}", "platform": st.platform,
                                      "scanner": st.model, "ac_setup": st.ac_setup})
    pd.DataFrame(sessions_rows).to_csv(root / sub / f"{sub}_sessions.tsv", sep="\t",
                                       index=False, lineterminator="\n")
    write_json(root / sub / f"{sub}_sessions.json", {
        "platform": {"Description": "PET platform of the session",
                     "Levels": {"PET-CT": "PET with CT", "PET-MR": "simultaneous PET and MRI"}},
        "scanner": {"Description": "scanner model (ManufacturersModelName)"},
        "ac_setup": {"Description": "attenuation-correction setup (bids_harmonize/data/"
                                    "acsetups.tsv)"},
    })

    # ---- truth
    aff = subject.affine
    queue(truth / "anat" / f"{sub}_space-ref_dseg.nii.gz", subject.labels, aff,
                dtype=np.int16)
    queue(truth / "anat" / f"{sub}_space-ref_desc-brain_mask.nii.gz",
                subject.brain_mask.astype(np.uint8), aff, dtype=np.uint8)
    for cls, arr in subject.tissue.items():
        queue(truth / "anat" / f"{sub}_space-ref_label-{cls}_probseg.nii.gz", arr, aff)
    queue(truth / "anat" / f"{sub}_space-ref_desc-true_mumap.nii.gz", subject.mu_true,
                aff)
    queue(truth / "anat" / f"{sub}_space-ref_desc-mrac_mumap.nii.gz", subject.mu_mr, aff)
    queue(truth / "anat" / f"{sub}_space-ref_desc-true_CT.nii.gz", subject.ct_hu, aff,
                dtype=np.int16)
    for name, td in tracer_data.items():
        for ses in SESSIONS:
            f = td["doses"][ses] / td["doses"]["petct"]
            queue(truth / "pet" / f"{sub}_ses-{ses}_trc-{name}_space-ref_desc-true_pet.nii.gz",
                        subject.activity[name] * np.float32(f), aff)
            recon = subject.pet_ct[name] if ses == "petct" else subject.pet_mr[name]
            queue(truth / "pet"
                  / f"{sub}_ses-{ses}_trc-{name}_space-ref_desc-recon_pet.nii.gz", recon,
                  aff, dtype=np.int16)
    # gzip releases the GIL: compress the images on two threads (files are independent)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: write_nifti(*job[0], **job[1]), jobs))
    # timings are not reproducible: keep them out of the files
    params = {k: v for k, v in p.items() if k not in ("timing_s", "cpu_s")}
    params["reference_affine"] = aff.tolist()
    params["sessions"] = {
        ses: {"platform": st.platform, "manufacturer": st.manufacturer, "model": st.model,
              "attenuation_correction": st.attenuation_correction,
              "ac_setup": st.ac_setup, "software_versions": st.software_versions,
              "psf_fwhm_mm": st.psf_fwhm_mm, "rotation_deg": list(st.rotation_deg),
              "translation_mm": list(st.translation_mm), "pose": st.pose.tolist(),
              "to_ref_affines": to_ref[ses]}
        for ses, st in subject.sessions.items()}
    write_json(truth / f"{sub}_desc-truth_params.json", params)

    rows = []
    for r in subject.regional:
        for ses in SESSIONS:
            true_mean = r[f"true_{ses}"]
            recon_mean = r[ses]
            rows.append({
                "participant_id": sub, "session": ses,
                "ac_setup": subject.sessions[ses].ac_setup, "tracer": r["tracer"],
                "index": r["index"], "region": r["region"], "voxels": r["voxels"],
                "true_mean": true_mean, "recon_mean": recon_mean,
                "recovery": r[f"{ses}_recovery"],
                "ratio_petmr_petct": r["ratio_petmr_petct"] if ses == "petmr" else 1.0,
            })
    table = pd.DataFrame(rows)
    table.to_csv(truth / f"{sub}_desc-truth_regional.tsv", sep="\t", index=False,
                 lineterminator="\n", float_format="%.6g", na_rep="n/a")
    return table
