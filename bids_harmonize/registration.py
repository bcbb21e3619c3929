"""Image registration and resampling with ANTs, in process (antspyx).

Each function reads and writes files in a folder it is given, so that Nipype
interfaces can call it from their working directory (ANTs writes its
transforms there through ``outprefix``); random sampling is seeded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOGGER = logging.getLogger("bids_harmonize.registration")

#: Registration settings: ``sloppy`` is for tests and demos.
SETTINGS = {
    # the default: tuned for 2 mm PET-oriented work on a few cores (minutes, not hours)
    "precise": {"aff_iterations": (500, 250, 100), "reg_iterations": (40, 20, 5),
                "aff_shrink_factors": (4, 2, 1), "aff_smoothing_sigmas": (2, 1, 0),
                "syn_metric": "mattes", "syn_sampling": 32},
    "sloppy": {"aff_iterations": (100, 50), "reg_iterations": (20, 10, 0),
               "aff_shrink_factors": (4, 2), "aff_smoothing_sigmas": (2, 1),
               "syn_metric": "CC", "syn_sampling": 2},
    # PET -> T1w and CT -> T1w (default): the full-resolution level only polishes, so it gets
    # 10 iterations. benchmarks/registration_speed.py, against the simulator's true poses:
    # the same error as "precise" (CT 0.26 mm, PET 0.23/0.59 mm mean over the brain) in
    # 45 % of the time (CT 6.7 s vs 14.9 s on one thread)
    "rigid": {"aff_iterations": (100, 50, 10), "aff_shrink_factors": (4, 2, 1),
              "aff_smoothing_sigmas": (2, 1, 0)},
    # frame-to-frame realignment: small motions, noisy frames; full resolution adds nothing
    "frames": {"aff_iterations": (100, 50), "aff_shrink_factors": (4, 2),
               "aff_smoothing_sigmas": (2, 1)},
    "frames_sloppy": {"aff_iterations": (50,), "aff_shrink_factors": (4,),
                      "aff_smoothing_sigmas": (2,)},
}


#: HDF5's file-locking switch, read by the HDF5 library inside ANTsPy (ITK's bundled 1.12)
HDF5_LOCKING_VARIABLE = "HDF5_USE_FILE_LOCKING"


def hdf5_file_locking() -> str:
    """Set HDF5's file locking to ``BEST_EFFORT`` unless the user chose a value; return it.

    The only HDF5 files this app opens are ANTs composite transforms (``*_xfm.h5``): written
    once by the registration node, then read by several nodes, possibly at once. HDF5 takes
    a shared lock for reading, so parallel readers do not conflict; what fails is a
    file system without locks (some NFS and Lustre mounts: "unable to lock file, errno =
    38"). ``BEST_EFFORT`` locks where the file system can and goes on where it cannot,
    keeping the protection against a reader meeting a half-written transform (a second
    run writing into the same work folder). ``FALSE``, which the app used to set for the
    whole process, dropped that protection everywhere; a user who needs it still sets
    ``HDF5_USE_FILE_LOCKING=FALSE`` and it is respected as is.

    HDF5 reads the variable once, when it first opens a file in the process, so this runs
    before each process's first ANTs call (:func:`_ants`), not around single reads.

    >>> import os
    >>> saved = os.environ.pop(HDF5_LOCKING_VARIABLE, None)
    >>> hdf5_file_locking()
    'BEST_EFFORT'
    >>> os.environ[HDF5_LOCKING_VARIABLE] = "FALSE"
    >>> hdf5_file_locking()
    'FALSE'
    >>> _ = os.environ.pop(HDF5_LOCKING_VARIABLE) if saved is None else os.environ.update(
    ...     {HDF5_LOCKING_VARIABLE: saved})
    """
    return os.environ.setdefault(HDF5_LOCKING_VARIABLE, "BEST_EFFORT")


def _ants(seed: int | None = None):
    hdf5_file_locking()  # before ANTs' HDF5 opens its first file in this process
    import ants

    if seed is not None:  # antspyx passes this as --random-seed to every registration
        ants.config._random_seed = ants_seed(seed)
    return ants


def ants_seed(seed: int) -> int:
    """ANTs' ``--random-seed`` for our seed: never 0, which ANTs reads as "seed from the clock".

    >>> ants_seed(0), ants_seed(41)
    (1, 42)
    """
    return int(seed) % (2**31 - 2) + 1


def set_threads(n: int) -> None:
    """Threads ITK may use in this process.

    ITK reads the variable once per process, when it first starts its thread pool: call this
    before the process's first ANTs call (Nipype interfaces do, in each worker).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(n)))


def n4_bias_correct(in_file: str, out_file: str, *, sloppy: bool = False) -> str:
    """N4 bias-field correction (ANTs), written to ``out_file``."""
    ants = _ants()
    img = ants.image_read(in_file)
    head = ants.get_mask(img)
    # shrink 4 (as fMRIPrep does): the bias field is smooth; full resolution cost 117 s vs 2 s
    conv = {"iters": [20, 10], "tol": 1e-5} if sloppy else {"iters": [50, 50, 30], "tol": 1e-6}
    corrected = ants.n4_bias_field_correction(img, mask=head, shrink_factor=4, convergence=conv)
    ants.image_write(corrected, out_file)
    return out_file


def register_to_template(
    t1w_file: str, template_t1w: str, template_mask: str, out_dir: Path, *,
    sloppy: bool = False, seed: int = 0,
) -> dict:
    """Atlas-based brain extraction and nonlinear registration of a T1w to a template.

    1. affine T1w -> template (whole head against the template, mask-weighted);
    2. the template brain mask brought back to the T1w is the brain mask;
    3. SyN between the brain-extracted T1w and the brain-extracted template.

    Returns the forward (T1w -> template) and inverse composite transforms
    (ANTs ``.h5``), the warped T1w, and the brain mask on the T1w grid.
    """
    ants = _ants(seed)
    out_dir = Path(out_dir)
    settings = SETTINGS["sloppy" if sloppy else "precise"]
    moving = ants.image_read(t1w_file)
    fixed = ants.image_read(template_t1w)
    fixed_mask = ants.image_read(template_mask)
    fixed_brain = fixed * fixed_mask

    affine = ants.registration(
        fixed=fixed_brain, moving=moving, type_of_transform="Affine",
        mask=ants.iMath(fixed_mask, "MD", 4), aff_metric="mattes",
        aff_iterations=settings["aff_iterations"], aff_shrink_factors=settings["aff_shrink_factors"],
        aff_smoothing_sigmas=settings["aff_smoothing_sigmas"],
        initial_transform=None, outprefix=str(out_dir / "affine_"),
    )
    brain_mask = ants.apply_transforms(
        fixed=moving, moving=fixed_mask, transformlist=affine["invtransforms"],
        whichtoinvert=[True], interpolator="linear",
    )
    brain_mask = ants.threshold_image(brain_mask, 0.5, 1e9)
    brain = moving * brain_mask
    syn = ants.registration(
        fixed=fixed_brain, moving=brain, type_of_transform="SyNOnly",
        initial_transform=affine["fwdtransforms"][0], reg_iterations=settings["reg_iterations"],
        syn_metric=settings["syn_metric"], syn_sampling=settings["syn_sampling"],
        outprefix=str(out_dir / "syn_"), write_composite_transform=True,
    )
    fwd, inv = syn["fwdtransforms"], syn["invtransforms"]  # composite .h5 files (affine + warp)
    mask_file = str(out_dir / "brain_mask.nii.gz")
    ants.image_write(ants.image_clone(brain_mask, pixeltype="unsigned char"), mask_file)
    warped_file = str(out_dir / "t1w_in_template.nii.gz")
    ants.image_write(syn["warpedmovout"], warped_file)
    return {"forward": [fwd], "inverse": [inv], "brain_mask": mask_file, "warped": warped_file}


def register_rigid(
    moving_file: str, fixed_file: str, out_dir: Path, *, fixed_mask: str | None = None,
    prefix: str = "rigid_", sloppy: bool = False, seed: int = 0, profile: str | None = None,
) -> dict:
    """Rigid registration by mutual information (PET->T1w, CT->T1w, frame->reference).

    ``profile`` picks a row of :data:`SETTINGS` (default: ``sloppy`` or ``rigid``).
    """
    ants = _ants(seed)
    out_dir = Path(out_dir)
    settings = SETTINGS[profile or ("sloppy" if sloppy else "rigid")]
    fixed = ants.image_read(fixed_file)
    moving = ants.image_read(moving_file)
    kwargs = {}
    if fixed_mask:
        kwargs["mask"] = ants.iMath(ants.image_read(fixed_mask), "MD", 3)
    reg = ants.registration(
        fixed=fixed, moving=moving, type_of_transform="Rigid", aff_metric="mattes",
        aff_iterations=settings["aff_iterations"], aff_shrink_factors=settings["aff_shrink_factors"],
        aff_smoothing_sigmas=settings["aff_smoothing_sigmas"],
        outprefix=str(out_dir / prefix), **kwargs,
    )
    # one .mat under out_dir; its inverse is the same file applied with whichtoinvert=[True]
    return {"forward": list(reg["fwdtransforms"])}


def apply_transforms(
    in_file: str, reference: str, transforms: list[str], out_file: str, *,
    invert: list[bool] | None = None, interpolation: str = "linear", default_value: float = 0.0,
) -> str:
    """Resample an image onto a reference grid through a list of ANTs transforms."""
    ants = _ants()
    moving = ants.image_read(in_file)
    fixed = ants.image_read(reference)
    out = ants.apply_transforms(
        fixed=fixed, moving=moving, transformlist=list(transforms),
        whichtoinvert=invert or [False] * len(transforms), interpolator=interpolation,
        defaultvalue=default_value,
    )
    ants.image_write(out, out_file)
    return out_file
