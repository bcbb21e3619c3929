"""Inference: harmonize one PET-MR volume on its T1w grid.

The nets work on ``roi_size``^3 patches of the model grid (RAS+, 2 mm voxels,
:mod:`.grid`); whole volumes go through MONAI's ``sliding_window_inference`` (Gaussian
blending). Inputs given with their ``affine`` are reoriented and resampled to that grid
exactly as training prepares its volumes (:func:`~.data.prepare_pair`), and the log-ratio
map and pseudo-CT are brought back, so the outputs are on the input grid.

``harmonized = PET-MR * exp(r)``: units and scale of the input are kept. ``r`` is applied
inside the (dilated) brain mask and fades to 0 outside it (:func:`correction_support`):
scalp, skull and background are left as acquired.

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

from .config import stage3_channels
from .grid import ModelGrid
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
    #: the do-no-harm guard's sidecar record (:mod:`.guard`), when the model has one
    guard: dict | None = None


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


#: the correction is applied inside the brain mask dilated by this many mm, and fades to
#: none over :data:`SUPPORT_FADE_MM` beyond it: the stage-3 loss only ever sees the dilated
#: brain (``HarmonizerConfig.mask_dilation``), so outside it ``r`` is unconstrained and
#: was measured to change scalp and background by a median +16 % on the README demo
#: (issue 19); PET-MR tissue outside the brain is left as acquired
SUPPORT_MARGIN_MM = 4.0
SUPPORT_FADE_MM = 6.0


def correction_support(brain_mask, spacing_mm: float = 2.0) -> np.ndarray:
    """Weight in [0, 1] of the correction: 1 inside the brain mask dilated by
    :data:`SUPPORT_MARGIN_MM`, falling smoothly to 0 over :data:`SUPPORT_FADE_MM` beyond.

    >>> m = np.zeros((20, 20, 20), bool); m[8:12, 8:12, 8:12] = True
    >>> w = correction_support(m)
    >>> float(w[10, 10, 10]), float(w[10, 10, 13]), float(w[0, 0, 0])
    (1.0, 1.0, 0.0)
    """
    from scipy import ndimage

    mask = np.asarray(brain_mask) > 0.5
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    dist = ndimage.distance_transform_edt(~mask) * spacing_mm
    w = np.clip(1.0 - (dist - SUPPORT_MARGIN_MM) / SUPPORT_FADE_MM, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * w)).astype(np.float32)


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


def ensemble_log_ratios(net, members, voxel, t1w, anatomy=None):
    """Log ratios ``(B, M, S, S, S)`` of the extra stage-3 nets on one batch of patches.

    Same inputs as :class:`~.nets.harmonizer.ThreeStageHarmonizer` ``forward(voxel, t1w)``;
    the frozen anatomy stages run once for all members, or not at all when ``anatomy``
    (the ``(tokens, pseudo_mu)`` of ``net.anatomy(t1w)``) is given.
    """
    import torch

    if net.config.correction.use_anatomy:
        tokens, pseudo_mu = anatomy if anatomy is not None else net.anatomy(t1w)
        outs = [m(voxel, tokens, pseudo_mu) for m in members]
    else:
        outs = [m(voxel) for m in members]
    return torch.cat([o.float() for o in outs], dim=1)


def _primary_and_members(net, members, voxel, t1w):
    """``net(voxel, t1w)`` with the members' log ratios appended, the frozen anatomy stages
    run once per patch for all of them (they are shared: every member was trained on the
    same stage-1/2 weights)."""
    import torch

    anatomy = net.anatomy(t1w) if net.config.correction.use_anatomy else None
    return torch.cat([net(voxel, t1w, anatomy=anatomy).float(),
                      ensemble_log_ratios(net, members, voxel, t1w, anatomy=anatomy)], dim=1)


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
    affine=None,
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
        spacing: voxel size (mm) of inputs already in RAS+ order (ignored with ``affine``).
        affine: the inputs' voxel-to-world affine: they are reoriented to RAS+ and
            resampled to 2 mm for the nets (:class:`~.grid.ModelGrid`) and the outputs
            brought back. Without it (and without ``spacing``) the inputs must be RAS+ 2 mm.
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

    grid = (ModelGrid.from_affine(pet_mr.shape, affine) if affine is not None
            else ModelGrid.from_spacing(pet_mr.shape, spacing))
    if grid.describe():
        notes.append(grid.describe())
    pet_in, t1w_in = grid.to_model(pet_mr, 1), grid.to_model(t1w, 1)
    mask_in = grid.to_model(brain_mask.astype(np.float32), 0) > 0.5
    mu_in = None if mu_map is None else grid.to_model(mu_map, 1)
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
        if members:
            return _primary_and_members(net, members, voxel, t1w_patch)
        return net(voxel, t1w_patch).float()

    amp = dev.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=dev.type, enabled=amp):
        out = _sliding(x, predictor, roi, sw_batch_size, overlap, progress)
    out = out[0].float().cpu().numpy()
    model.net.to("cpu")
    for m in members:
        m.to("cpu")
    r, pseudo_mu, extra = out[0], out[1], out[2:]
    weight = correction_support(mask_in)
    r, extra = r * weight, extra * weight
    r, pseudo_mu = grid.from_model(r, 1), grid.from_model(pseudo_mu, 1)
    extra = np.stack([grid.from_model(e, 1) for e in extra]) if len(extra) else extra
    if ac_error is not None:
        ac_error = grid.from_model(ac_error, 1)
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
