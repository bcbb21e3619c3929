"""Top-level workflows: the whole run and one subject."""

from __future__ import annotations

from pathlib import Path

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.bids import InputError, SubjectPlan, bids_uri
from bids_harmonize.derivatives import build_name, node_key, parse_name, with_tracer
from bids_harmonize.harmonizer.uncertainty import model_has_ensemble
from bids_harmonize.petmath import body_weight
from bids_harmonize.provenance import software_versions
from bids_harmonize.resolution import resolution_record
from bids_harmonize.templates import TemplateFiles
from bids_harmonize.tracers import get_tracer, session_window
from bids_harmonize.workflows.anat import init_anat_wf
from bids_harmonize.workflows.harmonize import init_harmonize_wf
from bids_harmonize.workflows.outputs import (
    init_anat_reports_wf,
    init_ds_anat_wf,
    init_ds_ct_wf,
    init_ds_harmonization_wf,
    init_ds_pet_wf,
    init_pet_reports_wf,
    pet_base_metadata,
)
from bids_harmonize.workflows.pet import init_pet_wf
from bids_harmonize.workflows.quantify import init_quantify_wf

#: Anatomical outputs every PET branch takes (``anat_wf`` outputnode fields).
_ANAT_TO_PET = ("t1w_preproc", "brain_mask", "t1w2tpl_xfm", "template_t1w")


def init_bids_harmonize_wf(plans: list[SubjectPlan], *, name: str = "bids_harmonize_wf",
                           **subject_kwargs) -> Workflow:
    """All subjects of a run, each in its own sub-workflow (see :func:`init_single_subject_wf`).

    .. workflow::

        from bids_harmonize.workflows.base import init_bids_harmonize_wf
        wf = init_bids_harmonize_wf([])
    """
    workflow = Workflow(name=name)
    for plan in plans:
        workflow.add_nodes([init_single_subject_wf(plan, **subject_kwargs)])
    return workflow


def init_single_subject_wf(
    plan: SubjectPlan, *, bids_dir: Path, output_dir: Path, template: TemplateFiles,
    model_dir: Path | None = None, device: str = "auto", sloppy: bool = False, seed: int = 0,
    omp_nthreads: int = 1, uptake_windows: dict | None = None, window_policy: str = "strict",
    atlas: str = "synth",
    atlas_labels: Path | None = None, centiloid_vois: Path | None = None,
    ood_policy: str = "warn", name: str | None = None,
    common_resolution: float | None = None, scanner_resolutions: dict | None = None,
) -> Workflow:
    """Preprocess, harmonize and quantify every PET series of one subject.

    The stages: anatomy (:func:`~bids_harmonize.workflows.anat.init_anat_wf`) and its
    outputs; then per PET series (keyed by every entity of its name, so ``run-1`` and
    ``run-2`` of one session are two branches): PET preprocessing, its outputs, reports
    and regional tables; the CT of a paired session; and on PET-MR, harmonization with its
    outputs and tables. Outputs are written by the factories of
    :mod:`bids_harmonize.workflows.outputs`.

    Parameters
    ----------
    plan
        The subject's T1w and PET series (from :func:`bids_harmonize.bids.discover`).
    bids_dir, output_dir
        Input dataset and derivatives folder.
    template
        The output template's files.
    model_dir
        Harmonization model; ``None`` runs no harmonization.
    uptake_windows
        Per-tracer overrides of the uptake window ``{tracer: [start, end]}`` (minutes);
        a key ``ses-<label>:<tracer>`` sets one session's window.
    window_policy
        ``strict`` or ``nearest`` (:func:`bids_harmonize.petmath.select_frames`).
    atlas, atlas_labels, centiloid_vois
        Regions for quantification (see :mod:`bids_harmonize.quant.atlases`).
    ood_policy
        What an image out of the model's distribution gets: ``warn``, ``passthrough`` or
        ``fail`` (:mod:`bids_harmonize.harmonizer.ood`).
    common_resolution, scanner_resolutions
        ``None`` (default): no smoothing. Else every PET is smoothed to this effective
        resolution (FWHM, mm) from its scanner's (:mod:`bids_harmonize.resolution`; the
        user's ``{model: mm}`` first) before registration and quantification.

    .. workflow::

        from pathlib import Path
        from bids_harmonize.bids import SubjectPlan
        from bids_harmonize.templates import get_template
        from bids_harmonize.workflows.base import init_single_subject_wf
        tpl = get_template("MNI152NLin2009aSym")  # bids_harmonize-templates caches it offline
        wf = init_single_subject_wf(SubjectPlan("01", Path("/d/sub-01/anat/sub-01_T1w.nii.gz")),
                                    bids_dir=Path("/d"), output_dir=Path("/o"), template=tpl)
    """
    uptake_windows = uptake_windows or {}
    workflow = Workflow(name=name or f"sub_{plan.subject}_wf")
    versions = software_versions()
    workflow.__desc__ = (
        f"Results were produced with *bids_harmonize* {versions['bids_harmonize']}, "
        f"a Nipype {versions['nipype']} [@nipype] workflow"
        + (", run with `--sloppy`: fast, low-accuracy registration and correction settings "
           "meant for tests and demonstrations, not for analysis." if sloppy else ".")
    )
    t1w_uri = bids_uri(plan.t1w, bids_dir)

    # Anatomy
    anat_wf = init_anat_wf(template=template, sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads)
    anat_wf.inputs.inputnode.t1w = str(plan.t1w)
    ds_anat_wf = init_ds_anat_wf(output_dir=output_dir, t1w_source=plan.t1w,
                                 template_name=template.name, sources=[t1w_uri])
    anat_reports_wf = init_anat_reports_wf(output_dir=output_dir, t1w_source=plan.t1w,
                                           template_name=template.name,
                                           template_mask=template.brain_mask)
    workflow.connect([
        (anat_wf, ds_anat_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in (
            "t1w_preproc", "brain_mask", "tissue_probseg", "t1w2tpl_xfm", "tpl2t1w_xfm")]),
        (anat_wf, anat_reports_wf, [("outputnode.tpl_t1w", "inputnode.tpl_t1w")]),
    ])  # fmt: skip

    # PET, one branch per series (keyed by every entity of its file name)
    ctx = {"bids_dir": bids_dir, "output_dir": output_dir, "template": template,
           "t1w_uri": t1w_uri, "versions": versions, "sloppy": sloppy, "seed": seed,
           "omp_nthreads": omp_nthreads, "uptake_windows": uptake_windows,
           "window_policy": window_policy, "model_dir": model_dir, "device": device,
           "ood_policy": ood_policy, "common_resolution": common_resolution,
           "scanner_resolutions": scanner_resolutions,
           "references": {"T1w": t1w_uri,
                          template.name: f"tpl-{template.name}_res-02_T1w.nii.gz"},
           "quantify": {"output_dir": output_dir, "atlas": atlas, "atlas_labels": atlas_labels,
                        "centiloid_vois": centiloid_vois}}
    _check_series_keys(plan.pet)
    for series in plan.pet:
        pet_wf, base_meta = _pet_stage(workflow, anat_wf, plan, series, ctx)
        if series.ct is not None:
            _ct_stage(workflow, anat_wf, pet_wf, series, ctx)
        if series.platform == "PET-MR" and model_dir is not None:
            _harmonization_stage(workflow, anat_wf, pet_wf, series, base_meta, ctx)
    return workflow


def _pet_stage(workflow, anat_wf, plan, series, ctx: dict):
    """One PET series: preprocessing, its outputs (sidecars), report figures, regional tables.

    Returns the series' PET workflow and its build-time sidecar metadata.
    """
    key = series_key(series)
    tracer = get_tracer(series.tracer)
    bids_dir, output_dir, template = ctx["bids_dir"], ctx["output_dir"], ctx["template"]
    sloppy, seed, omp_nthreads = ctx["sloppy"], ctx["seed"], ctx["omp_nthreads"]
    window_policy = ctx["window_policy"]
    window = session_window(ctx["uptake_windows"], tracer, series.session)
    weight = body_weight(bids_dir, plan.subject, series.session, series.metadata)
    pet_source = naming_source(series)  # output names (the data input is series.path)
    sources = [bids_uri(series.path, bids_dir), ctx["t1w_uri"]]
    if series.ct is not None:
        sources.append(bids_uri(series.ct, bids_dir))
    base_meta = pet_base_metadata(
        series, tracer=tracer, sources=sources, software=ctx["versions"],
        settings={"sloppy": sloppy, "seed": seed, "template": template.name,
                  "uptake_window_min": list(window) if window else None,
                  "window_policy": window_policy, "body_weight_source": weight[1]},
    )
    smoothing = None
    if ctx["common_resolution"]:  # --common-resolution: recorded in every PET sidecar
        smoothing = resolution_record(series.model_name, ctx["common_resolution"],
                                      ctx["scanner_resolutions"])
        base_meta["ResolutionHarmonization"] = smoothing
    if series.attenuation is not None:  # PET-MR: setup, its inference, scanner mu-map
        base_meta.update(series.attenuation.sidecar())

    pet_wf = init_pet_wf(
        metadata=series.metadata, window_min=window, half_life_min=tracer.half_life_min,
        window_policy=window_policy, body_weight=weight, common_resolution=smoothing,
        has_ct=series.ct is not None, sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads,
        tpl_name=template_space_name(pet_source, template.name, "preproc"),
        name=f"pet_{key}_wf",
    )
    pet_wf.inputs.inputnode.pet_file = str(series.path)
    if series.ct is not None:
        pet_wf.inputs.inputnode.ct_file = str(series.ct)
    ds_pet_wf = init_ds_pet_wf(output_dir=output_dir, pet_source=pet_source,
                               base_meta=base_meta, desc="preproc",
                               spatial_references=ctx["references"], name=f"ds_pet_{key}_wf")
    pet_reports_wf = init_pet_reports_wf(output_dir=output_dir, pet_source=pet_source,
                                         title=key, name=f"pet_reports_{key}_wf")
    quant_wf = init_quantify_wf(desc="preproc", name=f"quantify_{key}_preproc_wf",
                                tracer=series.tracer, pet_source=pet_source,
                                reference_region=tracer.reference, **ctx["quantify"])
    workflow.connect([
        (anat_wf, pet_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in _ANAT_TO_PET]),
        (pet_wf, ds_pet_wf, [("outputnode.pet_t1w", "inputnode.pet_t1w"),
                             ("outputnode.pet_tpl", "inputnode.pet_tpl"),
                             ("outputnode.static_info", "inputnode.static_info")]),
        (pet_wf, pet_reports_wf, [("outputnode.static_info", "inputnode.static_info"),
                                  ("outputnode.pet_t1w", "inputnode.pet_t1w")]),
        (anat_wf, pet_reports_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                                   ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (pet_wf, quant_wf, [("outputnode.pet_tpl", "inputnode.in_file")]),
    ])  # fmt: skip
    return pet_wf, base_meta


def _ct_stage(workflow, anat_wf, pet_wf, series, ctx: dict) -> None:
    """The CT of a paired session on the T1w grid (registered in the PET workflow), written."""
    key = series_key(series)
    ds_ct_wf = init_ds_ct_wf(output_dir=ctx["output_dir"], ct_source=series.ct,
                             sources=[bids_uri(series.ct, ctx["bids_dir"])],
                             spatial_reference=ctx["t1w_uri"], name=f"ds_ct_{key}_wf")
    workflow.connect([
        (pet_wf, ds_ct_wf, [("outputnode.ct_t1w", "inputnode.ct_t1w")]),
        (anat_wf, ds_ct_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc")]),
    ])  # fmt: skip


def _harmonization_stage(workflow, anat_wf, pet_wf, series, base_meta: dict,
                         ctx: dict) -> None:
    """PET-MR: the harmonizer, its outputs (image, pseudo-CT, uncertainty) and tables."""
    key = series_key(series)
    tracer = get_tracer(series.tracer)
    output_dir, template, t1w_uri = ctx["output_dir"], ctx["template"], ctx["t1w_uri"]
    model_dir, pet_source = ctx["model_dir"], naming_source(series)
    att = series.attenuation
    use_mumap = bool(att is not None and att.mumap is not None)
    with_uncertainty = model_has_ensemble(model_dir)
    harm_wf = init_harmonize_wf(
        model_dir=str(model_dir), tracer=tracer.name, tracer_family=tracer.family,
        scanner=series.model_name, ac_setup=att.setup if att else None,
        ac_setup_inference=att.how if att else "not inferred",
        mumap_notes=att.notes if att else (), use_mumap=use_mumap,
        with_uncertainty=with_uncertainty, ood_policy=ctx["ood_policy"], device=ctx["device"],
        omp_nthreads=ctx["omp_nthreads"],
        tpl_name=template_space_name(pet_source, template.name, "harmonized"),
        **model_facts(model_dir), name=f"harmonize_{key}_wf",
    )
    if use_mumap:
        harm_wf.inputs.inputnode.mumap = str(att.mumap)
        workflow.connect(pet_wf, "outputnode.pet2t1w_xfm", harm_wf, "inputnode.pet2t1w_xfm")
    ds_harmonized_wf = init_ds_pet_wf(output_dir=output_dir, pet_source=pet_source,
                                      base_meta=base_meta, desc="harmonized",
                                      spatial_references=ctx["references"],
                                      name=f"ds_harmonized_{key}_wf")
    ds_harmonization_wf = init_ds_harmonization_wf(
        output_dir=output_dir, pet_source=pet_source, sources=[t1w_uri],
        spatial_reference=t1w_uri, title=key, with_uncertainty=with_uncertainty,
        name=f"ds_harmonization_{key}_wf")
    quant_harm_wf = init_quantify_wf(desc="harmonized", name=f"quantify_{key}_harmonized_wf",
                                     with_members=with_uncertainty, tracer=series.tracer,
                                     pet_source=pet_source, reference_region=tracer.reference,
                                     **ctx["quantify"])
    if with_uncertainty:
        workflow.connect([
            (harm_wf, ds_harmonization_wf, [("outputnode.uncertainty_t1w",
                                             "inputnode.uncertainty_t1w")]),
            (harm_wf, quant_harm_wf, [("outputnode.members_tpl", "inputnode.members"),
                                      ("outputnode.uncertainty_scale", "inputnode.sd_scale")]),
        ])  # fmt: skip
    workflow.connect([
        (pet_wf, harm_wf, [("outputnode.pet_t1w", "inputnode.pet_t1w")]),
        (anat_wf, harm_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in _ANAT_TO_PET]),
        (harm_wf, ds_harmonized_wf, [("outputnode.harmonized_t1w", "inputnode.pet_t1w"),
                                     ("outputnode.harmonized_tpl", "inputnode.pet_tpl"),
                                     ("outputnode.model_info", "inputnode.model_info")]),
        (pet_wf, ds_harmonized_wf, [("outputnode.static_info", "inputnode.static_info")]),
        (harm_wf, ds_harmonization_wf, [
            ("outputnode.pseudoct_t1w", "inputnode.pseudoct_t1w"),
            ("outputnode.harmonized_t1w", "inputnode.harmonized_t1w")]),
        (pet_wf, ds_harmonization_wf, [("outputnode.pet_t1w", "inputnode.pet_t1w")]),
        (anat_wf, ds_harmonization_wf, [("outputnode.brain_mask", "inputnode.brain_mask")]),
        (harm_wf, quant_harm_wf, [("outputnode.harmonized_tpl", "inputnode.in_file")]),
    ])  # fmt: skip


def model_facts(model_dir) -> dict:
    """The card's name, version and training data, for the methods text (the card is read,
    nothing verified: the run's pre-flight did that); empty when there is no card.

    >>> model_facts("/nonexistent")
    {}
    """
    import json

    from bids_harmonize.harmonizer.weights import CARD_NAME, HarmonizerModel

    try:
        card = json.loads((Path(model_dir) / CARD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(card, dict):
        return {}
    model = HarmonizerModel(path=Path(model_dir), card=card, card_sha256="", net=None)
    return {"model_name": str(model.name), "model_version": model.version,
            "model_trained_on": model.trained_on}


def naming_source(series) -> str:
    """The file name a PET series' outputs are named after: its own, with ``trc-`` added from
    :attr:`~bids_harmonize.bids.PetSeries.tracer_label` when it has none (bids-examples
    pet005), so that the group level finds them; a name with ``trc-`` is kept as it is.

    >>> from types import SimpleNamespace as NS
    >>> naming_source(NS(path=Path("/d/sub-01_ses-a_pet.nii.gz"), tracer_label="AZ10419369"))
    '/d/sub-01_ses-a_trc-AZ10419369_pet.nii.gz'
    """
    return str(with_tracer(series.path, getattr(series, "tracer_label", "")))


def _check_series_keys(series_list) -> None:
    """Two PET series with one key would be one graph branch: refuse, naming both files."""
    seen: dict[str, Path] = {}
    for series in series_list:
        key = series_key(series)
        if key in seen:
            raise InputError(
                f"{series.path}: same session, tracer and acq/rec/run/task as {seen[key]} "
                "(entities outside these do not tell PET series apart); rename or select one "
                "with --bids-filter-file")
        seen[key] = series.path


def series_key(series) -> str:
    """Nipype-safe key of a PET series from every entity of its file name.

    The tracer is the resolved name (``series.tracer``); ``task``/``acq``/``rec``/``run``
    come from the file name, so two runs of one session get two keys.

    >>> from types import SimpleNamespace as NS
    >>> series_key(NS(path=Path("sub-01_ses-mr_trc-PiB_run-2_pet.nii.gz"), session="mr",
    ...               tracer="PiB"))
    'ses_mr_trc_PiB_run_2'
    """
    entities = parse_name(series.path) or {}
    entities = {**entities, "tracer": series.tracer}
    if series.session:
        entities["session"] = series.session
    return node_key(entities)


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
