"""PET preprocessing: uptake window, SUV, PET->T1w, CT->T1w, template resampling."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.interfaces.anat import ApplyTransforms, RigidRegistration
from bids_harmonize.interfaces.pet import PETStaticImage, SmoothToResolution


def init_pet_wf(
    *, metadata: dict, window_min: tuple[float, float] | None, half_life_min: float,
    has_ct: bool = False, sloppy: bool = False, seed: int = 0, omp_nthreads: int = 1,
    tpl_name: str = "pet_tpl.nii.gz", name: str = "pet_wf", window_policy: str = "strict",
    body_weight: tuple[float | None, str] = (None, "none"),
    common_resolution: dict | None = None,
) -> Workflow:
    """Turn one PET series into a static uptake image on the T1w grid and in the template.

    Parameters
    ----------
    metadata
        The PET sidecar (frame timing, dose, weight, units).
    window_min
        Uptake window, minutes after injection (None: every frame, the whole static or
        summed image, for a tracer named nowhere without ``--uptake-window``).
    window_policy
        ``strict`` or ``nearest`` (:func:`bids_harmonize.petmath.select_frames`).
    body_weight
        ``(kg, source)`` from :func:`bids_harmonize.petmath.body_weight`; without a weight
        the image is dose-normalised (%ID/L) rather than SUV.
    half_life_min
        Half-life of the radionuclide, for SUV decay handling.
    has_ct
        The session holds a CT: register it to the T1w too (training pairs).
    tpl_name
        File name of the template-space image (BIDS-like, so that tables named
        after it carry the right entities).
    common_resolution
        ``None`` (default): no smoothing. Else the record of
        :func:`bids_harmonize.resolution.resolution_record`: the static image is smoothed
        from the scanner's effective resolution to the common one before registration.

    Inputs
    ------
    pet_file, ct_file
        The PET series and (when ``has_ct``) the session's CT.
    t1w_preproc, brain_mask, t1w2tpl_xfm, template_t1w
        From the anatomical workflow.

    Outputs
    -------
    pet_static
        Window-averaged (SUV when possible) PET in its own space.
    pet_t1w, pet_tpl
        The static PET on the T1w grid and in the template.
    ct_t1w
        The CT (HU) on the T1w grid, when the session has one.
    static_info
        Frames used, weights, actual window, motion, units.

    .. workflow::

        from bids_harmonize.workflows.pet import init_pet_wf
        wf = init_pet_wf(metadata={"FrameTimesStart": [0], "FrameDuration": [600]},
                         window_min=(0, 10), half_life_min=109.77, has_ct=True)
    """
    workflow = Workflow(name=name)
    window_text = (f"within the uptake window ({window_min[0]:g}-{window_min[1]:g} min after "
                   "injection)" if window_min else "(all frames: no uptake window known)")
    workflow.__desc__ = (
        f"PET frames {window_text} were rigidly realigned to their mean and averaged with "
        "duration weights, scaled to SUV when dose and body weight were known (to the "
        "injected dose otherwise), and registered rigidly to the "
        "T1w by mutual information [@ants]"
        + ("; the session's CT was registered to the T1w likewise." if has_ct else ".")
    )
    if common_resolution:
        workflow.__desc__ += (
            f" The static image was smoothed to a common effective resolution of "
            f"{common_resolution['CommonResolutionFWHM']:g} mm FWHM with an isotropic "
            f"Gaussian of {common_resolution['SmoothingKernelFWHM']:.2f} mm (the scanner's "
            f"{common_resolution['ScannerEffectiveResolutionFWHM']:g} mm added in "
            "quadrature), as multi-site amyloid studies do [@joshi2009resolution]."
        )
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["pet_file", "ct_file", "t1w_preproc", "brain_mask",
                                      "t1w2tpl_xfm", "template_t1w"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["pet_static", "pet_t1w", "pet_tpl", "ct_t1w",
                                      "static_info", "pet2t1w_xfm"]),
        name="outputnode",
    )
    static = pe.Node(
        PETStaticImage(metadata=metadata, half_life_min=half_life_min, sloppy=sloppy,
                       seed=seed, omp_nthreads=omp_nthreads, window_policy=window_policy,
                       body_weight_source=body_weight[1]),
        name="static", n_procs=omp_nthreads,
    )
    if window_min is not None:
        static.inputs.window_min = tuple(window_min)
    if body_weight[0] is not None:
        static.inputs.body_weight_kg = float(body_weight[0])
    pet2t1w = pe.Node(RigidRegistration(sloppy=sloppy, seed=seed, omp_nthreads=omp_nthreads),
                      name="pet2t1w", n_procs=omp_nthreads)
    to_template = pe.Node(ApplyTransforms(out_name=tpl_name), name="pet_to_template")

    static_out = static
    if common_resolution:
        static_out = pe.Node(
            SmoothToResolution(
                scanner_fwhm_mm=common_resolution["ScannerEffectiveResolutionFWHM"],
                target_fwhm_mm=common_resolution["CommonResolutionFWHM"]),
            name="smooth_to_resolution")
        workflow.connect(static, "out_file", static_out, "in_file")
    workflow.connect([
        (inputnode, static, [("pet_file", "in_file")]),
        (static_out, pet2t1w, [("out_file", "moving")]),
        (inputnode, pet2t1w, [("t1w_preproc", "fixed"), ("brain_mask", "fixed_mask")]),
        (pet2t1w, to_template, [("out_file", "in_file")]),
        (inputnode, to_template, [("template_t1w", "reference"), ("t1w2tpl_xfm", "transforms")]),
        (static_out, outputnode, [("out_file", "pet_static")]),
        (static, outputnode, [("info", "static_info")]),
        (pet2t1w, outputnode, [("out_file", "pet_t1w"), ("forward_transforms", "pet2t1w_xfm")]),
        (to_template, outputnode, [("out_file", "pet_tpl")]),
    ])  # fmt: skip
    if has_ct:
        ct2t1w = pe.Node(
            RigidRegistration(sloppy=sloppy, seed=seed, default_value=-1000.0,
                              omp_nthreads=omp_nthreads),
            name="ct2t1w", n_procs=omp_nthreads,
        )
        workflow.connect([
            # whole head: the skull drives CT-to-MR mutual information
            (inputnode, ct2t1w, [("ct_file", "moving"), ("t1w_preproc", "fixed")]),
            (ct2t1w, outputnode, [("out_file", "ct_t1w")]),
        ])  # fmt: skip
    return workflow
