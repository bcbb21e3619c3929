"""Top-level workflows: the whole run and one subject."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.bids import SubjectPlan, bids_uri
from bids_harmonize.interfaces.bids import DerivativesDataSink
from bids_harmonize.interfaces.quant import RegionalQuantification
from bids_harmonize.interfaces.reports import HarmonizationRPT, OverlayRPT, UptakeWindowRPT
from bids_harmonize.provenance import pet_sidecar, software_versions
from bids_harmonize.templates import TemplateFiles
from bids_harmonize.tracers import get_tracer
from bids_harmonize.workflows.anat import init_anat_wf
from bids_harmonize.workflows.harmonize import init_harmonize_wf
from bids_harmonize.workflows.outputs import sink
from bids_harmonize.workflows.pet import init_pet_wf


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
    omp_nthreads: int = 1, uptake_windows: dict | None = None, atlas: str = "synth",
    atlas_labels: Path | None = None, centiloid_vois: Path | None = None,
    name: str | None = None,
) -> Workflow:
    """Preprocess, harmonize and quantify every PET series of one subject.

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
        Per-tracer overrides of the uptake window ``{tracer: [start, end]}`` (minutes).
    atlas, atlas_labels, centiloid_vois
        Regions for quantification (see :mod:`bids_harmonize.quant.atlases`).

    .. workflow::

        from pathlib import Path
        from bids_harmonize.bids import SubjectPlan
        from bids_harmonize.templates import TemplateFiles
        from bids_harmonize.workflows.base import init_single_subject_wf
        tpl = TemplateFiles("MNI152NLin2009aSym", Path("t1w.nii.gz"), Path("mask.nii.gz"),
                            {t: Path(f"{t}.nii.gz") for t in ("GM", "WM", "CSF")})
        wf = init_single_subject_wf(SubjectPlan("01", Path("/d/sub-01/anat/sub-01_T1w.nii.gz")),
                                    bids_dir=Path("/d"), output_dir=Path("/o"), template=tpl)
    """
    uptake_windows = uptake_windows or {}
    output_dir = str(output_dir)
    workflow = Workflow(name=name or f"sub_{plan.subject}_wf")
    workflow.__desc__ = (
        f"Results were produced with *bids_harmonize* {software_versions()['bids_harmonize']}, "
        f"a Nipype {software_versions()['nipype']} [@nipype] workflow."
    )
    anat_wf = init_anat_wf(template=template, sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads)
    anat_wf.inputs.inputnode.t1w = str(plan.t1w)
    t1w_src = str(plan.t1w)
    anat_entities = {"dismiss_entities": ["session"]}
    ds_t1w = sink("ds_t1w", output_dir, t1w_src, desc="preproc", suffix="T1w", compress=True,
                  SkullStripped=False, Sources=[bids_uri(plan.t1w, bids_dir)], **anat_entities)
    ds_mask = sink("ds_brain_mask", output_dir, t1w_src, desc="brain", suffix="mask",
                   compress=True, **anat_entities)
    ds_probseg = pe.MapNode(
        DerivativesDataSink(base_directory=output_dir, source_file=t1w_src, suffix="probseg",
                            compress=True, dismiss_entities=["session"]),
        iterfield=["in_file", "label"],
        name="ds_probseg", run_without_submitting=True,
    )
    ds_probseg.inputs.label = ["GM", "WM", "CSF"]
    ds_fwd = sink("ds_t1w2tpl_xfm", output_dir, t1w_src, suffix="xfm", extension=".h5",
                  mode="image", **{"from": "T1w", "to": template.name}, **anat_entities)
    ds_inv = sink("ds_tpl2t1w_xfm", output_dir, t1w_src, suffix="xfm", extension=".h5",
                  mode="image", **{"from": template.name, "to": "T1w"}, **anat_entities)
    tpl_rpt = pe.Node(OverlayRPT(contour=str(template.brain_mask),
                                 title=f"T1w in {template.name}"), name="template_rpt")
    ds_tpl_rpt = sink("ds_template_rpt", output_dir, t1w_src, datatype="figures",
                      desc="template", suffix="T1w", extension=".svg", **anat_entities)
    workflow.connect([
        (anat_wf, ds_t1w, [("outputnode.t1w_preproc", "in_file")]),
        (anat_wf, ds_mask, [("outputnode.brain_mask", "in_file")]),
        (anat_wf, ds_probseg, [("outputnode.tissue_probseg", "in_file")]),
        (anat_wf, ds_fwd, [("outputnode.t1w2tpl_xfm", "in_file")]),
        (anat_wf, ds_inv, [("outputnode.tpl2t1w_xfm", "in_file")]),
        (anat_wf, tpl_rpt, [("outputnode.tpl_t1w", "background")]),
        (tpl_rpt, ds_tpl_rpt, [("out_report", "in_file")]),
    ])  # fmt: skip

    for series in plan.pet:
        tracer = get_tracer(series.tracer)
        window = tuple(uptake_windows.get(tracer.name, tracer.window_min))
        pet_wf = init_pet_wf(
            metadata=series.metadata, window_min=window, half_life_min=tracer.half_life_min,
            has_ct=series.ct is not None, sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads,
            tpl_name=_template_name(series.path, template.name, "preproc"),
            name=f"pet_{series.key}_wf",
        )
        pet_wf.inputs.inputnode.pet_file = str(series.path)
        if series.ct is not None:
            pet_wf.inputs.inputnode.ct_file = str(series.ct)
        workflow.connect([
            (anat_wf, pet_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                               ("outputnode.brain_mask", "inputnode.brain_mask"),
                               ("outputnode.t1w2tpl_xfm", "inputnode.t1w2tpl_xfm"),
                               ("outputnode.template_t1w", "inputnode.template_t1w")]),
        ])  # fmt: skip
        sources = [bids_uri(series.path, bids_dir), bids_uri(plan.t1w, bids_dir)]
        if series.ct is not None:
            sources.append(bids_uri(series.ct, bids_dir))
        base_meta = {
            "Sources": sources,
            "TracerName": tracer.name,
            "TracerFamily": tracer.family,
            "Platform": series.platform,
            "PlatformInference": series.platform_source,
            "ManufacturersModelName": series.model_name,
            "Manufacturer": series.metadata.get("Manufacturer", "unknown"),
            "AttenuationCorrection": series.metadata.get("AttenuationCorrection", "unknown"),
            "SoftwareVersions": software_versions(),
            "Settings": {"sloppy": sloppy, "seed": seed, "template": template.name,
                         "uptake_window_min": list(window)},
        }
        _connect_pet_outputs(workflow, pet_wf, anat_wf, series, base_meta, template,
                             output_dir, desc="preproc", bids_dir=bids_dir, plan=plan)
        _connect_quantification(workflow, pet_wf, "outputnode.pet_tpl", series, output_dir,
                                desc="preproc", atlas=atlas, atlas_labels=atlas_labels,
                                centiloid_vois=centiloid_vois)
        window_rpt = pe.Node(UptakeWindowRPT(title=f"{series.key}"), name=f"window_rpt_{series.key}")
        pet_rpt = pe.Node(OverlayRPT(title=f"{series.key} on T1w"), name=f"pet_rpt_{series.key}")
        ds_window_rpt = sink(f"ds_window_rpt_{series.key}", output_dir, str(series.path),
                             datatype="figures", desc="window", suffix="pet", extension=".svg")
        ds_pet_rpt = sink(f"ds_pet_rpt_{series.key}", output_dir, str(series.path),
                          datatype="figures", desc="pet2t1w", suffix="pet", extension=".svg")
        workflow.connect([
            (pet_wf, window_rpt, [("outputnode.static_info", "info")]),
            (pet_wf, pet_rpt, [("outputnode.pet_t1w", "overlay")]),
            (anat_wf, pet_rpt, [("outputnode.t1w_preproc", "background"),
                                ("outputnode.brain_mask", "contour")]),
            (window_rpt, ds_window_rpt, [("out_report", "in_file")]),
            (pet_rpt, ds_pet_rpt, [("out_report", "in_file")]),
        ])  # fmt: skip
        if series.ct is not None:
            ds_ct = sink(f"ds_ct_{series.key}", output_dir, str(series.ct), space="T1w",
                         desc="preproc", suffix="CT", compress=True,
                         Sources=[bids_uri(series.ct, bids_dir)],
                         SpatialReference=bids_uri(plan.t1w, bids_dir))
            ct_rpt = pe.Node(OverlayRPT(title="CT on T1w"), name=f"ct_rpt_{series.key}")
            ds_ct_rpt = sink(f"ds_ct_rpt_{series.key}", output_dir, str(series.ct),
                             datatype="figures", desc="ct2t1w", suffix="CT", extension=".svg")
            workflow.connect([
                (pet_wf, ds_ct, [("outputnode.ct_t1w", "in_file")]),
                (pet_wf, ct_rpt, [("outputnode.ct_t1w", "overlay")]),
                (anat_wf, ct_rpt, [("outputnode.t1w_preproc", "background")]),
                (ct_rpt, ds_ct_rpt, [("out_report", "in_file")]),
            ])  # fmt: skip
        if series.platform == "PET-MR" and model_dir is not None:
            harm_wf = init_harmonize_wf(model_dir=str(model_dir), tracer=tracer.name,
                                        device=device, omp_nthreads=omp_nthreads,
                                        tpl_name=_template_name(series.path, template.name,
                                                                "harmonized"),
                                        name=f"harmonize_{series.key}_wf")
            workflow.connect([
                (pet_wf, harm_wf, [("outputnode.pet_t1w", "inputnode.pet_t1w")]),
                (anat_wf, harm_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                                    ("outputnode.brain_mask", "inputnode.brain_mask"),
                                    ("outputnode.t1w2tpl_xfm", "inputnode.t1w2tpl_xfm"),
                                    ("outputnode.template_t1w", "inputnode.template_t1w")]),
            ])  # fmt: skip
            _connect_pet_outputs(workflow, harm_wf, anat_wf, series, base_meta, template,
                                 output_dir, desc="harmonized", bids_dir=bids_dir, plan=plan,
                                 static_from=pet_wf)
            _connect_quantification(workflow, harm_wf, "outputnode.harmonized_tpl", series,
                                    output_dir, desc="harmonized", atlas=atlas,
                                    atlas_labels=atlas_labels, centiloid_vois=centiloid_vois)
            ds_pseudoct = sink(f"ds_pseudoct_{series.key}", output_dir, str(series.path),
                               space="T1w", desc="pseudo", suffix="CT", compress=True,
                               Sources=[bids_uri(plan.t1w, bids_dir)],
                               SpatialReference=bids_uri(plan.t1w, bids_dir))
            harm_rpt = pe.Node(HarmonizationRPT(title=f"{series.key}: harmonization"),
                               name=f"harm_rpt_{series.key}")
            ds_harm_rpt = sink(f"ds_harm_rpt_{series.key}", output_dir, str(series.path),
                               datatype="figures", desc="harmonization", suffix="pet",
                               extension=".svg")
            workflow.connect([
                (harm_wf, ds_pseudoct, [("outputnode.pseudoct_t1w", "in_file")]),
                (pet_wf, harm_rpt, [("outputnode.pet_t1w", "before")]),
                (harm_wf, harm_rpt, [("outputnode.harmonized_t1w", "after")]),
                (anat_wf, harm_rpt, [("outputnode.brain_mask", "mask")]),
                (harm_rpt, ds_harm_rpt, [("out_report", "in_file")]),
            ])  # fmt: skip
    return workflow


def _template_name(pet: Path, space: str, desc: str) -> str:
    """``sub-01_ses-a_trc-PiB_pet.nii.gz`` -> ``..._space-<space>_desc-<desc>_pet.nii.gz``."""
    return Path(pet).name.replace("_pet.nii", f"_space-{space}_desc-{desc}_pet.nii")


def _connect_pet_outputs(workflow, src_wf, anat_wf, series, base_meta, template, output_dir, *,
                         desc, bids_dir, plan, static_from=None):
    """Sidecar metadata and sinks of one PET image (preproc or harmonized), both spaces."""
    static_from = static_from or src_wf
    t1w_field, tpl_field = (("outputnode.pet_t1w", "outputnode.pet_tpl") if desc == "preproc"
                            else ("outputnode.harmonized_t1w", "outputnode.harmonized_tpl"))
    for space, field in (("T1w", t1w_field), (template.name, tpl_field)):
        tag = f"{series.key}_{desc}_{space}"
        meta = pe.Node(
            niu.Function(function=pet_sidecar, input_names=["base", "static_info", "model_info",
                                                            "space", "spatial_reference"],
                         output_names=["meta"]),
            name=f"meta_{tag}", run_without_submitting=True,
        )
        meta.inputs.base = base_meta
        meta.inputs.space = space
        meta.inputs.spatial_reference = (bids_uri(plan.t1w, bids_dir) if space == "T1w"
                                          else f"tpl-{template.name}_res-02_T1w.nii.gz")
        if desc == "preproc":
            meta.inputs.model_info = None
        ds = sink(f"ds_pet_{tag}", output_dir, str(series.path), space=space, desc=desc,
                  suffix="pet", compress=True)
        workflow.connect([
            (static_from, meta, [("outputnode.static_info", "static_info")]),
            (meta, ds, [("meta", "meta_dict")]),
            (src_wf, ds, [(field, "in_file")]),
        ])  # fmt: skip
        if desc != "preproc":
            workflow.connect(src_wf, "outputnode.model_info", meta, "model_info")


def _connect_quantification(workflow, src_wf, field, series, output_dir, *, desc, atlas,
                            atlas_labels, centiloid_vois):
    """Regional tables of a template-space PET image with each requested atlas."""
    atlases = [atlas] + (["centiloid"] if centiloid_vois else [])
    for spec in atlases:
        node = RegionalQuantification(tracer=series.tracer, desc=desc)
        if spec == "centiloid":
            node.inputs.atlas = "centiloid"
            node.inputs.centiloid_vois = str(centiloid_vois)
        elif atlas_labels:
            node.inputs.atlas = "file"
            node.inputs.atlas_file = str(spec)
            node.inputs.atlas_labels = str(atlas_labels)
        else:
            node.inputs.atlas = spec
        tag = f"{series.key}_{desc}_{'centiloid' if spec == 'centiloid' else 'atlas'}"
        quant = pe.Node(node, name=f"quant_{tag}")
        workflow.connect(src_wf, field, quant, "in_file")
        for out, suffix, ext in (("out_regions", "suvr", ".tsv"),
                                 ("out_regions_json", "suvr", ".json"),
                                 ("out_measures", "measures", ".tsv"),
                                 ("out_measures_json", "measures", ".json")):
            ds = sink(f"ds_{out}_{tag}", output_dir, str(series.path), desc=desc,
                      suffix=suffix, extension=ext)
            workflow.connect([(quant, ds, [(out, "in_file"), ("seg", "seg")])])
