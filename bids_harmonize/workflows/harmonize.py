"""The harmonizer as a workflow node, with its outputs resampled to the template."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.interfaces.anat import ApplyTransforms


def init_harmonize_wf(
    *, model_dir: str, tracer: str, device: str = "auto", omp_nthreads: int = 1,
    tpl_name: str = "harmonized_tpl.nii.gz", name: str = "harmonize_wf",
) -> Workflow:
    """Harmonize a PET-MR image on the T1w grid and bring it into the template.

    Parameters
    ----------
    model_dir
        Harmonization model directory (weights + ``model.json``).
    tracer
        Tracer label: recorded, and checked against the families the model saw.
    device
        ``auto``, ``cpu`` or ``cuda``; does not change Nipype's cache.
    tpl_name
        File name of the template-space harmonized image.

    Inputs
    ------
    pet_t1w, t1w_preproc, brain_mask, t1w2tpl_xfm, template_t1w

    Outputs
    -------
    harmonized_t1w, harmonized_tpl
        Harmonized PET on the T1w grid and in the template.
    pseudoct_t1w
        Pseudo-CT (HU) predicted from the T1w.
    model_info
        Model name, version, hash and notes (e.g. an unseen tracer family).

    .. workflow::

        from bids_harmonize.workflows.harmonize import init_harmonize_wf
        wf = init_harmonize_wf(model_dir=".", tracer="PiB")
    """
    from bids_harmonize.interfaces.harmonize import Harmonize

    workflow = Workflow(name=name)
    workflow.__desc__ = (
        "PET-MR images were harmonized towards PET-CT with a three-stage deep-learning model "
        "[@wang2026harmonization] (a CT vision-transformer autoencoder, an MRI encoder "
        "contrastively aligned to it, and a residual network predicting a multiplicative "
        "log-ratio correction), implemented with PyTorch and MONAI [@monai]."
    )
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["pet_t1w", "t1w_preproc", "brain_mask", "t1w2tpl_xfm",
                                      "template_t1w"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["harmonized_t1w", "harmonized_tpl", "pseudoct_t1w",
                                      "logratio_t1w", "model_info"]),
        name="outputnode",
    )
    harmonize = pe.Node(
        Harmonize(model_dir=str(model_dir), tracer=tracer, device=device,
                  omp_nthreads=omp_nthreads),
        name="harmonize", n_procs=omp_nthreads, mem_gb=3,
    )
    to_template = pe.Node(ApplyTransforms(out_name=tpl_name),
                          name="harmonized_to_template")
    workflow.connect([
        (inputnode, harmonize, [("pet_t1w", "in_pet"), ("t1w_preproc", "in_t1w"),
                                ("brain_mask", "in_mask")]),
        (harmonize, to_template, [("out_file", "in_file")]),
        (inputnode, to_template, [("template_t1w", "reference"), ("t1w2tpl_xfm", "transforms")]),
        (harmonize, outputnode, [("out_file", "harmonized_t1w"), ("out_pseudoct", "pseudoct_t1w"),
                                 ("out_logratio", "logratio_t1w"), ("model_info", "model_info")]),
        (to_template, outputnode, [("out_file", "harmonized_tpl")]),
    ])  # fmt: skip
    return workflow
