"""The simulator's public data model: :class:`SynthConfig` and :class:`SimulatedSubject`.

Everything that :func:`simulate_subject` returns lives on **one common grid**,
the subject's *reference anatomy grid*:

- RAS+ orientation, isotropic voxels of ``config.resolution_mm`` (2 mm default);
- the grid of nilearn's MNI152 2009a template at that resolution, padded
  (``template.PAD_VOXELS_2MM``) so that the whole head fits (face, skull base,
  upper neck).  World coordinates are "subject millimetres": the subject's own
  (deformed, scaled, atrophied) head, roughly centred like MNI but **not** in
  MNI space;
- ``SimulatedSubject.affine`` is its voxel-to-world matrix.

Every array is indexed ``[i, j, k]`` with ``i`` → right, ``j`` → anterior,
``k`` → superior and shares ``SimulatedSubject.shape``; the reconstructed PET
images of both sessions are resampled back to it, so PET-CT, PET-MR, CT, T1w and
the truth are perfectly aligned (no registration needed).

Units: activity concentration in Bq/mL, decay corrected to the injection time;
attenuation coefficients in 1/cm at 511 keV; CT in Hounsfield units; T1w in
arbitrary scanner units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Default scanner models per platform (names as in ``data/scanners.tsv``).
PETCT_MODELS: tuple[str, ...] = ("Biograph Vision", "Discovery MI")
PETMR_MODELS: tuple[str, ...] = ("Biograph mMR", "SIGNA PET/MR", "uPMR 790")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the simulator (all have defaults; the same config + seed = same data).

    Attributes
    ----------
    resolution_mm
        Voxel size of the reference anatomy grid (and of the T1w/CT images).
        2.0 is the default; 3.0 is faster and coarser.
    petct_models, petmr_models
        Scanner models to draw from (one per subject and platform, by seed).
        Names of ``data/scanners.tsv`` known to :mod:`bids_harmonize.synth.physics`.
    mrac
        MR-based attenuation map of the PET-MR session: ``"dixon"`` (4-class:
        air, fat, soft tissue; bone becomes soft tissue, part of the sinus air is
        missed) or ``"atlas"`` (Dixon plus a blurred, mis-registered atlas bone).
    frame_duration_min
        Duration of each PET frame (minutes).
    pre_window_min
        How long before the tracer's standard window (``tracers.yaml``) the
        acquisition starts.
    n_frames
        Force the number of frames; they end at the window's end (and start no earlier
        than the injection).  ``None``: frames from ``pre_window_min`` before the
        window to its end.
    dynamic
        Acquire from injection (0 min) with 1-2-5 min frames and a small head
        drift between frames instead of the static protocol.
    motion
        Different rigid head position in each session (a few degrees and mm).
    noise
        Poisson noise on the sinograms (``False`` gives noiseless reconstructions).
    count_scale
        Multiplies the number of detected counts (1.0 ≈ clinical count levels).
    n_angles
        Projection angles over 180 degrees of the 2-D parallel-beam projector.
    mr_soft_tissue_mu
        Attenuation (1/cm) the MR-based map gives soft tissue (brain included): 0.100,
        the value of Siemens' Dixon map (Martinez-Moller et al. 2009), by default; 0.096
        (water) adds a uniform under-correction, as the CT gives brain about 0.099.
    """

    resolution_mm: float = 2.0
    petct_models: tuple[str, ...] = PETCT_MODELS
    petmr_models: tuple[str, ...] = PETMR_MODELS
    mrac: str = "dixon"
    frame_duration_min: float = 5.0
    pre_window_min: float = 10.0
    n_frames: int | None = None
    dynamic: bool = False
    motion: bool = True
    noise: bool = True
    count_scale: float = 1.0
    n_angles: int = 96
    mr_soft_tissue_mu: float = 0.100

    def __post_init__(self):
        if self.mrac not in ("dixon", "atlas"):
            raise ValueError(f"mrac must be 'dixon' or 'atlas', not {self.mrac!r}")
        if not 1.0 <= self.resolution_mm <= 4.0:
            raise ValueError("resolution_mm must be between 1 and 4 mm")
        if not self.petct_models or not self.petmr_models:
            raise ValueError("at least one PET-CT and one PET-MR scanner model is needed")
        if self.n_frames is not None and self.n_frames < 1:
            raise ValueError("n_frames must be at least 1")
        if self.frame_duration_min <= 0 or self.pre_window_min < 0:
            raise ValueError("frame duration must be positive and pre_window_min >= 0")
        if self.count_scale <= 0:
            raise ValueError("count_scale must be positive")
        if self.n_angles < 8:
            raise ValueError("n_angles must be at least 8")
        if not 0.0 < self.mr_soft_tissue_mu < 0.2:
            raise ValueError("mr_soft_tissue_mu must be between 0 and 0.2 1/cm")


@dataclass
class SessionTruth:
    """What happened in one session (``petct`` or ``petmr``) of one subject.

    ``pose`` is the 4x4 rigid transform from reference-grid world coordinates
    (subject mm) to the scanner's world coordinates of that session:
    ``x_scanner = pose @ x_subject``.  The session's native images (CT or T1w, PET)
    carry affines in scanner coordinates, so ``inv(pose) @ native_affine`` maps their
    voxels to subject millimetres.
    """

    session: str  # "petct" | "petmr"
    platform: str  # "PET-CT" | "PET-MR"
    manufacturer: str
    model: str
    attenuation_correction: str  # text written to the sidecar
    psf_fwhm_mm: float
    pose: np.ndarray  # 4x4
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]


@dataclass
class SimulatedSubject:
    """One simulated subject with a same-day PET-CT and PET-MR session, on one grid.

    Attributes (arrays have shape ``shape`` unless said otherwise)
    ----------
    subject
        BIDS label, ``f"{index:02d}"``.
    index, seed
        Arguments of :func:`simulate_subject`.
    affine
        4x4 voxel-to-world matrix of the reference anatomy grid (RAS+, mm).
    t1w
        T1-weighted MRI as acquired (skull, scalp, bias field, Rician noise), float32.
    ct_hu
        CT in Hounsfield units (air -1000, fat -100, brain ~35, bone up to ~1800), float32.
    mu_true
        True linear attenuation at 511 keV (1/cm): bilinear conversion (Carney 2006) of the
        noiseless CT (``ct_hu`` is the same CT with acquisition noise).
    mu_mr
        The MR-based attenuation map the PET-MR used (``config.mrac``), 1/cm.
    labels
        Synth atlas label map (int16, 0 = outside the brain, 1..24 as in
        ``data/atlas-synth_dseg.tsv``).
    brain_mask
        Brain (grey + white matter + ventricles, no extracerebral CSF), bool.
    tissue
        Tissue probability maps ``{"GM", "WM", "CSF"}`` (float32, 0..1).
    activity
        ``{tracer: true activity concentration}`` averaged over the tracer's standard
        window (Bq/mL, decay corrected to injection), float32.
    pet_ct, pet_mr
        ``{tracer: reconstructed static PET}`` (window-averaged frames, Bq/mL, decay
        corrected) of each session, resampled to this grid. Same window and frames as
        the BIDS files; PET-MR / PET-CT differences come from attenuation
        correction, PSF, voxel grid and noise.  ``pet_mr`` is rescaled to the PET-CT
        session's injected dose, so ``pet_mr / pet_ct`` and ``pet_ct / activity`` are
        pure platform / recovery effects (the BIDS files keep each session's own dose).
    params
        True parameters: demographics (age, sex, weight_kg), latent disease
        (``centiloid``, ``amyloid_positive``, ``braak_stage``, ``fdg_hypometabolism``,
        ``dat_loss``), anatomy (scaling, atrophy, skull thickness), scanners, MR-AC
        details, and per tracer ``params["tracers"][T]`` (injected MBq per session,
        target SUVR/Centiloid/SBR, window, expected counts per frame and
        ``true_measures``: SUVR of composites, Centiloid, SBR measured on ``activity``
        with ``labels``).  ``timing_s`` / ``cpu_s`` hold the run time per stage.
    sessions
        ``{"petct": SessionTruth, "petmr": SessionTruth}``.
    regional
        Per-region table rows (list of dicts): tracer, label, name, true mean,
        PET-CT mean, PET-MR mean, PET-MR/PET-CT ratio (what the truth TSV holds).
    """

    subject: str
    index: int
    seed: int
    affine: np.ndarray
    t1w: np.ndarray
    ct_hu: np.ndarray
    mu_true: np.ndarray
    mu_mr: np.ndarray
    labels: np.ndarray
    brain_mask: np.ndarray
    tissue: dict[str, np.ndarray] = field(default_factory=dict)
    activity: dict[str, np.ndarray] = field(default_factory=dict)
    pet_ct: dict[str, np.ndarray] = field(default_factory=dict)
    pet_mr: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    sessions: dict[str, SessionTruth] = field(default_factory=dict)
    regional: list[dict] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the reference anatomy grid."""
        return tuple(self.labels.shape)

    @property
    def tracers(self) -> list[str]:
        """Tracers simulated for this subject (keys of ``tracers.yaml``)."""
        return list(self.activity)
