"""Top-level workflows: the whole run and one subject.

The factories read a participant plan and the run's settings
(:mod:`bids_harmonize.app.plan`) and nothing else: every decision about a series (tracer,
window, body weight, attenuation setup, harmonize or not, the model's facts) was taken
when the plan was made.
"""

from __future__ import annotations

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.app.plan import ParticipantPlan, SeriesPlan, Settings
from bids_harmonize.workflows.anat import init_anat_wf
from bids_harmonize.workflows.harmonize import init_harmonize_wf
from bids_harmonize.workflows.outputs import (
    init_anat_reports_wf,
    init_ds_anat_wf,
    init_ds_ct_wf,
    init_ds_harmonization_wf,
    init_ds_pet_wf,
    init_pet_reports_wf,
)
from bids_harmonize.workflows.pet import init_pet_wf
from bids_harmonize.workflows.quantify import init_quantify_wf

#: Anatomical outputs every PET branch takes (``anat_wf`` outputnode fields).
_ANAT_TO_PET = ("t1w_preproc", "brain_mask", "t1w2tpl_xfm", "template_t1w")


def init_bids_harmonize_wf(plans: list[ParticipantPlan], settings: Settings, *,
                           name: str = "bids_harmonize_wf") -> Workflow:
    """All subjects of a run, each in its own sub-workflow (see :func:`init_single_subject_wf`).

    .. workflow::

        from pathlib import Path
        from bids_harmonize.app.plan import Settings
        from bids_harmonize.workflows.base import init_bids_harmonize_wf
        wf = init_bids_harmonize_wf([], Settings(bids_dir=Path("/d"), output_dir=Path("/o"),
                                                 template=None))
    """
    workflow = Workflow(name=name)
    for plan in plans:
        workflow.add_nodes([init_single_subject_wf(plan, settings)])
    return workflow


def init_single_subject_wf(plan: ParticipantPlan, settings: Settings, *,
                           name: str | None = None) -> Workflow:
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
        The subject's plan (:func:`bids_harmonize.app.plan.plan`): T1w and every PET
        series with its tracer, window, body weight, attenuation setup and sidecar.
    settings
        The run's :class:`~bids_harmonize.app.plan.Settings`: folders, template, model,
        device, ``--sloppy``, seed, threads, atlas, out-of-distribution policy.

    .. workflow::

        from pathlib import Path
        from bids_harmonize.app.plan import Settings, plan
        from bids_harmonize.bids import SubjectPlan
        from bids_harmonize.templates import get_template
        from bids_harmonize.workflows.base import init_single_subject_wf
        tpl = get_template("MNI152NLin2009aSym")  # bids_harmonize-templates caches it offline
        settings = Settings(bids_dir=Path("/d"), output_dir=Path("/o"), template=tpl)
        (subject,) = plan([SubjectPlan("01", Path("/d/sub-01/anat/sub-01_T1w.nii.gz"))],
                          settings).participants
        wf = init_single_subject_wf(subject, settings)
    """
    workflow = Workflow(name=name or f"sub_{plan.subject}_wf")
    versions, template = plan.versions, settings.template
    workflow.__desc__ = (
        f"Results were produced with *bids_harmonize* {versions['bids_harmonize']}, "
        f"a Nipype {versions['nipype']} [@nipype] workflow"
        + (", run with `--sloppy`: fast, low-accuracy registration and correction settings "
           "meant for tests and demonstrations, not for analysis." if settings.sloppy else ".")
    )

    # Anatomy
    anat_wf = init_anat_wf(template=template, sloppy=settings.sloppy, seed=settings.seed,
                           omp_nthreads=settings.omp_nthreads)
    anat_wf.inputs.inputnode.t1w = str(plan.t1w)
    ds_anat_wf = init_ds_anat_wf(output_dir=settings.output_dir, t1w_source=plan.t1w,
                                 template_name=template.name, sources=[plan.t1w_uri])
    anat_reports_wf = init_anat_reports_wf(output_dir=settings.output_dir, t1w_source=plan.t1w,
                                           template_name=template.name,
                                           template_mask=template.brain_mask)
    workflow.connect([
        (anat_wf, ds_anat_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in (
            "t1w_preproc", "brain_mask", "tissue_probseg", "t1w2tpl_xfm", "tpl2t1w_xfm")]),
        (anat_wf, anat_reports_wf, [("outputnode.tpl_t1w", "inputnode.tpl_t1w")]),
    ])  # fmt: skip

    # PET, one branch per series (keyed by every entity of its file name)
    for series in plan.series:
        pet_wf = _pet_stage(workflow, anat_wf, plan, series, settings)
        if series.ct is not None:
            _ct_stage(workflow, anat_wf, pet_wf, plan, series, settings)
        if series.harmonize:
            _harmonization_stage(workflow, anat_wf, pet_wf, plan, series, settings)
    return workflow


def _pet_stage(workflow, anat_wf, plan: ParticipantPlan, series: SeriesPlan,
               settings: Settings):
    """One PET series: preprocessing, its outputs (sidecars), report figures, regional tables.

    Returns the series' PET workflow.
    """
    key, output_dir = series.key, settings.output_dir
    pet_wf = init_pet_wf(
        metadata=series.metadata, window_min=series.window,
        half_life_min=series.tracer.half_life_min, window_policy=series.window_policy,
        body_weight=series.body_weight,
        common_resolution=dict(series.smoothing) if series.smoothing is not None else None,
        has_ct=series.ct is not None, sloppy=settings.sloppy, seed=settings.seed,
        omp_nthreads=settings.omp_nthreads,
        tpl_name=series.template_name(settings.template.name, "preproc"),
        name=f"pet_{key}_wf",
    )
    pet_wf.inputs.inputnode.pet_file = str(series.path)
    if series.ct is not None:
        pet_wf.inputs.inputnode.ct_file = str(series.ct)
    ds_pet_wf = init_ds_pet_wf(output_dir=output_dir, pet_source=series.pet_source,
                               base_meta=dict(series.base_meta), desc="preproc",
                               spatial_references=dict(plan.references), name=f"ds_pet_{key}_wf")
    pet_reports_wf = init_pet_reports_wf(output_dir=output_dir, pet_source=series.pet_source,
                                         title=key, name=f"pet_reports_{key}_wf")
    quant_wf = init_quantify_wf(desc="preproc", name=f"quantify_{key}_preproc_wf",
                                tracer=series.series.tracer, pet_source=series.pet_source,
                                reference_region=series.tracer.reference, **settings.quantify)
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
    return pet_wf


def _ct_stage(workflow, anat_wf, pet_wf, plan: ParticipantPlan, series: SeriesPlan,
              settings: Settings) -> None:
    """The CT of a paired session on the T1w grid (registered in the PET workflow), written."""
    ds_ct_wf = init_ds_ct_wf(output_dir=settings.output_dir, ct_source=series.ct,
                             sources=[series.ct_uri],
                             spatial_reference=plan.t1w_uri, name=f"ds_ct_{series.key}_wf")
    workflow.connect([
        (pet_wf, ds_ct_wf, [("outputnode.ct_t1w", "inputnode.ct_t1w")]),
        (anat_wf, ds_ct_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc")]),
    ])  # fmt: skip


def _harmonization_stage(workflow, anat_wf, pet_wf, plan: ParticipantPlan, series: SeriesPlan,
                         settings: Settings) -> None:
    """PET-MR: the harmonizer, its outputs (image, pseudo-CT, uncertainty) and tables."""
    key, output_dir, t1w_uri = series.key, settings.output_dir, plan.t1w_uri
    model, tracer, pet_source = plan.model, series.tracer, series.pet_source
    att = series.attenuation
    use_mumap = bool(att is not None and att.mumap is not None)
    with_uncertainty = model.with_uncertainty
    harm_wf = init_harmonize_wf(
        model_dir=str(model.path), tracer=tracer.name, tracer_family=tracer.family,
        scanner=series.model_name, ac_setup=att.setup if att else None,
        ac_setup_inference=att.how if att else "not inferred",
        mumap_notes=att.notes if att else (), use_mumap=use_mumap,
        with_uncertainty=with_uncertainty, ood_policy=settings.ood_policy,
        device=settings.device, omp_nthreads=settings.omp_nthreads,
        tpl_name=series.template_name(settings.template.name, "harmonized"),
        **model.methods, name=f"harmonize_{key}_wf",
    )
    if use_mumap:
        harm_wf.inputs.inputnode.mumap = str(att.mumap)
        workflow.connect(pet_wf, "outputnode.pet2t1w_xfm", harm_wf, "inputnode.pet2t1w_xfm")
    ds_harmonized_wf = init_ds_pet_wf(output_dir=output_dir, pet_source=pet_source,
                                      base_meta=dict(series.base_meta), desc="harmonized",
                                      spatial_references=dict(plan.references),
                                      name=f"ds_harmonized_{key}_wf")
    ds_harmonization_wf = init_ds_harmonization_wf(
        output_dir=output_dir, pet_source=pet_source, sources=[t1w_uri],
        spatial_reference=t1w_uri, title=key, with_uncertainty=with_uncertainty,
        name=f"ds_harmonization_{key}_wf")
    quant_harm_wf = init_quantify_wf(desc="harmonized", name=f"quantify_{key}_harmonized_wf",
                                     with_members=with_uncertainty, tracer=series.series.tracer,
                                     pet_source=pet_source, reference_region=tracer.reference,
                                     **settings.quantify)
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
