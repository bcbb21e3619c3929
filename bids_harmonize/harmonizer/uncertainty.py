"""Uncertainty of the harmonization: a deep ensemble of stage-3 nets, calibrated.

Method (Lakshminarayanan et al., "Simple and scalable predictive uncertainty estimation
using deep ensembles", NeurIPS 2017): besides the model's own stage-3 net (member 0),
``n`` more stage-3 nets are trained on the same data with other seeds (other initial
weights and other patch draws), sharing the frozen anatomy stages, with the project's one
training engine (:func:`~.engine.run_stage`). At inference every member predicts a log
ratio ``r_m``; the harmonized image is the one of member 0 (so a model keeps its output
whether or not it has an ensemble), and the uncertainty is the spread of the members.

Deep ensembles are known to be over-confident away from the training data, so the spread is
*calibrated*: on held-out pairs (paired PET-CT), the regional errors of the harmonized image
against PET-CT are compared with the ensemble's regional spread, and one factor ``scale``
(:func:`calibration_scale`) makes the central ``level`` interval ``+- z * scale * sd`` cover
that fraction of the held-out errors. :func:`interval_coverage` measures the coverage
on any other held-out set (the accuracy benchmark). Without held-out pairs the scale is 1
and the card says ``"calibrated": false``.

Outputs: the per-voxel SD of ``r`` times ``scale`` (the ``desc-uncertainty`` derivative;
``r`` is a log ratio, so this is the relative SD of the harmonized uptake), and regional
SDs of SUVR and of the tracer measures (Centiloid, ...) across the members' harmonized
images times ``scale``.

A model directory with an ensemble holds ``ensemble/correction-member<k>.safetensors``,
each listed with its sha256 in the card's ``files`` and ``uncertainty.members``.

>>> import numpy as np
>>> r = np.stack([np.zeros((2, 2)), np.full((2, 2), 0.1), np.full((2, 2), 0.2)])
>>> member_sd(r).astype(float).round(3).tolist()
[[0.1, 0.1], [0.1, 0.1]]
>>> round(z_value(0.9), 4)
1.6449
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .guard import regional_log_means

LOGGER = logging.getLogger(__name__)

ENSEMBLE_DIR = "ensemble"
DEFAULT_MEMBERS = 3  #: stage-3 nets trained besides the model's own (4 members in all)
LEVEL = 0.9  #: central interval the calibration targets (issue 13: 90 % intervals)
MEMBER_SEED_STRIDE = 1000  #: member k trains with seed ``config.seed + k * stride``
#: training pairs harmonized for the OOD reference statistics (evenly spaced when more):
#: each costs one ensemble inference, a bound on the time a large site's training adds
MAX_STATISTICS_PAIRS = 24
#: below this median SD of ``r`` (0.1 % of uptake) on the training images the members are
#: nearly identical and their spread carries little information (a design threshold)
DEGENERATE_SD = 1e-3


def member_file(k: int) -> str:
    """Relative path of ensemble member ``k`` (k >= 1) in a model directory.

    >>> member_file(2)
    'ensemble/correction-member2.safetensors'
    """
    return f"{ENSEMBLE_DIR}/correction-member{int(k)}.safetensors"


def z_value(level: float = LEVEL) -> float:
    """Two-sided standard-normal quantile of a central interval of probability ``level``."""
    from scipy.stats import norm

    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), not {level}")
    return float(norm.ppf(0.5 + level / 2.0))


def member_sd(stack) -> np.ndarray:
    """Sample SD (ddof=1) over the first axis (members); zeros for a single member."""
    stack = np.asarray(stack, dtype=np.float64)
    if stack.shape[0] < 2:
        return np.zeros(stack.shape[1:], dtype=np.float32)
    return stack.std(axis=0, ddof=1).astype(np.float32)


def interval_coverage(errors, sds, level: float = LEVEL) -> float:
    """Fraction of ``errors`` inside their central ``level`` interval ``+- z * sd``.

    >>> interval_coverage([0.1, -0.1, 0.5, 0.0], [0.1, 0.1, 0.1, 0.1])
    0.75
    """
    errors = np.abs(np.asarray(errors, dtype=np.float64)).ravel()
    sds = np.asarray(sds, dtype=np.float64).ravel()
    if errors.shape != sds.shape or errors.size == 0:
        raise ValueError(f"need as many SDs as errors (got {sds.size} and {errors.size})")
    ok = np.isfinite(errors) & np.isfinite(sds)
    return float(np.mean(errors[ok] <= z_value(level) * sds[ok]))


def calibration_scale(errors, sds, level: float = LEVEL) -> float:
    """The factor ``s`` with which ``+- z * s * sd`` covers ``level`` of the ``errors``.

    The ``level`` quantile of ``|error| / (z * sd)`` (SDs below 1e-6 are raised to it).

    >>> errs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    >>> s = calibration_scale(errs, np.full(10, 0.1))
    >>> round(interval_coverage(errs, s * np.full(10, 0.1)), 2)
    0.9
    """
    errors = np.abs(np.asarray(errors, dtype=np.float64)).ravel()
    sds = np.maximum(np.asarray(sds, dtype=np.float64).ravel(), 1e-6)
    ok = np.isfinite(errors) & np.isfinite(sds)
    if ok.sum() < 5:
        raise ValueError(f"calibration needs at least 5 regional errors, got {int(ok.sum())}")
    return float(np.quantile(errors[ok] / (z_value(level) * sds[ok]), level, method="higher"))


def regional_errors_and_sds(harmonized_members, reference, labels, mask):
    """Per region: error of member 0 against ``reference`` and the members' SD.

    Both in the log-SUVR domain of :func:`regional_log_means`.
    """
    ids, ref = regional_log_means(reference, labels, mask)
    per_member = np.stack([regional_log_means(h, labels, mask)[1] for h in harmonized_members])
    return per_member[0] - ref, member_sd(per_member).astype(np.float64), ids


def table_spread(member_tables, column: str, key: str) -> dict:
    """SD over members of ``column`` in tables that share a ``key`` column (regions, measures).

    >>> import pandas as pd
    >>> t = [pd.DataFrame({"region": ["a", "b"], "suvr": [1.0, 2.0]}),
    ...      pd.DataFrame({"region": ["a", "b"], "suvr": [1.2, 2.0]})]
    >>> {k: round(v, 3) for k, v in table_spread(t, "suvr", "region").items()}
    {'a': 0.141, 'b': 0.0}
    """
    import pandas as pd

    if len(member_tables) < 2:
        return {}
    values = pd.concat([t.set_index(key)[column].astype(float) for t in member_tables], axis=1)
    return values.std(axis=1, ddof=1).to_dict()


# --------------------------------------------------------------------------- model side
def model_has_ensemble(model_dir) -> bool:
    """Whether a model directory's card lists ensemble members (card read, nothing verified).

    >>> model_has_ensemble("/nonexistent")
    False
    """
    from .weights import CARD_NAME

    try:
        card = json.loads((Path(model_dir) / CARD_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and bool(card_uncertainty(card).get("members"))


def card_uncertainty(card: dict) -> dict:
    """The card's ``uncertainty`` block (empty for a model without an ensemble)."""
    return dict(card.get("uncertainty") or {})


def load_members(model) -> list:
    """The extra stage-3 nets of a verified model (eval mode, CPU); empty without ensemble.

    Every member file is checked against the sha256 in the card; a mismatch raises
    :class:`~.weights.ModelError`.
    """
    from safetensors.torch import load_file

    from .nets.correction import build_correction_net
    from .weights import ModelError, sha256_file

    info = card_uncertainty(model.card)
    nets = []
    for entry in info.get("members", []):
        path = Path(model.path) / entry["file"]
        if not path.is_file():
            raise ModelError(f"model {model.path} is missing ensemble member {entry['file']}")
        if sha256_file(path) != entry["sha256"]:
            raise ModelError(f"ensemble member {path} does not match its sha256 in the card: "
                             "corrupt or modified model")
        net = build_correction_net(model.config.anatomy, model.config.correction)
        try:
            net.load_state_dict(load_file(str(path)))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ModelError(f"ensemble member {path} does not fit: {first}") from None
        nets.append(net.eval())
    return nets


def write_card(model_dir, card: dict) -> None:
    """Rewrite a model's card (after adding the ensemble or calibration)."""
    from bids_harmonize.safeio import atomic_write_json

    from .weights import CARD_NAME

    atomic_write_json(Path(model_dir) / CARD_NAME, card)


def _member_seed(config, k: int) -> int:
    return int(config.seed) + MEMBER_SEED_STRIDE * int(k)


def train_members(model_dir, pairs, n_members: int = DEFAULT_MEMBERS, *, device: str = "auto",
                  progress: bool = False) -> list[dict]:
    """Train ``n_members`` extra stage-3 nets of a trained model on ``pairs`` (its training
    data), each with its own seed, with the training engine (:func:`~.engine.run_stage`);
    write them under ``model_dir/ensemble/`` and return their card entries.

    Checkpoints go to ``model_dir/checkpoints/ensemble`` (a rerun resumes).
    """
    import torch

    from .card import training_list_hash
    from .checkpoints import Checkpoints
    from .data import PatchDataset, prepare_pair, stage_keys
    from .engine import run_stage
    from .nets.correction import build_correction_net
    from .physics_channel import add_physics_channel
    from .runtime import Runtime
    from .stages import stage3_loss
    from .weights import load_model, save_state

    model = load_model(model_dir)
    config = model.config
    rt = Runtime(device, config.mixed_precision)
    if rt.distributed:
        raise RuntimeError("ensemble members are trained in one process (not under torchrun)")
    previous_det = torch.are_deterministic_algorithms_enabled()
    if rt.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    entries = []
    try:
        net = model.net.to(rt.device)
        for p in net.parameters():
            p.requires_grad_(False)
        volumes = [prepare_pair(p, config.mask_dilation) for p in pairs]
        if "ac_error" in config.correction.inputs:
            add_physics_channel(volumes, pairs, net, config, rt.device)
        n_labels = int(max(int(v["labels"].max()) for v in volumes))
        ckpt = Checkpoints(Path(model_dir) / "checkpoints" / ENSEMBLE_DIR, config,
                           training_list_hash(pairs) + f"-members{n_members}", writer=rt.main)
        settings = config.stage3
        (Path(model_dir) / ENSEMBLE_DIR).mkdir(parents=True, exist_ok=True)
        for k in range(1, n_members + 1):
            seed = _member_seed(config, k)
            torch.manual_seed(seed)
            member = build_correction_net(config.anatomy, config.correction).to(rt.device)
            data = PatchDataset(volumes, stage_keys(3, config), config.anatomy.roi_size,
                                settings.steps_per_epoch * settings.batch_size, seed, 3, "mask",
                                uptake_augment=config.uptake_augment)
            report = run_stage(f"member{k}", member, lambda m, b: stage3_loss(net, b, config, m, n_labels),
                               data, settings, rt, ckpt, progress, seed)
            sha = save_state(Path(model_dir) / member_file(k), member.to("cpu").state_dict())
            entries.append({"file": member_file(k), "seed": seed, "sha256": sha,
                            "seconds": round(float(report["seconds"]), 2),
                            "final_loss": report["history"][-1]["loss"] if report["history"] else None})
            LOGGER.info("ensemble member %d/%d trained (seed %d)", k, n_members, seed)
    finally:
        torch.use_deterministic_algorithms(previous_det)
        rt.close()
        model.net.to("cpu")
    return entries


def _pair_inputs(pair) -> dict:
    arrays = pair.load()
    return {"arrays": arrays, "mu_map": arrays.get("mu_map"),
            "ac_setup": getattr(pair, "ac_setup", None)}


def _features(result, pet, t1w, mask) -> np.ndarray:
    """OOD feature vector of one harmonization (see :func:`.ood.image_features`)."""
    from .intensity import normalise_pet, normalise_t1w
    from .ood import image_features

    channels = [normalise_pet(pet, mask)[0], normalise_t1w(t1w, mask), np.exp(result.log_ratio)]
    if result.ac_error is not None:
        channels.append(np.exp(result.ac_error))
    return image_features(channels, mask)


def _harmonize_pair(pair, model, members, device):
    """Arrays of one pair and its :class:`~.infer.HarmonizationResult` with the ensemble."""
    from .infer import harmonize_volume

    inp = _pair_inputs(pair)
    a = inp["arrays"]
    res = harmonize_volume(a["pet_mr"], a["t1w"], a["brain_mask"], model, tracer=pair.tracer,
                           mu_map=inp["mu_map"], ac_setup=inp["ac_setup"], device=device,
                           affine=getattr(pair, "affine", None), members=members)
    return a, res


def fit_uncertainty(model_dir, pairs, *, validation_pairs=(), n_members: int = DEFAULT_MEMBERS,
                    device: str = "auto", level: float = LEVEL, progress: bool = False) -> dict:
    """Give a trained model its ensemble, its OOD reference statistics and its calibration.

    1. :func:`train_members` on the training ``pairs``;
    2. the training pairs (at most :data:`MAX_STATISTICS_PAIRS`, evenly spaced) are
       harmonized with the ensemble: the OOD feature statistics
       (:func:`.ood.feature_statistics`) and the training level of ensemble disagreement
       (median over pairs of the brain-median SD of ``r``) go into the card;
    3. :func:`calibrate` on ``validation_pairs`` (held out from training, paired PET-CT):
       the calibration ``scale`` and the do-no-harm guard (:mod:`.guard`).

    The card gets an ``uncertainty`` block, an ``ood`` block and the member files with
    their sha256; returns the ``uncertainty`` block.
    """
    from .ood import feature_statistics
    from .weights import load_model, read_card

    entries = train_members(model_dir, pairs, n_members, device=device, progress=progress)
    card, _ = read_card(model_dir)
    card["uncertainty"] = {"method": "deep ensemble of stage-3 nets (Lakshminarayanan et al. 2017)",
                           "members": entries, "level": level, "scale": 1.0, "calibrated": False}
    for entry in entries:
        card["files"][entry["file"]] = entry["sha256"]
    write_card(model_dir, card)
    model = load_model(model_dir)
    members = load_members(model)

    features, disagreement = [], []
    step = max(1, -(-len(pairs) // MAX_STATISTICS_PAIRS))
    for pair in list(pairs)[::step]:
        a, res = _harmonize_pair(pair, model, members, device)
        mask = a["brain_mask"] > 0.5
        features.append(_features(res, a["pet_mr"], a["t1w"], mask))
        disagreement.append(float(np.median(member_sd(res.member_log_ratios)[mask])))
    block = card["uncertainty"]
    block["training_disagreement"] = round(float(np.median(disagreement)), 6)
    if block["training_disagreement"] < DEGENERATE_SD:
        LOGGER.warning("the ensemble members hardly disagree (median SD of r %.2g on the training "
                       "images): the uncertainty is then mostly the calibration factor times noise; "
                       "train the stage-3 nets longer or use more members", block["training_disagreement"])
        block["degenerate"] = True
    card["ood"] = {"feature_statistics": feature_statistics(features),
                   "features": "log brain median and robust SD (IQR / 1.349) of: normalised PET-MR, "
                               "normalised T1w, "
                               "exp(r)" + (", exp(ac_error)" if "ac_error" in model.config.correction.inputs
                                           else "")}
    write_card(model_dir, card)
    if validation_pairs:
        calibrate(model_dir, validation_pairs, device=device, level=level)
    else:
        LOGGER.warning("no held-out pairs: the ensemble spread is not calibrated (scale 1) and "
                       "the correction has no guard (applied as trained)")
    return read_card(model_dir)[0]["uncertainty"]


def calibrate(model_dir, validation_pairs, *, device: str = "auto", level: float = LEVEL,
              progress: bool = True) -> dict:
    """Calibrate a model on held-out pairs (paired PET-CT, not used for its training).

    1. With an ensemble: the regional errors of member 0 against PET-CT and the ensemble's
       regional SDs give the calibration ``scale`` (:func:`calibration_scale`) and the
       coverage before/after; the card's ``uncertainty`` block is updated.
    2. The do-no-harm guard (:func:`.guard.fit_guard`): for each attenuation-correction
       setup, the shrinkage strength ``k`` that brings the held-out pairs closest to PET-CT
       (``inf``, no correction, is a candidate): the card's ``guard`` block.

    Pairs without region labels are skipped (with a warning). Replaces an earlier
    calibration and guard; returns the card.
    """
    from bids_harmonize.tracers import family_of

    from .guard import K_GRID, fit_guard, pair_errors
    from .weights import load_model, read_card

    model = load_model(model_dir)
    members = load_members(model)
    card, _ = read_card(model_dir)
    runs, skipped = [], []
    pairs = list(validation_pairs)
    for i, pair in enumerate(pairs, 1):
        a, res = _harmonize_pair(pair, model, members, device)
        if a.get("labels") is None:
            skipped.append(pair.key() if hasattr(pair, "key") else pair.subject)
            continue
        runs.append((pair, a, res))
        if progress:
            LOGGER.info("calibration: harmonized held-out pair %d/%d (sub-%s, %s, setup %s)", i,
                        len(pairs), pair.subject, pair.tracer, getattr(pair, "ac_setup", "unknown"))
    if skipped:
        LOGGER.warning("held-out pairs without region labels are not used to calibrate: %s",
                       ", ".join(map(str, skipped)))
    if not runs:
        raise ValueError("calibration needs held-out pairs with region labels (train with an atlas)")
    block = card.get("uncertainty")
    scale = 1.0
    if block and block.get("members"):
        errors, sds = [], []
        for _, a, res in runs:
            harmonized = [a["pet_mr"] * np.exp(r) for r in res.member_log_ratios]
            err, sd, _ = regional_errors_and_sds(harmonized, a["pet_ct"], a["labels"], a["brain_mask"])
            errors.append(err)
            sds.append(sd)
        errors, sds = np.concatenate(errors), np.concatenate(sds)
        scale = calibration_scale(errors, sds, level)
        block.update({"scale": round(scale, 6), "calibrated": True, "calibration": {
            "n_pairs": len(runs), "n_regions": int(errors.size),
            "subjects": sorted({p.subject for p, _, _ in runs}),
            "coverage_unscaled": round(interval_coverage(errors, sds, level), 4),
            "coverage_scaled": round(interval_coverage(errors, scale * sds, level), 4),
            "domain": "log regional mean over brain mean (member 0 vs PET-CT)",
        }})
    # without an ensemble there is no SD to shrink by: the guard is on or off per setup
    grid = K_GRID if members else (0.0, float("inf"))
    records = []
    for pair, a, res in runs:
        stack = res.member_log_ratios if res.member_log_ratios is not None else res.log_ratio[None]
        sd = scale * member_sd(stack)
        extra = getattr(pair, "extra", None) or {}
        regional, target = pair_errors(a["pet_mr"], a["pet_ct"], stack, sd, a["labels"],
                                       a["brain_mask"], grid,
                                       reference_ids=extra.get("reference_labels"),
                                       target_ids=extra.get("target_labels"))
        records.append((str(getattr(pair, "ac_setup", "unknown") or "unknown"),
                        family_of(pair.tracer), pair.subject, regional, target))
    card["guard"] = fit_guard(records, grid)
    g = card["guard"]
    for setup, entry in {**g["by_setup_family"], **g["by_setup"], "pooled": g["pooled"]}.items():
        LOGGER.info("guard %s: k = %s on %d held-out pair(s); mean regional error %.2f %% as "
                    "acquired, %.2f %% fully corrected, %.2f %% guarded", setup, entry["k"],
                    entry["n_pairs"], 100 * entry["error_as_acquired"],
                    100 * entry["error_full_correction"], 100 * entry["error_guarded"])
    write_card(model_dir, card)
    return card


def harmonize_with_assessment(pet_mr, t1w, brain_mask, model, *, tracer=None, tracer_family=None,
                              scanner=None, mu_map=None, ac_setup=None, policy="warn",
                              threshold=None, device="auto", spacing=None, affine=None):
    """Harmonize, with the ensemble's uncertainty, the do-no-harm guard and the OOD decision.

    Returns ``(result, uncertainty, members, ood_result)``: the
    :class:`~.infer.HarmonizationResult` (its ``harmonized`` is the input unchanged under a
    ``passthrough`` decision, with ``log_ratio`` 0), the calibrated per-voxel SD of ``r``
    (``None`` for a model without an ensemble), the members' harmonized images, and the
    :class:`~.ood.OODResult`. Raises :class:`~.ood.OODFailure` under the ``fail`` policy.

    When the model card has a ``guard`` (:mod:`.guard`, fitted on held-out pairs), the
    correction is shrunk with the strength chosen for ``ac_setup`` (or the pooled one);
    ``result.guard`` then holds its sidecar record. The OOD score is computed on the
    correction as the nets made it, before the guard.
    """
    from bids_harmonize.tracers import family_of

    from . import ood
    from .guard import guard_for, guard_log_ratios
    from .infer import harmonize_volume

    members = load_members(model)
    result = harmonize_volume(pet_mr, t1w, brain_mask, model, tracer=tracer, mu_map=mu_map,
                              ac_setup=ac_setup, device=device, spacing=spacing, affine=affine,
                              members=members)
    info = card_uncertainty(model.card)
    mask = np.asarray(brain_mask) > 0.5
    pet = np.asarray(pet_mr, dtype=np.float32)
    uncertainty = None
    disagreement = 0.0
    if result.member_log_ratios is not None:
        sd = member_sd(result.member_log_ratios)
        uncertainty = (float(info.get("scale", 1.0)) * sd).astype(np.float32)
        disagreement, _ = ood.disagreement_part(sd, mask, info.get("training_disagreement"))
    meta_part, reasons = ood.metadata_support(model.card, setup=ac_setup, scanner=scanner,
                                              tracer_family=tracer_family)
    stats = (model.card.get("ood") or {}).get("feature_statistics")
    feature = ood.feature_part(stats, _features(result, pet_mr, t1w, mask)) if stats else 0.0
    if feature >= 0.5:
        reasons.append("image features far from the training images")
    if disagreement >= 0.5:
        reasons.append("ensemble members disagree more than on the training images")
    threshold = ood.DEFAULT_THRESHOLD if threshold is None else threshold
    assessment = ood.assess({"metadata": meta_part, "feature": feature, "disagreement": disagreement},
                            policy=policy, threshold=threshold, reasons=reasons)
    family = tracer_family or (family_of(tracer) if tracer else None)
    choice = guard_for(model.card, ac_setup, family)
    if choice is not None:
        stack = result.member_log_ratios if result.member_log_ratios is not None else result.log_ratio[None]
        guarded, w = guard_log_ratios(stack, uncertainty if uncertainty is not None
                                      else np.zeros_like(stack[0]), choice.k)
        median_w = float(np.median(w[mask])) if mask.any() else float("nan")
        result.log_ratio = guarded[0]
        if result.member_log_ratios is not None:
            result.member_log_ratios = guarded
        result.harmonized = (pet * np.exp(guarded[0])).astype(np.float32)
        note = choice.describe(median_w)
        result.notes.append(note)
        result.guard = choice.sidecar(median_w)
        LOGGER.info(note)
    harmonized_members = []
    if result.member_log_ratios is not None:
        harmonized_members = [(pet * np.exp(r)).astype(np.float32) for r in result.member_log_ratios]
    if assessment.decision == "passthrough":
        result.harmonized = pet.copy()
        result.log_ratio = np.zeros_like(result.log_ratio)
        result.notes.append("out of distribution, --ood-policy passthrough: the harmonized image "
                            "is the input unchanged")
        harmonized_members = [result.harmonized] * len(harmonized_members)
    return result, uncertainty, harmonized_members, assessment
