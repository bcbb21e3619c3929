"""One participant plan: every decision about a participant, taken once, before any graph.

Discovery (:func:`bids_harmonize.bids.discover`) finds and checks the inputs and returns a
:class:`~bids_harmonize.bids.SubjectPlan` per subject. :func:`plan` turns those, with the
run's :class:`Settings`, into frozen :class:`ParticipantPlan` objects whose
:class:`SeriesPlan` hold everything the workflow factories need: the tracer, the uptake
window and its policy, the body weight and where it came from, the attenuation-correction
setup, the series' one key, whether it is harmonized, the model's facts (read once) and the
base sidecar. The factories of :mod:`bids_harmonize.workflows.base` read only a plan and the
settings; nothing there reads the disk or resolves a tracer again.

>>> s = Settings(bids_dir=Path("/d"), output_dir=Path("/o"), template=None)
>>> s.window_policy, s.model_dir, s.quantify["atlas"]
('strict', None, 'synth')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bids_harmonize.bids import InputError, PetSeries, SubjectPlan, bids_uri
from bids_harmonize.derivatives import build_name, parse_name, with_tracer
from bids_harmonize.petmath import body_weight
from bids_harmonize.provenance import software_versions
from bids_harmonize.resolution import ResolutionError, resolution_record
from bids_harmonize.tracers import Tracer, get_tracer, session_window
from bids_harmonize.workflows.outputs import pet_base_metadata


@dataclass(frozen=True)
class Settings:
    """The run's settings that shape the participant graph (from :class:`RunConfig`).

    Made once per run by :meth:`from_config`; the workflow factories take it whole.
    """

    bids_dir: Path
    output_dir: Path
    #: :class:`bids_harmonize.templates.TemplateFiles` of the output template
    template: Any
    #: the harmonization model; ``None``: no harmonization
    model_dir: Path | None = None
    device: str = "auto"
    sloppy: bool = False
    seed: int = 0
    omp_nthreads: int = 1
    #: ``{tracer or ses-<label>:<tracer>: [start, end]}`` (minutes), the user's
    uptake_windows: dict = field(default_factory=dict)
    window_policy: str = "strict"
    atlas: str = "synth"
    atlas_labels: Path | None = None
    centiloid_vois: Path | None = None
    ood_policy: str = "warn"
    #: ``--common-resolution`` (FWHM, mm) and the user's ``{scanner model: mm}``
    common_resolution: float | None = None
    scanner_resolutions: dict | None = None

    @classmethod
    def from_config(cls, config, *, template, model_dir: Path | None) -> Settings:
        """The settings of a :class:`~bids_harmonize.config.RunConfig`, with the template
        and model the run resolved (:func:`bids_harmonize.app.participant.resolve_model_dir`)."""
        return cls(
            bids_dir=config.bids_dir, output_dir=config.output_dir, template=template,
            model_dir=model_dir, device=config.device, sloppy=config.sloppy, seed=config.seed,
            omp_nthreads=config.omp_nthreads, uptake_windows=dict(config.uptake_windows or {}),
            window_policy=config.window_policy, atlas=config.atlas,
            atlas_labels=config.atlas_labels, centiloid_vois=config.centiloid_vois,
            ood_policy=config.ood_policy,
            common_resolution=config.common_resolution or None,
            scanner_resolutions=(config.scanner_resolutions
                                 if config.common_resolution else None),
        )

    @property
    def quantify(self) -> dict:
        """The keyword arguments every :func:`~bids_harmonize.workflows.quantify.init_quantify_wf`
        of the run shares."""
        return {"output_dir": self.output_dir, "atlas": self.atlas,
                "atlas_labels": self.atlas_labels, "centiloid_vois": self.centiloid_vois}


@dataclass(frozen=True)
class ModelFacts:
    """What the graph needs to know of the harmonization model, read once from its card.

    The card is read, nothing verified: the run's pre-flight (``load_model``) did that.
    """

    path: Path
    #: the card lists ensemble members: uncertainty outputs and member tables
    with_uncertainty: bool = False
    #: ``model_name``, ``model_version``, ``model_trained_on`` for the methods text; empty
    #: when there is no readable card
    methods: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def read(cls, model_dir) -> ModelFacts:
        """
        >>> ModelFacts.read("/nonexistent").with_uncertainty
        False
        """
        from bids_harmonize.harmonizer.uncertainty import card_uncertainty
        from bids_harmonize.harmonizer.weights import CARD_NAME, HarmonizerModel

        path = Path(model_dir)
        try:
            card = json.loads((path / CARD_NAME).read_text())
        except (OSError, ValueError):
            card = None
        if not isinstance(card, dict):
            return cls(path=path)
        model = HarmonizerModel(path=path, card=card, card_sha256="", net=None)
        return cls(path=path, with_uncertainty=bool(card_uncertainty(card).get("members")),
                   methods=MappingProxyType({"model_name": str(model.name),
                                             "model_version": model.version,
                                             "model_trained_on": model.trained_on,
                                             "model_guard": bool(card.get("guard"))}))


@dataclass(frozen=True)
class SeriesPlan:
    """One PET series of a participant, with every decision about it taken."""

    #: discovery's record: file, sidecar, platform, CT, attenuation setup
    series: PetSeries
    #: the one key of the series (graph branch and node names): :attr:`PetSeries.key`
    key: str
    tracer: Tracer
    #: uptake window (minutes after injection) and what to do when frames miss it
    window: tuple[float, float] | None
    window_policy: str
    #: ``(kg or None, where it came from)``
    body_weight: tuple[float | None, str]
    #: ``--common-resolution``: the smoothing record of this scanner, else None
    smoothing: MappingProxyType | None
    #: the file name outputs are named after (``trc-`` added when the input has none)
    pet_source: str
    #: PET-MR with a model: harmonized
    harmonize: bool
    #: build-time sidecar metadata shared by every output of the series
    base_meta: MappingProxyType
    #: BIDS URIs of the inputs: the PET, the T1w, and the CT when there is one
    sources: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.series.path

    @property
    def ct(self) -> Path | None:
        return self.series.ct

    @property
    def ct_uri(self) -> str | None:
        """BIDS URI of the paired session's CT."""
        return self.sources[2] if self.series.ct is not None else None

    @property
    def attenuation(self):
        return self.series.attenuation

    @property
    def metadata(self) -> dict:
        return self.series.metadata

    @property
    def model_name(self) -> str:
        return self.series.model_name

    def template_name(self, space: str, desc: str) -> str:
        """File name of this series' image in ``space`` (:func:`template_space_name`)."""
        return template_space_name(self.pet_source, space, desc)


@dataclass(frozen=True)
class ParticipantPlan:
    """What the participant workflow does for one subject."""

    subject: str
    t1w: Path
    t1w_uri: str
    series: tuple[SeriesPlan, ...]
    #: the harmonization model's facts (None: no harmonization this run)
    model: ModelFacts | None
    #: software versions recorded in sidecars and the methods text
    versions: MappingProxyType
    #: spatial references of PET outputs: ``{"T1w": <BIDS URI>, <template>: <file>}``
    references: MappingProxyType


@dataclass(frozen=True)
class Plan:
    """:func:`plan`'s result: participants to run, and those excluded by planning."""

    participants: tuple[ParticipantPlan, ...]
    #: participant label -> one line per problem (``--common-resolution``)
    excluded: MappingProxyType


def plan(subjects: list[SubjectPlan], settings: Settings) -> Plan:
    """Plan every subject: resolve each PET series once (see :class:`SeriesPlan`).

    A subject whose scanner has no known effective resolution, or one coarser than
    ``--common-resolution``, is excluded with one line per series. Two series with one key
    are an :class:`~bids_harmonize.bids.InputError` naming both files.
    """
    model = ModelFacts.read(settings.model_dir) if settings.model_dir is not None else None
    versions = MappingProxyType(software_versions())
    planned, excluded = [], {}
    for subject in subjects:
        problems = []
        series = []
        t1w_uri = bids_uri(subject.t1w, settings.bids_dir)
        for pet in subject.pet:
            try:
                series.append(plan_series(subject, pet, settings, model=model,
                                          versions=versions, t1w_uri=t1w_uri))
            except ResolutionError as exc:
                problems.append(f"{pet.path.name}: --common-resolution: {exc}")
        if problems:
            excluded[subject.subject] = problems
            continue
        _check_series_keys(series)
        references = {"T1w": t1w_uri,
                      settings.template.name: f"tpl-{settings.template.name}_res-02_T1w.nii.gz"}
        planned.append(ParticipantPlan(
            subject=subject.subject, t1w=subject.t1w, t1w_uri=t1w_uri, series=tuple(series),
            model=model, versions=versions, references=MappingProxyType(references)))
    return Plan(tuple(planned), MappingProxyType(excluded))


def plan_series(subject: SubjectPlan, series: PetSeries, settings: Settings, *,
                model: ModelFacts | None, versions, t1w_uri: str) -> SeriesPlan:
    """One :class:`SeriesPlan`; raises :class:`~bids_harmonize.resolution.ResolutionError`
    when ``--common-resolution`` cannot be met for its scanner."""
    # discovery resolved the tracer and window while checking the frames; a series made by
    # hand (tests, notebooks) is resolved here
    tracer = series.tracer_record or get_tracer(series.tracer)
    window = (series.uptake_window if series.tracer_record is not None
              else session_window(settings.uptake_windows, tracer, series.session))
    weight = body_weight(settings.bids_dir, subject.subject, series.session, series.metadata)
    sources = [bids_uri(series.path, settings.bids_dir), t1w_uri]
    if series.ct is not None:
        sources.append(bids_uri(series.ct, settings.bids_dir))
    base_meta = pet_base_metadata(
        series, tracer=tracer, sources=sources, software=dict(versions),
        settings={"sloppy": settings.sloppy, "seed": settings.seed,
                  "template": settings.template.name,
                  "uptake_window_min": list(window) if window else None,
                  "window_policy": settings.window_policy, "body_weight_source": weight[1]},
    )
    smoothing = None
    if settings.common_resolution:  # --common-resolution: recorded in every PET sidecar
        smoothing = resolution_record(series.model_name, settings.common_resolution,
                                      settings.scanner_resolutions)
        base_meta["ResolutionHarmonization"] = smoothing
    if series.attenuation is not None:  # PET-MR: setup, its inference, scanner mu-map
        base_meta.update(series.attenuation.sidecar())
    return SeriesPlan(
        series=series, key=series.key, tracer=tracer, window=window,
        window_policy=settings.window_policy, body_weight=weight,
        smoothing=smoothing,
        pet_source=naming_source(series),
        harmonize=series.platform == "PET-MR" and model is not None,
        base_meta=MappingProxyType(base_meta), sources=tuple(sources),
    )


def _check_series_keys(series: list[SeriesPlan]) -> None:
    """Two PET series with one key would be one graph branch: refuse, naming both files."""
    seen: dict[str, Path] = {}
    for item in series:
        if item.key in seen:
            raise InputError(
                f"{item.path}: same session, tracer and acq/rec/run/task as {seen[item.key]} "
                "(entities outside these do not tell PET series apart); rename or select one "
                "with --bids-filter-file")
        seen[item.key] = item.path


def naming_source(series) -> str:
    """The file name a PET series' outputs are named after: its own, with ``trc-`` added from
    :attr:`~bids_harmonize.bids.PetSeries.tracer_label` when it has none (bids-examples
    pet005), so that the group level finds them; a name with ``trc-`` is kept as it is.

    >>> from types import SimpleNamespace as NS
    >>> naming_source(NS(path=Path("/d/sub-01_ses-a_pet.nii.gz"), tracer_label="AZ10419369"))
    '/d/sub-01_ses-a_trc-AZ10419369_pet.nii.gz'
    """
    return str(with_tracer(series.path, getattr(series, "tracer_label", "")))


def template_space_name(pet: Path, space: str, desc: str) -> str:
    """The file name of a PET image in ``space`` (every entity of the input kept).

    >>> template_space_name(Path("/d/sub-01_ses-a_trc-PiB_rec-OSEM_pet.nii.gz"), "MNI", "preproc")
    'sub-01_ses-a_trc-PiB_rec-OSEM_space-MNI_desc-preproc_pet.nii.gz'
    """
    entities = parse_name(pet)
    if entities is None:  # entities the specification does not know: keep the name as is
        return Path(pet).name.replace("_pet.nii", f"_space-{space}_desc-{desc}_pet.nii")
    entities = {k: v for k, v in entities.items() if k not in ("suffix", "extension")}
    return build_name(f"pet_{desc}", **{**entities, "space": space})
