"""Output factories: every derivative sink, sidecar and report node of the participant level.

As sMRIPrep's ``workflows/outputs.py`` (``init_ds_*_wf``): the wiring factories
(:mod:`~bids_harmonize.workflows.base`) hand images to these small workflows, which
name and write them. Names come from the one specification,
``bids_harmonize/data/io_spec.json``, through :func:`spec_sink`; nothing here spells a
file name.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.derivatives import sink_entities
from bids_harmonize.interfaces.bids import DerivativesDataSink
from bids_harmonize.interfaces.reports import HarmonizationRPT, OverlayRPT, UptakeWindowRPT
from bids_harmonize.provenance import pet_sidecar

#: The four outputs of ``RegionalQuantification`` and the derivative kind of each.
TABLE_OUTPUTS = (("out_regions", "suvr", ".tsv"), ("out_regions_json", "suvr", ".json"),
                 ("out_measures", "measures", ".tsv"), ("out_measures_json", "measures", ".json"))


def pet_base_metadata(series, *, tracer, sources: list[str], software: dict,
                      settings: dict) -> dict:
    """Build-time provenance of one PET series, shared by all its sidecars.

    ``series`` is a :class:`bids_harmonize.bids.PetSeries`, ``tracer`` its
    :class:`bids_harmonize.tracers.Tracer`; the uptake-window record and the model's
    identity are added at run time by :func:`bids_harmonize.provenance.pet_sidecar`.

    >>> from types import SimpleNamespace as NS
    >>> series = NS(platform="PET-MR", platform_source="scanner model", model_name="Biograph mMR",
    ...             metadata={"Manufacturer": "Siemens"})
    >>> meta = pet_base_metadata(series, tracer=NS(name="PiB", family="amyloid"), sources=["a"],
    ...                          software={}, settings={"sloppy": True})
    >>> meta["Platform"], meta["AttenuationCorrection"], meta["Settings"]
    ('PET-MR', 'unknown', {'sloppy': True})
    >>> "InstitutionName" in meta
    False
    >>> series.metadata["InstitutionName"] = "Site A"
    >>> pet_base_metadata(series, tracer=NS(name="PiB", family="amyloid"), sources=["a"],
    ...                   software={}, settings={})["InstitutionName"]
    'Site A'
    """
    return {
        "Sources": list(sources),
        "TracerName": tracer.name,
        "TracerFamily": tracer.family,
        "Platform": series.platform,
        "PlatformInference": series.platform_source,
        "ManufacturersModelName": series.model_name,
        "Manufacturer": series.metadata.get("Manufacturer", "unknown"),
        "AttenuationCorrection": series.metadata.get("AttenuationCorrection", "unknown"),
        # the site, when the input names it: the group report's breakdown by site reads it
        **({"InstitutionName": series.metadata["InstitutionName"]}
           if series.metadata.get("InstitutionName") else {}),
        "SoftwareVersions": software,
        "Settings": settings,
    }


def spec_sink(kind: str, name: str, output_dir, source_file, *, map_over=None,
              **overrides) -> pe.Node:
    """A ``DerivativesDataSink`` node for one derivative kind of ``data/io_spec.json``.

    ``overrides`` set the entities the kind leaves open (``space``, ``desc``, ...) and
    metadata (``Sources``, ``SpatialReference``, ...); ``map_over`` makes a ``MapNode``
    over those input fields.
    """
    interface = DerivativesDataSink(base_directory=str(output_dir), source_file=str(source_file),
                                    **sink_entities(kind, **overrides))
    if map_over:
        return pe.MapNode(interface, iterfield=list(map_over), name=name,
                          run_without_submitting=True)
    return pe.Node(interface, name=name, run_without_submitting=True)


def init_ds_anat_wf(*, output_dir, t1w_source, template_name: str, sources: list[str],
                    name: str = "ds_anat_wf") -> Workflow:
    """Write the anatomical derivatives: preprocessed T1w, brain mask, tissue maps, transforms.

    Parameters
    ----------
    output_dir
        The derivatives folder.
    t1w_source
        The input T1w (names derive from it; its session is dropped).
    template_name
        The output template (``to-``/``from-`` of the transforms).
    sources
        BIDS URIs of the inputs, for the T1w sidecar.

    Inputs
    ------
    t1w_preproc, brain_mask, tissue_probseg, t1w2tpl_xfm, tpl2t1w_xfm
        From the anatomical workflow (``tissue_probseg``: GM, WM, CSF).

    .. workflow::

        from bids_harmonize.workflows.outputs import init_ds_anat_wf
        wf = init_ds_anat_wf(output_dir="/out", t1w_source="/d/sub-01/anat/sub-01_T1w.nii.gz",
                             template_name="MNI152NLin2009aSym", sources=[])
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc", "brain_mask",
                                                      "tissue_probseg", "t1w2tpl_xfm",
                                                      "tpl2t1w_xfm"]), name="inputnode")
    ds_t1w = spec_sink("t1w_preproc", "ds_t1w", output_dir, t1w_source, SkullStripped=False,
                       Sources=sources)
    ds_mask = spec_sink("brain_mask", "ds_brain_mask", output_dir, t1w_source)
    ds_probseg = spec_sink("probseg", "ds_probseg", output_dir, t1w_source,
                           map_over=("in_file", "label"))
    ds_probseg.inputs.label = ["GM", "WM", "CSF"]
    ds_fwd = spec_sink("t1w2tpl_xfm", "ds_t1w2tpl_xfm", output_dir, t1w_source,
                       to=template_name)
    ds_inv = spec_sink("tpl2t1w_xfm", "ds_tpl2t1w_xfm", output_dir, t1w_source,
                       **{"from": template_name})
    workflow.connect([
        (inputnode, ds_t1w, [("t1w_preproc", "in_file")]),
        (inputnode, ds_mask, [("brain_mask", "in_file")]),
        (inputnode, ds_probseg, [("tissue_probseg", "in_file")]),
        (inputnode, ds_fwd, [("t1w2tpl_xfm", "in_file")]),
        (inputnode, ds_inv, [("tpl2t1w_xfm", "in_file")]),
    ])  # fmt: skip
    return workflow


def init_anat_reports_wf(*, output_dir, t1w_source, template_name: str, template_mask,
                         name: str = "anat_reports_wf") -> Workflow:
    """The anatomical report figure: the T1w in the template, with the template's outline.

    Inputs
    ------
    tpl_t1w
        The T1w brain resampled into the template.

    .. workflow::

        from bids_harmonize.templates import get_template
        from bids_harmonize.workflows.outputs import init_anat_reports_wf
        tpl = get_template("MNI152NLin2009aSym")
        wf = init_anat_reports_wf(output_dir="/out", t1w_source="/d/sub-01/anat/sub-01_T1w.nii.gz",
                                  template_name=tpl.name, template_mask=tpl.brain_mask)
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["tpl_t1w"]), name="inputnode")
    tpl_rpt = pe.Node(OverlayRPT(contour=str(template_mask), title=f"T1w in {template_name}"),
                      name="template_rpt")
    ds_tpl_rpt = spec_sink("figure_template", "ds_template_rpt", output_dir, t1w_source)
    workflow.connect([
        (inputnode, tpl_rpt, [("tpl_t1w", "background")]),
        (tpl_rpt, ds_tpl_rpt, [("out_report", "in_file")]),
    ])  # fmt: skip
    return workflow


def init_ds_pet_wf(*, output_dir, pet_source, base_meta: dict, desc: str,
                   spatial_references: dict[str, str], name: str = "ds_pet_wf") -> Workflow:
    """Write one PET image (``preproc`` or ``harmonized``) in every output space, with sidecars.

    Parameters
    ----------
    pet_source
        The input PET series (every entity of its name is kept).
    base_meta
        Build-time provenance of the series (:func:`pet_base_metadata`).
    desc
        ``preproc`` or ``harmonized`` (the derivative kinds ``pet_preproc`` / ``pet_harmonized``).
    spatial_references
        Output space -> ``SpatialReference``; the first is the T1w space (``pet_t1w``),
        the second the template (``pet_tpl``).

    Inputs
    ------
    pet_t1w, pet_tpl
        The image on the T1w grid and in the template.
    static_info
        Uptake-window record of the static image (frames, window, units).
    model_info
        The harmonization model's identity (``harmonized`` only).

    .. workflow::

        from bids_harmonize.workflows.outputs import init_ds_pet_wf
        wf = init_ds_pet_wf(output_dir="/out", base_meta={}, desc="harmonized",
                            pet_source="/d/sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_pet.nii.gz",
                            spatial_references={"T1w": "bids:raw:t1w", "MNI": "tpl-MNI"})
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["pet_t1w", "pet_tpl", "static_info",
                                                      "model_info"]), name="inputnode")
    if desc == "preproc":
        inputnode.inputs.model_info = None
    for (space, reference), field in zip(spatial_references.items(), ("pet_t1w", "pet_tpl"),
                                         strict=True):
        meta = pe.Node(
            niu.Function(function=pet_sidecar, input_names=["base", "static_info", "model_info",
                                                            "space", "spatial_reference"],
                         output_names=["meta"]),
            name=f"meta_{space}", run_without_submitting=True,
        )
        meta.inputs.base = base_meta
        meta.inputs.space = space
        meta.inputs.spatial_reference = reference
        ds = spec_sink(f"pet_{desc}", f"ds_pet_{space}", output_dir, pet_source, space=space)
        workflow.connect([
            (inputnode, meta, [("static_info", "static_info"), ("model_info", "model_info")]),
            (meta, ds, [("meta", "meta_dict")]),
            (inputnode, ds, [(field, "in_file")]),
        ])  # fmt: skip
    return workflow


def init_ds_tables_wf(*, output_dir, pet_source, desc: str,
                      name: str = "ds_tables_wf") -> Workflow:
    """Write the regional SUVR and measures tables (and data dictionaries) of one image.

    Inputs
    ------
    out_regions, out_regions_json, out_measures, out_measures_json, seg
        The outputs of :class:`~bids_harmonize.interfaces.quant.RegionalQuantification`.

    .. workflow::

        from bids_harmonize.workflows.outputs import init_ds_tables_wf
        wf = init_ds_tables_wf(output_dir="/out", desc="preproc",
                               pet_source="/d/sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_pet.nii.gz")
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=[o for o, _, _ in TABLE_OUTPUTS] + ["seg"]),
                        name="inputnode")
    for out, kind, ext in TABLE_OUTPUTS:
        ds = spec_sink(kind, f"ds_{out}", output_dir, pet_source, desc=desc, extension=ext)
        workflow.connect([(inputnode, ds, [(out, "in_file"), ("seg", "seg")])])
    return workflow


def init_pet_reports_wf(*, output_dir, pet_source, title: str,
                        name: str = "pet_reports_wf") -> Workflow:
    """Report figures of one PET series: the uptake window, and the static PET on the T1w.

    Inputs
    ------
    static_info
        Uptake-window record (frames, weights, window).
    pet_t1w
        The static PET on the T1w grid.
    t1w_preproc, brain_mask
        Background and outline.

    .. workflow::

        from bids_harmonize.workflows.outputs import init_pet_reports_wf
        wf = init_pet_reports_wf(output_dir="/out", title="ses-a trc-PiB",
                                 pet_source="/d/sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_pet.nii.gz")
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["static_info", "pet_t1w", "t1w_preproc",
                                                      "brain_mask"]), name="inputnode")
    window_rpt = pe.Node(UptakeWindowRPT(title=title), name="window_rpt")
    pet_rpt = pe.Node(OverlayRPT(title=f"{title} on T1w"), name="pet_rpt")
    ds_window_rpt = spec_sink("figure_window", "ds_window_rpt", output_dir, pet_source)
    ds_pet_rpt = spec_sink("figure_pet", "ds_pet_rpt", output_dir, pet_source)
    workflow.connect([
        (inputnode, window_rpt, [("static_info", "info")]),
        (inputnode, pet_rpt, [("pet_t1w", "overlay"), ("t1w_preproc", "background"),
                              ("brain_mask", "contour")]),
        (window_rpt, ds_window_rpt, [("out_report", "in_file")]),
        (pet_rpt, ds_pet_rpt, [("out_report", "in_file")]),
    ])  # fmt: skip
    return workflow


def init_ds_ct_wf(*, output_dir, ct_source, sources: list[str], spatial_reference: str,
                  name: str = "ds_ct_wf") -> Workflow:
    """Write the session's CT on the T1w grid, and its report figure.

    Inputs
    ------
    ct_t1w
        The CT (HU) on the T1w grid.
    t1w_preproc
        Background of the figure.

    .. workflow::

        from bids_harmonize.workflows.outputs import init_ds_ct_wf
        wf = init_ds_ct_wf(output_dir="/out", sources=[], spatial_reference="bids:raw:t1w",
                           ct_source="/d/sub-01/ses-a/anat/sub-01_ses-a_CT.nii.gz")
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["ct_t1w", "t1w_preproc"]),
                        name="inputnode")
    ds_ct = spec_sink("ct_preproc", "ds_ct", output_dir, ct_source, Sources=sources,
                      SpatialReference=spatial_reference)
    ct_rpt = pe.Node(OverlayRPT(title="CT on T1w"), name="ct_rpt")
    ds_ct_rpt = spec_sink("figure_ct", "ds_ct_rpt", output_dir, ct_source)
    workflow.connect([
        (inputnode, ds_ct, [("ct_t1w", "in_file")]),
        (inputnode, ct_rpt, [("ct_t1w", "overlay"), ("t1w_preproc", "background")]),
        (ct_rpt, ds_ct_rpt, [("out_report", "in_file")]),
    ])  # fmt: skip
    return workflow


def init_ds_harmonization_wf(*, output_dir, pet_source, sources: list[str],
                             spatial_reference: str, title: str, with_uncertainty: bool = False,
                             name: str = "ds_harmonization_wf") -> Workflow:
    """Write the harmonizer's by-products: the pseudo-CT, the uncertainty map (a model with
    an ensemble: ``with_uncertainty``), and the before/after figure.

    Inputs
    ------
    pseudoct_t1w
        Pseudo-CT (HU) from the T1w, on the T1w grid.
    uncertainty_t1w
        Calibrated ensemble SD of the log-ratio correction, T1w grid (``with_uncertainty``).
    pet_t1w, harmonized_t1w, brain_mask
        PET-MR before and after harmonization, and the brain mask (T1w grid).

    .. workflow::

        from bids_harmonize.workflows.outputs import init_ds_harmonization_wf
        wf = init_ds_harmonization_wf(
            output_dir="/out", sources=[], spatial_reference="bids:raw:t1w", title="PiB",
            pet_source="/d/sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_pet.nii.gz")
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["pseudoct_t1w", "uncertainty_t1w",
                                                      "pet_t1w", "harmonized_t1w",
                                                      "brain_mask"]),
                        name="inputnode")
    if with_uncertainty:
        ds_uncertainty = spec_sink(
            "pet_uncertainty", "ds_uncertainty", output_dir, pet_source, Sources=sources,
            SpatialReference=spatial_reference, SkullStripped=False, Units="1",
            Description="harmonizer uncertainty: calibrated SD, over a deep ensemble of "
                        "correction networks, of the log ratio r (harmonized = PET-MR * exp(r)); "
                        "the relative SD of the harmonized uptake")
        workflow.connect(inputnode, "uncertainty_t1w", ds_uncertainty, "in_file")
    ds_pseudoct = spec_sink("pseudo_ct", "ds_pseudoct", output_dir, pet_source, Sources=sources,
                            SpatialReference=spatial_reference)
    harm_rpt = pe.Node(HarmonizationRPT(title=f"{title}: harmonization"), name="harm_rpt")
    ds_harm_rpt = spec_sink("figure_harmonization", "ds_harm_rpt", output_dir, pet_source)
    workflow.connect([
        (inputnode, ds_pseudoct, [("pseudoct_t1w", "in_file")]),
        (inputnode, harm_rpt, [("pet_t1w", "before"), ("harmonized_t1w", "after"),
                               ("brain_mask", "mask")]),
        (harm_rpt, ds_harm_rpt, [("out_report", "in_file")]),
    ])  # fmt: skip
    return workflow
