"""Inference: harmonize one PET-MR volume on its T1w grid.

The nets work on ``roi_size``^3 patches of 2 mm voxels; whole volumes go through MONAI's
``sliding_window_inference`` (Gaussian blending). Volumes of another voxel size are
resampled to 2 mm (trilinear; nearest for the mask) when ``spacing`` is given, and the
log-ratio map and pseudo-CT are resampled back, so the outputs are on the input grid.
Without ``spacing`` the voxels are assumed to be 2 mm.

``harmonized = PET-MR * exp(r)``: units and scale of the input are kept.

The stage-3 inputs follow the model's configured channel layout
(:func:`~.config.stage3_channels`). A physics-guided model (channel ``ac_error``) gets a
first sliding-window pass for the pseudo-CT, from which :mod:`.physics` makes the expected
attenuation-correction error against the scanner's mu-map (``mu_map``), or against the map
the scanner's setup (``ac_setup``) would have made; a model without that channel ignores
a given mu-map (with a note).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .config import MODEL_SPACING_MM, stage3_channels
from .intensity import MU_WATER, normalise_pet, normalise_t1w, target_to_hu

LOGGER = logging.getLogger(__name__)


@dataclass
class HarmonizationResult:
    """Arrays on the input (T1w) grid, float32."""

    harmonized: np.ndarray
    pseudo_ct_hu: np.ndarray
    log_ratio: np.ndarray
    notes: list[str] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)
    ac_error: np.ndarray | None = None  #: the physics channel, when the model uses one
    ac_error_source: str | None = None  #: where ac_error came from (scanner mu-map, setup, ...)
    #: ``(M, ...)`` log ratios of an ensemble (member 0 = ``log_ratio``) when members were given
    member_log_ratios: np.ndarray | None = None


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


def _sliding(x, predictor, roi, sw_batch_size, overlap, progress):
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        x,
        roi_size=(roi,) * 3,
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode="gaussian",
        padding_mode="constant",
        progress=progress,
    )


def pseudo_mu_volume(net, t1w_n, config, device, *, sw_batch_size=4, overlap=0.25, progress=False):
    """Pseudo attenuation (mu / mu_water) of a whole normalised T1w volume (2 mm grid)."""
    import torch

    from .device import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    net.eval()  # the anatomy stages are frozen wherever this is called
    x = torch.from_numpy(np.ascontiguousarray(t1w_n, dtype=np.float32))[None, None].to(dev)
    amp = dev.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=dev.type, enabled=amp):
        out = _sliding(
            x, lambda p: net.pseudo_mu(p).float(), config.anatomy.roi_size, sw_batch_size, overlap, progress
        )
    return out[0, 0].float().cpu().numpy()


def harmonize_volume(
    pet_mr,
    t1w,
    brain_mask,
    model,
    *,
    tracer: str | None = None,
    mu_map=None,
    ac_setup: str | None = None,
    device: str = "auto",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    spacing=None,
    progress: bool = False,
    members=None,
) -> HarmonizationResult:
    """Harmonize a PET-MR image towards PET-CT.

    Args:
        pet_mr: PET-MR (any units, e.g. Bq/mL or SUV) on the T1w grid, 3-D.
        t1w: T1w on the same grid.
        brain_mask: brain mask on the same grid (>0.5 is brain).
        model: a :class:`~bids_harmonize.harmonizer.weights.HarmonizerModel` or a model
            directory.
        tracer: tracer name, only used for the coverage notes (the net never sees it).
        mu_map: the PET-MR scanner's attenuation map (1/cm at 511 keV) on the same grid,
            used by physics-guided models (channel ``ac_error``), ignored by others.
        ac_setup: the scanner's attenuation-correction setup (``bids_harmonize.acsetups``
            name); used without ``mu_map`` to rebuild the map that setup makes.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap (0..1).
        spacing: voxel size (mm) of the inputs; resampled to 2 mm when it differs.
        progress: show MONAI's sliding-window progress bar.
        members: extra stage-3 nets of an ensemble (:func:`.uncertainty.load_members`);
            their log ratios come back in ``member_log_ratios``.

    Returns:
        :class:`HarmonizationResult` (harmonized PET, pseudo-CT in HU, log-ratio map, notes).
    """
    import torch

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
    if mu_map is not None:
        mu_map = np.asarray(mu_map, dtype=np.float32)
        if mu_map.shape != pet_mr.shape:
            raise ValueError(f"mu-map {mu_map.shape} is not on the PET/T1w grid {pet_mr.shape}")
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
    pet_in, t1w_in, mask_in, mu_in = pet_mr, t1w, brain_mask, mu_map
    if factors is not None:
        pet_in = _zoom(pet_mr, factors, 1)
        t1w_in = _zoom(t1w, factors, 1)
        mask_in = _zoom(brain_mask.astype(np.float32), factors, 0) > 0.5
        mu_in = None if mu_map is None else _zoom(mu_map, factors, 1)
    pet_n, _ = normalise_pet(pet_in, mask_in)
    t1w_n = normalise_t1w(t1w_in, mask_in)

    config = model.config
    net = model.net.to(dev).eval()
    roi = config.anatomy.roi_size
    voxel_names = [c.name for c in stage3_channels(config.correction, route="voxel")]
    channels = {"pet": pet_n}
    ac_error = source = None
    if "ac_error" in voxel_names:
        from .physics import ac_error_for

        mu_est = pseudo_mu_volume(net, t1w_n, config, dev, sw_batch_size=sw_batch_size, overlap=overlap)
        ac_error, source = ac_error_for(
            mu_est * MU_WATER, mu_in, ac_setup or "unknown", config.physics, pet_n
        )
        channels["ac_error"] = ac_error
        if source == "none":
            notes.append(
                "no scanner mu-map and no known attenuation-correction setup: physics map is 0, "
                "the correction is the learned residual only"
            )
    elif mu_map is not None:
        notes.append("model has no mu-map channel (trained without it): the scanner's mu-map is not used")
    stack = [channels[name] for name in voxel_names] + [t1w_n]
    x = torch.from_numpy(np.stack(stack).astype(np.float32))[None].to(dev)
    n_voxel = len(voxel_names)

    members = [m.to(dev).eval() for m in (members or [])]

    def predictor(patch):
        voxel, t1w_patch = patch[:, :n_voxel], patch[:, n_voxel : n_voxel + 1]
        out = net(voxel, t1w_patch).float()
        if members:
            from .uncertainty import member_log_ratios

            out = torch.cat([out, member_log_ratios(net, members, voxel, t1w_patch)], dim=1)
        return out

    amp = dev.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=dev.type, enabled=amp):
        out = _sliding(x, predictor, roi, sw_batch_size, overlap, progress)
    out = out[0].float().cpu().numpy()
    model.net.to("cpu")
    for m in members:
        m.to("cpu")
    r, pseudo_mu, extra = out[0], out[1], out[2:]
    if factors is not None:
        back = [s / n for s, n in zip(shape, r.shape, strict=True)]
        inside = tuple(slice(0, s) for s in shape)
        r, pseudo_mu = _zoom(r, back, 1)[inside], _zoom(pseudo_mu, back, 1)[inside]
        extra = np.stack([_zoom(e, back, 1)[inside] for e in extra]) if len(extra) else extra
        if ac_error is not None:
            ac_error = _zoom(ac_error, back, 1)[inside]
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
        ac_error=None if ac_error is None else ac_error.astype(np.float32),
        ac_error_source=source,
        member_log_ratios=np.concatenate([r[None], extra]).astype(np.float32) if members else None,
    )
