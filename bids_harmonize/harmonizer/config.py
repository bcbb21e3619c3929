"""Configuration of the three-stage harmonizer (nets and training), as plain dataclasses.

Every field has a default sized for CPU (tests, the demo model); scale ``hidden_size``,
``num_layers``, ``roi_size`` and the step counts up on a GPU. The configuration is
stored in the model card (``model.json``) so that a model rebuilds its nets from it.

>>> cfg = HarmonizerConfig()
>>> cfg.anatomy.token_grid
(4, 4, 4)
>>> HarmonizerConfig.from_dict(cfg.to_dict()) == cfg
True

The stage-3 input layout is declared here once (:data:`INPUT_CHANNELS`,
:attr:`CorrectionConfig.inputs`); the nets, the patch data set, inference and the model
card all read it through :func:`stage3_channels`:

>>> [c.name for c in stage3_channels(cfg.correction)]
['pet', 't1w']
>>> [c.name for c in stage3_channels(cfg.correction, route="voxel")]
['pet']
>>> v2 = cfg.replace(correction={"inputs": ("pet", "t1w", "ac_error")})
>>> [c.name for c in stage3_channels(v2.correction, route="voxel")]
['pet', 'ac_error']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

#: steps per epoch of every stage in :meth:`HarmonizerConfig.site` up to
#: :data:`SITE_RECIPE_SUBJECTS` training subjects; sized on the demo model (12 subjects:
#: about 27 patches of each subject an epoch at batch 8)
SITE_STEPS_PER_EPOCH = 40
#: training subjects the recipe's :data:`SITE_STEPS_PER_EPOCH` were sized for (the demo model)
SITE_RECIPE_SUBJECTS = 12


@dataclass(frozen=True)
class InputChannel:
    """One input channel of stage 3, as the data set, the nets and inference see it.

    ``route`` says where the channel goes: ``"voxel"`` channels are stacked and fed to the
    correction net voxel by voxel; the ``"anatomy"`` channel (the T1w) goes through the
    MRI encoder, whose tokens and pseudo-mu reach the correction net.
    """

    name: str  #: key in the patch dictionaries and in the inference stack
    modality: str
    normalisation: str
    required: bool  #: False: inference fills it in (or zeros) when the data lack it
    route: str = "voxel"

    def describe(self, spacing_mm: float) -> dict:
        """The model-card entry of this channel."""
        return {
            "modality": self.modality,
            "channels": 1,
            "spacing_mm": [spacing_mm] * 3,
            "value_range": self.normalisation,
            "grid": "T1w grid",
            "required": self.required,
            "route": "MRI encoder (stages 1-2) then stage 3" if self.route == "anatomy" else "stage 3",
        }


#: Every stage-3 input channel the package knows; a configuration picks a subset (in order).
INPUT_CHANNELS: dict[str, InputChannel] = {
    c.name: c
    for c in (
        InputChannel("pet", "PET (PET-MR, static, any tracer)", "divided by its brain mean", True),
        InputChannel(
            "t1w", "MR T1w", "divided by its brain mean, clipped to [0, 5]", True, route="anatomy"
        ),
        InputChannel(
            "ac_error",
            "expected attenuation-correction error: log of the ratio of attenuation-correction "
            "factors (pseudo-CT mu over the scanner's mu-map) along lines of response, back in "
            "the image (bids_harmonize.harmonizer.physics)",
            "log ratio, no unit (0 = no expected error)",
            False,
        ),
    )
}

MODEL_SPACING_MM = 2.0  #: voxel size the nets work at (inputs are resampled to it)


def stage3_channels(correction: CorrectionConfig, route: str | None = None) -> list[InputChannel]:
    """The configured stage-3 input channels, in order (``route`` filters them)."""
    unknown = [n for n in correction.inputs if n not in INPUT_CHANNELS]
    if unknown:
        raise ValueError(f"unknown stage-3 input channel(s) {unknown}; known: {list(INPUT_CHANNELS)}")
    chans = [INPUT_CHANNELS[n] for n in correction.inputs]
    return [c for c in chans if route is None or c.route == route]


@dataclass(frozen=True)
class AnatomyConfig:
    """Shared shape of the CT autoencoder (stage 1) and the MRI encoder (stage 2)."""

    roi_size: int = 32  #: cubic patch edge in voxels (2 mm voxels)
    patch_size: int = 8  #: token edge in voxels: the token grid is roi_size // patch_size
    hidden_size: int = 96
    mlp_dim: int = 192
    num_layers: int = 2
    num_heads: int = 4
    decoder_channels: int = 16

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.roi_size // self.patch_size
        return (side, side, side)


@dataclass(frozen=True)
class CorrectionConfig:
    """Stage 3, the residual log-ratio network."""

    channels: tuple[int, ...] = (16, 32)  #: feature channels per resolution level
    anatomy_channels: int = 8  #: token features are projected to this many channels
    use_anatomy: bool = True  #: False gives the image-to-image ablation (PET only)
    max_abs_log_ratio: float = 1.0  #: r is bounded by tanh to +-this value
    downsample: int = 2  #: r is predicted at 1/downsample resolution (low-frequency r)
    norm: str = "none"  #: "none" or "instance" (instance norm hides how much bone a patch has)
    #: stage-3 input channels, names of :data:`INPUT_CHANNELS` ("pet" first); v1 models
    #: have ("pet", "t1w"), physics-guided v2 models add "ac_error"
    inputs: tuple[str, ...] = ("pet", "t1w")
    #: with "ac_error" among the inputs: r = ac_error + learned residual (the net learns
    #: only what the physics map misses); False: ac_error is only an input
    physics_offset: bool = True


@dataclass(frozen=True)
class PhysicsConfig:
    """The expected attenuation-correction error map (:mod:`.physics`), channel ``ac_error``.

    2-D parallel-beam line integrals per axial slice on a grid ``downsample`` times coarser
    than the 2 mm T1w grid, over ``n_angles`` angles in 180 degrees.
    """

    n_angles: int = 32
    downsample: int = 2  #: 2 mm * 2 = 4 mm voxels for the line integrals
    #: FBP form with the PET-MR image as the activity (closer to the scanner's
    #: reconstruction, :func:`~.physics.expected_ac_error`); False: mean over LORs only
    use_activity: bool = True
    axial_axis: int = 2  #: the T1w-grid axis along which slices are taken (RAS+: 2)
    #: training: the true-mu estimate the map is made from: "pseudo_ct" (stage 2's, as at
    #: inference) or "ct" (the paired CT)
    mu_source: str = "pseudo_ct"
    #: which mu-map the estimate is compared with when both are known: "setup" (the map the
    #: session's setup would make from the same pseudo-CT: the pseudo-CT's own errors cancel
    #: outside bone) or "scanner" (the scanner's own mu-map first). "setup" measured better
    #: on every test set of the accuracy benchmark (default settings, 2026-11-28: mean abs
    #: regional bias 2.15 vs 2.80 % seen, 2.75 vs 4.00 % unseen tracers, 2.83 vs 4.28 %
    #: held-out setup; benchmarks/results/accuracy_default_scanner_vs_setup.md), as long
    #: as the stage-2 pseudo-CT is as weak as CPU-scale training makes it (bone Dice ~0.5).
    #: The scanner's map is still used when the setup is not known. Cards written before
    #: this field existed mean "scanner".
    prefer: str = "setup"


@dataclass(frozen=True)
class StageTraining:
    """Optimisation settings of one stage."""

    epochs: int = 2
    steps_per_epoch: int = 8
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (see :mod:`bids_harmonize.harmonizer.losses`)."""

    temperature: float = 0.1  #: InfoNCE temperature (stage 2)
    cosine_weight: float = 1.0  #: stage 2: 1 - cos(MRI token, CT token)
    pseudo_ct_weight: float = 1.0  #: stage 2: L1 of pseudo-mu through the frozen CT decoder
    voxel_weight: float = 1.0  #: stage 3: L1 in the log domain inside the brain mask
    regional_weight: float = 1.0  #: stage 3: |log ratio| of regional means
    smooth_weight: float = 0.1  #: stage 3: squared gradient of r (smoothness prior)
    #: stage 3: regional log bias with the patch's common scale removed (the regional
    #: pattern SUVR reads); 0 in cards written before the field existed
    pattern_weight: float = 1.0


def _stage_default(epochs: int, steps: int, lr: float) -> StageTraining:
    return StageTraining(epochs=epochs, steps_per_epoch=steps, lr=lr)


@dataclass(frozen=True)
class HarmonizerConfig:
    """Everything needed to rebuild and retrain a model."""

    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    stage1: StageTraining = field(default_factory=lambda: _stage_default(2, 8, 1e-3))
    stage2: StageTraining = field(default_factory=lambda: _stage_default(2, 8, 1e-3))
    stage3: StageTraining = field(default_factory=lambda: _stage_default(2, 8, 1e-3))
    seed: int = 0
    mixed_precision: bool = True  #: autocast + GradScaler on CUDA (ignored on CPU)
    mask_dilation: int = 2  #: voxels added around the brain mask for the voxel loss
    uptake_augment: float = 0.3  #: stage 3: std of the log of a smooth random uptake field

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HarmonizerConfig:
        kinds = {
            "anatomy": AnatomyConfig,
            "correction": CorrectionConfig,
            "loss": LossConfig,
            "physics": PhysicsConfig,
            "stage1": StageTraining,
            "stage2": StageTraining,
            "stage3": StageTraining,
        }
        kwargs = {}
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown harmonizer configuration key {key!r}")
            if key in kinds:
                sub = dict(value)
                if key == "physics":  # models trained before the field compared with the scanner's map
                    sub.setdefault("prefer", "scanner")
                if key == "loss":  # models trained before the pattern term had none
                    sub.setdefault("pattern_weight", 0.0)
                for name in ("channels", "inputs"):
                    if name in sub:
                        sub[name] = tuple(sub[name])
                kwargs[key] = kinds[key](**sub)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def tiny(cls) -> HarmonizerConfig:
        """The smallest configuration: unit tests, and their training time in the benchmark.

        >>> HarmonizerConfig.tiny().anatomy.roi_size
        16
        """
        return cls().replace(
            anatomy={"roi_size": 16, "patch_size": 4, "hidden_size": 32, "mlp_dim": 64,
                     "num_layers": 1, "num_heads": 2, "decoder_channels": 8},
            correction={"channels": (8, 16), "anatomy_channels": 4},
            **{stage: {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2}
               for stage in ("stage1", "stage2", "stage3")},
        )

    @classmethod
    def site(cls, steps_scale: float = 1.0, batch_size: int = 8,
             subjects: int | None = None) -> HarmonizerConfig:
        """What the ``train`` level fits by default, and the shipped demo model: the
        physics-guided configuration (stage 3 gets the expected attenuation-correction error,
        channel ``ac_error``), 8/8/10 epochs of ``batch_size`` patches a step.

        An epoch has :data:`SITE_STEPS_PER_EPOCH` steps for up to
        :data:`SITE_RECIPE_SUBJECTS` training ``subjects`` (the demo model's), and grows in
        proportion beyond them, so every subject is drawn about as often however large the
        cohort (the paper-size benchmark's 24 training subjects at 40 steps left
        dixon-nobone uncorrected, at 80 steps it is corrected; see benchmarks/README.md).
        ``steps_scale`` multiplies the result (epochs stay). On 2 CPU cores 12 subjects
        take about 10 minutes; a GPU takes ``batch_size`` 16 at about the same cost per step.

        >>> cfg = HarmonizerConfig.site(steps_scale=0.5)
        >>> cfg.correction.inputs, cfg.stage3.steps_per_epoch, cfg.stage3.batch_size
        (('pet', 't1w', 'ac_error'), 20, 8)
        >>> [HarmonizerConfig.site(subjects=n).stage1.steps_per_epoch for n in (2, 12, 33)]
        [40, 40, 110]
        """
        return cls().replace(
            correction={"inputs": ("pet", "t1w", "ac_error")},
            **{stage: {"epochs": epochs, "batch_size": batch_size, "lr": 2e-3,
                       "steps_per_epoch": site_steps_per_epoch(subjects, steps_scale)}
               for stage, epochs in (("stage1", 8), ("stage2", 8), ("stage3", 10))},
        )

    def replace(self, **changes) -> HarmonizerConfig:
        """A copy with top-level fields changed; nested ones as dicts of changes.

        >>> HarmonizerConfig().replace(stage1={"epochs": 5}).stage1.epochs
        5
        """
        data = self.to_dict()
        for key, value in changes.items():
            if isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return HarmonizerConfig.from_dict(data)


def site_steps_per_epoch(subjects: int | None, steps_scale: float = 1.0) -> int:
    """Steps per epoch of the site recipe: :data:`SITE_STEPS_PER_EPOCH`, times
    ``subjects / SITE_RECIPE_SUBJECTS`` when there are more training subjects than that,
    times ``steps_scale``; at least 1.

    >>> site_steps_per_epoch(None), site_steps_per_epoch(36), site_steps_per_epoch(36, 0.1)
    (40, 120, 12)
    >>> site_steps_per_epoch(5, 0.001)
    1
    """
    per_subject = max(1.0, (subjects or 0) / SITE_RECIPE_SUBJECTS)
    return max(1, int(round(SITE_STEPS_PER_EPOCH * per_subject * steps_scale)))
