"""Quantification: regional SUVR tables and tracer measures of one template-space image."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.interfaces.quant import RegionalQuantification
from bids_harmonize.workflows.outputs import TABLE_OUTPUTS, init_ds_tables_wf


def init_quantify_wf(*, tracer: str, desc: str, output_dir, pet_source, atlas: str = "synth",
                     atlas_labels: Path | None = None, centiloid_vois: Path | None = None,
                     with_members: bool = False, reference_region: str | None = None,
                     name: str = "quantify_wf") -> Workflow:
    """Regional tables of one template-space PET image with each requested atlas, written.

    Parameters
    ----------
    tracer
        Tracer name (reference region, measures).
    desc
        ``preproc`` or ``harmonized``: which image the tables describe.
    output_dir, pet_source
        Derivatives folder and the input PET series (names derive from it).
    atlas, atlas_labels
        ``synth``, a TemplateFlow atlas spec, or a label image with its label TSV.
    centiloid_vois
        The GAAIN Centiloid VOIs folder: adds the standard Centiloid tables.
    with_members
        Harmonized images of a model with an ensemble: the tables get the members' spread
        (``suvr_sd``, ``value_sd``; :func:`bids_harmonize.quant.regional.add_member_spread`).
    reference_region
        The tracer's reference region, for the methods text only (the tables take it from
        the tracer table); ``None``: none known (regional means, no SUVR).

    Inputs
    ------
    in_file
        The PET image in the template space.
    members, sd_scale
        The ensemble members' images in the template space and the calibration factor of
        their spread (``with_members`` only).

    .. workflow::

        from bids_harmonize.workflows.quantify import init_quantify_wf
        wf = init_quantify_wf(tracer="PiB", desc="preproc", output_dir="/out",
                              pet_source="/d/sub-01/ses-a/pet/sub-01_ses-a_trc-PiB_pet.nii.gz")
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = quantify_description(tracer, reference_region, atlas, atlas_labels,
                                             centiloid=bool(centiloid_vois))
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "members", "sd_scale"]),
                        name="inputnode")
    for spec in [atlas] + (["centiloid"] if centiloid_vois else []):
        node = RegionalQuantification(tracer=tracer, desc=desc)
        if spec == "centiloid":
            node.inputs.atlas = "centiloid"
            node.inputs.centiloid_vois = str(centiloid_vois)
        elif atlas_labels:
            node.inputs.atlas = "file"
            node.inputs.atlas_file = str(spec)
            node.inputs.atlas_labels = str(atlas_labels)
        else:
            node.inputs.atlas = spec
        tag = "centiloid" if spec == "centiloid" else "atlas"
        quant = pe.Node(node, name=f"quant_{tag}")
        ds_tables = init_ds_tables_wf(output_dir=output_dir, pet_source=pet_source, desc=desc,
                                      name=f"ds_tables_{tag}_wf")
        workflow.connect([
            (inputnode, quant, [("in_file", "in_file")]),
            (quant, ds_tables, [(o, f"inputnode.{o}") for o, _, _ in TABLE_OUTPUTS]
             + [("seg", "inputnode.seg")]),
        ])  # fmt: skip
        if with_members:
            workflow.connect(inputnode, "members", quant, "members")
            workflow.connect(inputnode, "sd_scale", quant, "sd_scale")
    return workflow


def quantify_description(tracer: str, reference_region: str | None, atlas: str,
                         atlas_labels: Path | None = None, *, centiloid: bool = False) -> str:
    """Methods text of the regional tables: tracer, reference region and atlas.

    >>> print(quantify_description("PiB", "whole_cerebellum", "synth"))
    ... # doctest: +NORMALIZE_WHITESPACE
    Regional PiB uptake was summarised in the template space as SUVR relative to the
    reference region whole cerebellum, with the simulator's 24-region *synth* atlas.
    >>> print(quantify_description("X", None, "/a/labels.nii.gz", "/a/labels.tsv",
    ...                            centiloid=True))  # doctest: +NORMALIZE_WHITESPACE
    Regional X uptake was summarised in the template space as regional means (no reference
    region is known for this tracer, so no SUVR), with the user atlas `labels.nii.gz`, and
    with the GAAIN Centiloid regions for Centiloid.
    """
    if str(atlas) == "synth":
        where = "the simulator's 24-region *synth* atlas"
    elif atlas_labels:
        where = f"the user atlas `{Path(str(atlas)).name}`"
    else:
        where = f"the TemplateFlow atlas *{atlas}*"
    how = (f"SUVR relative to the reference region {reference_region.replace('_', ' ')}"
           if reference_region else
           "regional means (no reference region is known for this tracer, so no SUVR)")
    return (f"Regional {tracer} uptake was summarised in the template space as {how}, with "
            f"{where}" + (", and with the GAAIN Centiloid regions for Centiloid." if centiloid
                          else "."))
