"""Inference: harmonize one PET-MR volume on its T1w grid.

The nets work on ``roi_size``^3 patches of 2 mm voxels; whole volumes go through MONAI's
``sliding_window_inference`` (Gaussian blending). Volumes of another voxel size are
resampled to 2 mm (trilinear; nearest for the mask) when ``spacing`` is given, and the
log-ratio map and pseudo-CT are resampled back, so the outputs are on the input grid.
Without ``spacing`` the voxels are assumed to be 2 mm.

``harmonized = PET-MR * exp(r)``: units and scale of the input are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .intensity import normalise_pet, normalise_t1w, target_to_hu

LOGGER = logging.getLogger(__name__)

MODEL_SPACING_MM = 2.0


@dataclass
class HarmonizationResult:
    """Arrays on the input (T1w) grid, float32."""

    harmonized: np.ndarray
    pseudo_ct_hu: np.ndarray
    log_ratio: np.ndarray
    notes: list[str] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)


def tracer_notes(tracer, model) -> list[str]:
    """Notes on how well the model's training covers ``tracer``."""
    from ..tracers import UnknownTracerError, get_tracer

    trained = model.trained_tracers
    families = model.trained_families
    if tracer is None or str(tracer) == "":
        return ["tracer not given: the correction is tracer-agnostic, coverage not checked"]
    try:
        info = get_tracer(str(tracer))
    except UnknownTracerError:
        return [
            f"tracer {tracer!r} is not in the tracer table; the model was trained on "
            f"{', '.join(trained) or 'unknown tracers'}: the correction is extrapolated"
        ]
    if info.name in trained:
        return []
    if info.family in families:
        return [
            f"tracer {info.name} was not in the training set ({', '.join(trained)}), but its "
            f"family ({info.family}) was: tracer-agnostic correction applied"
        ]
    return [
        f"tracer {info.name} (family {info.family}) is unseen: the model was trained on "
        f"{', '.join(trained) or 'unknown tracers'} (families {', '.join(families) or '?'}); "
        "tracer-agnostic correction applied, check the results"
    ]


def _zoom(array, factors, order):
    from scipy import ndimage

    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def harmonize_volume(
    pet_mr,
    t1w,
    brain_mask,
    model,
    *,
    tracer: str | None = None,
    device: str = "auto",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    spacing=None,
    progress: bool = False,
) -> HarmonizationResult:
    """Harmonize a PET-MR image towards PET-CT.

    Args:
        pet_mr: PET-MR (any units, e.g. Bq/mL or SUV) on the T1w grid, 3-D.
        t1w: T1w on the same grid.
        brain_mask: brain mask on the same grid (>0.5 is brain).
        model: a :class:`~bids_harmonize.harmonizer.weights.HarmonizerModel` or a model
            directory.
        tracer: tracer name, only used for the coverage notes (the net never sees it).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap (0..1).
        spacing: voxel size (mm) of the inputs; resampled to 2 mm when it differs.
        progress: show MONAI's sliding-window progress bar.

    Returns:
        :class:`HarmonizationResult` (harmonized PET, pseudo-CT in HU, log-ratio map, notes).
    """
    import torch
    from monai.inferers import sliding_window_inference

    from .device import resolve_device
    from .weights import HarmonizerModel, load_model

    if not isinstance(model, HarmonizerModel):
        model = load_model(model)
    pet_mr = np.asarray(pet_mr, dtype=np.float32)
    t1w = np.asarray(t1w, dtype=np.float32)
    brain_mask = np.asarray(brain_mask) > 0.5
    if pet_mr.ndim != 3 or pet_mr.shape != t1w.shape or pet_mr.shape != brain_mask.shape:
        raise ValueError(
            f"PET {pet_mr.shape}, T1w {t1w.shape} and mask {brain_mask.shape} must be 3-D arrays on one grid"
        )
    dev = resolve_device(device)
    notes = tracer_notes(tracer, model)
    for note in notes:
        (LOGGER.info if tracer is None else LOGGER.warning)(note)

    shape = pet_mr.shape
    factors = None
    if spacing is not None:
        spacing = np.asarray(spacing, dtype=float)[:3]
        if np.any(np.abs(spacing - MODEL_SPACING_MM) > 0.02 * MODEL_SPACING_MM):
            factors = spacing / MODEL_SPACING_MM
            notes.append("inputs resampled from " + " x ".join(f"{float(v):.3g}" for v in spacing)
                         + " mm to 2 mm and back")
    pet_in, t1w_in, mask_in = pet_mr, t1w, brain_mask
    if factors is not None:
        pet_in = _zoom(pet_mr, factors, 1)
        t1w_in = _zoom(t1w, factors, 1)
        mask_in = _zoom(brain_mask.astype(np.float32), factors, 0) > 0.5
    pet_n, _ = normalise_pet(pet_in, mask_in)
    t1w_n = normalise_t1w(t1w_in, mask_in)

    net = model.net.to(dev).eval()
    roi = model.config.anatomy.roi_size
    x = torch.from_numpy(np.stack([pet_n, t1w_n]))[None].to(dev)

    def predictor(patch):
        return net(patch[:, :1], patch[:, 1:2]).float()

    amp = dev.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=dev.type, enabled=amp):
        out = sliding_window_inference(
            x,
            roi_size=(roi,) * 3,
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            progress=progress,
        )
    out = out[0].float().cpu().numpy()
    model.net.to("cpu")
    r, pseudo_mu = out[0], out[1]
    if factors is not None:
        back = [s / n for s, n in zip(shape, r.shape, strict=True)]
        r, pseudo_mu = _zoom(r, back, 1), _zoom(pseudo_mu, back, 1)
        r, pseudo_mu = (
            r[tuple(slice(0, s) for s in shape)],
            pseudo_mu[tuple(slice(0, s) for s in shape)],
        )
    r = r.astype(np.float32)
    harmonized = (pet_mr * np.exp(r)).astype(np.float32)
    if not model.config.correction.use_anatomy:
        notes.append("model without anatomy stages: no pseudo-CT")
    return HarmonizationResult(
        harmonized=harmonized,
        pseudo_ct_hu=target_to_hu(pseudo_mu),
        log_ratio=r,
        notes=notes,
        model_info=model.info(),
    )
