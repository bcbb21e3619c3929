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

from bids_harmonize.synth.consortium import Consortium

#: Default PET-CT scanner models (names as in ``data/scanners.tsv``).
PETCT_MODELS: tuple[str, ...] = ("Biograph Vision", "Discovery MI")
#: Default PET-MR attenuation-correction setups (names of ``data/acsetups.tsv``), assigned
#: to subjects in turn: like a 3-site, 4-setup consortium (site A's Biograph mMR before and
#: after its VE11 upgrade, site B's SIGNA PET/MR with ZTE, site C's SIGNA with the atlas).
PETMR_SETUPS: tuple[str, ...] = ("dixon-nobone", "dixon-bone", "zte", "atlas")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the simulator (all have defaults; the same config + seed = same data).

    Attributes
    ----------
    resolution_mm
        Voxel size of the reference anatomy grid (and of the T1w/CT images).
        2.0 is the default; 3.0 is faster and coarser.
    petct_models
        PET-CT scanner models to draw from (one per subject, by seed).
        Names of ``data/scanners.tsv`` known to :mod:`bids_harmonize.synth.physics`.
    petmr_setups
        PET-MR attenuation-correction setups (``data/acsetups.tsv``: ``dixon-nobone``,
        ``dixon-bone``, ``zte``, ``atlas``), assigned in turn: subject ``i`` gets
        ``petmr_setups[(i - 1) % len(petmr_setups)]``.  The setup fixes the PET-MR
        scanner model, its software version, the ``AttenuationCorrection`` text and how
        the scanner's μ-map is made from the true anatomy (:mod:`~bids_harmonize.synth.mrac`).
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
    oblique
        PET-MR attenuation-correction error averaged over the oblique (ring-difference)
        lines of a 3-D acquisition (``physics.oblique_ratio``); ``False``: in-plane only.
    petmr_delay_min
        Same-day protocol timing: the PET-MR scan starts this many minutes later after
        its injection than the PET-CT scan (frames shifted; the true uptake drifts by the
        tracer's kinetic model, ``uptake.SUVR_DRIFT_PER_MIN``).  0 (default): same timing.
    consortium
        A :class:`~bids_harmonize.synth.consortium.Consortium` (``None``, the default: no
        sites).  Subject ``i`` then belongs to ``consortium.site_for(i)``, whose PET-CT
        model, PET-MR setups, PET-MR delay, count levels and institution replace
        ``petct_models``, ``petmr_setups`` and ``petmr_delay_min``; the cohort (when the
        consortium has one) draws amyloid status and Centiloid.
    session_sd
        Between-session (test-retest) variability: in each session, the brain-to-reference
        uptake ratio of each tracer is multiplied by ``exp(N(0, session_sd))``, drawn
        independently for the PET-CT and the PET-MR session
        (``uptake.session_window_image``).  0 (default): the same true uptake in both
        sessions.  A consortium site's ``protocol.session_sd`` replaces it.  Off when
        ``noise`` is ``False``.
    """

    resolution_mm: float = 2.0
    petct_models: tuple[str, ...] = PETCT_MODELS
    petmr_setups: tuple[str, ...] = PETMR_SETUPS
    frame_duration_min: float = 5.0
    pre_window_min: float = 10.0
    n_frames: int | None = None
    dynamic: bool = False
    motion: bool = True
    noise: bool = True
    count_scale: float = 1.0
    n_angles: int = 96
    oblique: bool = True
    petmr_delay_min: float = 0.0
    consortium: Consortium | None = None
    session_sd: float = 0.0

    def __post_init__(self):
        from bids_harmonize.acsetups import get_setup

        if not self.petmr_setups:
            raise ValueError("at least one PET-MR attenuation-correction setup is needed")
        for name in self.petmr_setups:
            if get_setup(name).platform != "PET-MR":  # unknown names raise ValueError
                raise ValueError(f"setup {name!r} is not a PET-MR setup")
        if not 1.0 <= self.resolution_mm <= 4.0:
            raise ValueError("resolution_mm must be between 1 and 4 mm")
        if not self.petct_models:
            raise ValueError("at least one PET-CT scanner model is needed")
        if self.n_frames is not None and self.n_frames < 1:
            raise ValueError("n_frames must be at least 1")
        if self.frame_duration_min <= 0 or self.pre_window_min < 0:
            raise ValueError("frame duration must be positive and pre_window_min >= 0")
        if self.count_scale <= 0:
            raise ValueError("count_scale must be positive")
        if not 0.0 <= self.petmr_delay_min <= 120.0:
            raise ValueError(f"petmr_delay_min must be between 0 and 120 min, not "
                             f"{self.petmr_delay_min}")
        from bids_harmonize.synth.uptake import MAX_SESSION_SD

        if not 0.0 <= self.session_sd <= MAX_SESSION_SD:
            raise ValueError(f"session_sd must be between 0 and {MAX_SESSION_SD:g}, not "
                             f"{self.session_sd}")
        if self.n_angles < 8:
            raise ValueError("n_angles must be at least 8")


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
    ac_setup: str  # name of data/acsetups.tsv ("ct" for PET-CT)
    software_versions: str
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
        The MR-based attenuation map the PET-MR scanner used (its setup's mechanism,
        ``sessions["petmr"].ac_setup``), 1/cm, patient only (no MR hardware).
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
