"""Anatomical preprocessing: N4, brain mask, template registration, tissue maps."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.interfaces.anat import (
    ApplyTransforms,
    N4BiasCorrection,
    TemplateRegistration,
)
from bids_harmonize.templates import TemplateFiles

TISSUES = ("GM", "WM", "CSF")


def init_anat_wf(
    *, template: TemplateFiles, sloppy: bool = False, seed: int = 0, omp_nthreads: int = 1,
    name: str = "anat_wf",
) -> Workflow:
    """Preprocess a T1w image and register it to one output template.

    Parameters
    ----------
    template
        Files of the output template (T1w, brain mask, GM/WM/CSF maps).
    sloppy
        Fast, low-accuracy settings (tests and demos).
    seed
        Random seed of ANTs' metric sampling.
    omp_nthreads
        Threads for ITK.

    Inputs
    ------
    t1w
        The subject's T1w image (with skull).

    Outputs
    -------
    t1w_preproc
        Bias-corrected T1w: its grid is the subject's "T1w space".
    brain_mask
        Brain mask on the T1w grid.
    t1w2tpl_xfm, tpl2t1w_xfm
        Composite ANTs transforms (``.h5``) T1w -> template and back.
    tpl_t1w
        The T1w brain resampled into the template.
    tissue_probseg
        GM, WM and CSF probability maps on the T1w grid (template priors warped).

    .. workflow::

        from bids_harmonize.templates import get_template
        from bids_harmonize.workflows.anat import init_anat_wf
        tpl = get_template("MNI152NLin2009aSym")  # bids_harmonize-templates caches it offline
        wf = init_anat_wf(template=tpl, sloppy=True)
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = (
        "The T1-weighted image was corrected for intensity non-uniformity with N4 "
        "[@n4], brain-extracted by warping the template brain mask, and registered "
        f"nonlinearly to the *{template.name}* template with symmetric normalisation "
        "(SyN) [@ants] as implemented in ANTsPy (in process). Tissue probability maps "
        "were obtained by warping the template's GM, WM and CSF priors to the T1w."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w_preproc", "brain_mask", "t1w2tpl_xfm", "tpl2t1w_xfm",
                                      "tpl_t1w", "tissue_probseg", "template_t1w"]),
        name="outputnode",
    )
    outputnode.inputs.template_t1w = str(template.t1w)
    n4 = pe.Node(N4BiasCorrection(sloppy=sloppy, omp_nthreads=omp_nthreads), name="n4",
                 n_procs=omp_nthreads)
    register = pe.Node(
        TemplateRegistration(template_t1w=str(template.t1w), template_mask=str(template.brain_mask),
                             sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads),
        name="register_template", n_procs=omp_nthreads, mem_gb=2,
    )
    warp_priors = pe.MapNode(
        ApplyTransforms(interpolation="linear"), iterfield=["in_file", "out_name"],
        name="warp_priors",
    )
    warp_priors.inputs.in_file = [str(template.probseg[t]) for t in TISSUES]
    warp_priors.inputs.out_name = [f"label-{t}_probseg.nii.gz" for t in TISSUES]

    workflow.connect([
        (inputnode, n4, [("t1w", "in_file")]),
        (n4, register, [("out_file", "in_file")]),
        (n4, warp_priors, [("out_file", "reference")]),
        (register, warp_priors, [("inverse_transforms", "transforms")]),
        (n4, outputnode, [("out_file", "t1w_preproc")]),
        (register, outputnode, [("brain_mask", "brain_mask"),
                                ("forward_transforms", "t1w2tpl_xfm"),
                                ("inverse_transforms", "tpl2t1w_xfm"),
                                ("warped_file", "tpl_t1w")]),
        (warp_priors, outputnode, [("out_file", "tissue_probseg")]),
    ])  # fmt: skip
    return workflow
