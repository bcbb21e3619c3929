"""The harmonizer as a workflow: scanner mu-map to the T1w grid, harmonization with its
uncertainty and out-of-distribution decision, and the results in the template."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.interfaces.anat import ApplyTransforms


def init_harmonize_wf(
    *, model_dir: str, tracer: str, tracer_family: str = "", scanner: str = "",
    ac_setup: str | None = None, ac_setup_inference: str = "", mumap_notes=(),
    use_mumap: bool = False, with_uncertainty: bool = False, ood_policy: str = "warn",
    device: str = "auto", omp_nthreads: int = 1, tpl_name: str = "harmonized_tpl.nii.gz",
    source_name: str = "", model_name: str = "", model_version: str = "",
    model_trained_on: str = "", model_guard: bool = False, name: str = "harmonize_wf",
) -> Workflow:
    """Harmonize a PET-MR image on the T1w grid and bring it into the template.

    Parameters
    ----------
    model_dir
        Harmonization model directory (weights + ``model.json``).
    tracer, tracer_family
        Tracer label and family: recorded, and checked against those the model saw.
    scanner, ac_setup, ac_setup_inference
        PET-MR scanner model, its attenuation-correction setup (``None``: unknown) and how
        that was inferred (:func:`bids_harmonize.bids.pet_attenuation`): the OOD metadata
        check, the physics channel of a v2 model, the sidecar.
    mumap_notes
        Notes of the mu-map check (a fallback to the setup), for the sidecar.
    use_mumap
        The scanner's mu-map (input ``mumap``, on its own grid, aligned with the PET) is
        resampled to the T1w grid through the PET-to-T1w transform and passed on.
    with_uncertainty
        The model has an ensemble: the uncertainty map and the members' template-space
        images (for regional SDs) are produced.
    ood_policy
        ``warn``, ``passthrough`` or ``fail`` for an out-of-distribution image.
    device
        ``auto``, ``cpu`` or ``cuda``; does not change Nipype's cache.
    tpl_name
        File name of the template-space harmonized image.
    source_name
        The PET series' file name, for log and error lines (default: ``tpl_name``).
    model_name, model_version, model_trained_on
        The model card's name, version and what it says the model was trained on
        (:attr:`~bids_harmonize.harmonizer.weights.HarmonizerModel.trained_on`): methods
        text only.
    model_guard
        The model card has a do-no-harm guard (:mod:`bids_harmonize.harmonizer.guard`):
        methods text only (the Harmonize node reads the card and applies it).

    Inputs
    ------
    pet_t1w, t1w_preproc, brain_mask, t1w2tpl_xfm, template_t1w
    pet2t1w_xfm, mumap
        PET-to-T1w transform and the scanner's mu-map (``use_mumap`` only).

    Outputs
    -------
    harmonized_t1w, harmonized_tpl
        Harmonized PET on the T1w grid and in the template.
    pseudoct_t1w
        Pseudo-CT (HU) predicted from the T1w.
    uncertainty_t1w
        Calibrated per-voxel SD of the log ratio (``with_uncertainty`` only).
    members_tpl, uncertainty_scale
        Template-space harmonized image of every ensemble member, and the calibration
        factor of their spread (``with_uncertainty`` only).
    model_info
        Model name, version, hash, notes, OOD decision and score, setup.

    .. workflow::

        from bids_harmonize.workflows.harmonize import init_harmonize_wf
        wf = init_harmonize_wf(model_dir=".", tracer="PiB", use_mumap=True,
                               with_uncertainty=True, ac_setup="dixon-nobone")
    """
    from bids_harmonize.interfaces.harmonize import Harmonize

    workflow = Workflow(name=name)
    workflow.__desc__ = (
        "PET-MR images were harmonized towards PET-CT with "
        + model_description(model_name, model_version, model_trained_on)
        + "a three-stage deep-learning model "
        "[@wang2026harmonization] (a CT vision-transformer autoencoder, an MRI encoder "
        "contrastively aligned to it, and a residual network predicting a multiplicative "
        "log-ratio correction), implemented with PyTorch and MONAI [@monai]."
    )
    if with_uncertainty:
        workflow.__desc__ += (
            " Its uncertainty was the calibrated spread of a deep ensemble of correction "
            "networks [@lakshminarayanan2017ensembles], and an out-of-distribution score "
            "(support of the scanner set-up and tracer in the training data, distance of the "
            "image features to the training images, ensemble disagreement) decided whether "
            f"the correction was applied (policy: {ood_policy})."
        )
    if model_guard:
        workflow.__desc__ += (
            " The correction was shrunk voxel by voxel by its calibrated uncertainty, with a "
            "strength chosen per attenuation-correction set-up and tracer family on paired "
            "PET-CT/PET-MR subjects held out of training (no correction was a candidate), so "
            "that the held-out subjects' regional SUVR came closest to PET-CT."
        )
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["pet_t1w", "t1w_preproc", "brain_mask", "t1w2tpl_xfm",
                                      "template_t1w", "pet2t1w_xfm", "mumap"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["harmonized_t1w", "harmonized_tpl", "pseudoct_t1w",
                                      "logratio_t1w", "uncertainty_t1w", "members_tpl",
                                      "uncertainty_scale", "model_info"]),
        name="outputnode",
    )
    harmonize = pe.Node(
        Harmonize(model_dir=str(model_dir), tracer=tracer, tracer_family=tracer_family,
                  scanner=scanner, ac_setup=ac_setup or "",
                  ac_setup_inference=ac_setup_inference, mumap_notes=list(mumap_notes),
                  ood_policy=ood_policy, device=device, omp_nthreads=omp_nthreads,
                  source_name=source_name or tpl_name),
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
    if use_mumap:
        mumap_to_t1w = pe.Node(ApplyTransforms(out_name="mumap_t1w.nii.gz"),
                               name="mumap_to_t1w")
        workflow.connect([
            (inputnode, mumap_to_t1w, [("mumap", "in_file"), ("t1w_preproc", "reference"),
                                       ("pet2t1w_xfm", "transforms")]),
            (mumap_to_t1w, harmonize, [("out_file", "in_mumap")]),
        ])  # fmt: skip
    if with_uncertainty:
        members_to_template = pe.MapNode(ApplyTransforms(out_name="member_tpl.nii.gz"),
                                         iterfield=["in_file"], name="members_to_template")
        workflow.connect([
            (harmonize, members_to_template, [("out_members", "in_file")]),
            (inputnode, members_to_template, [("template_t1w", "reference"),
                                              ("t1w2tpl_xfm", "transforms")]),
            (harmonize, outputnode, [("out_uncertainty", "uncertainty_t1w"),
                                     ("uncertainty_scale", "uncertainty_scale")]),
            (members_to_template, outputnode, [("out_file", "members_tpl")]),
        ])  # fmt: skip
    return workflow


def model_description(name: str, version: str = "", trained_on: str = "") -> str:
    """The words naming the model, its version and its training data (from its card).

    >>> model_description("demo", "0.3.0", "simulated data only")
    'the model *demo* (version 0.3.0; trained on simulated data only, as its card says), '
    >>> model_description("site", "1.0", "not stated in the model card")
    'the model *site* (version 1.0; its card does not say what it was trained on), '
    >>> model_description("")
    ''
    """
    if not name:
        return ""
    facts = [f"version {version}"] if version else []
    if trained_on and trained_on != "not stated in the model card":
        facts.append(f"trained on {trained_on}, as its card says")
    else:
        facts.append("its card does not say what it was trained on")
    return f"the model *{name}* ({'; '.join(facts)}), "
