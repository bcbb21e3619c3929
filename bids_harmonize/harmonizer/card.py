"""The model card's generated parts (MONAI-bundle ``metadata.json``-like).

Everything here is derived, never typed twice: the input/output description comes from
the configured stage-3 channel layout (:data:`~.config.INPUT_CHANNELS`), the stage
descriptions from the configuration, the training-data summary from the training pairs.
:func:`training_card` assembles the card that :func:`~.weights.save_model` writes.
"""

from __future__ import annotations

import hashlib


def training_list_hash(pairs) -> str:
    """sha256 of the sorted training list (subject, tracer, scanner models[, AC setup])."""
    rows = []
    for p in pairs:
        row = f"{p.subject}\t{p.tracer}\t{p.petct_model}\t{p.petmr_model}"
        setup = getattr(p, "ac_setup", "unknown")
        rows.append(row if setup == "unknown" else f"{row}\t{setup}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def training_summary(pairs) -> dict:
    """Tracers, tracer families, scanners, attenuation-correction setups, counts, hash."""
    from ..tracers import family_of

    tracers = sorted({p.tracer for p in pairs})
    return {
        "tracers": tracers,
        "tracer_families": sorted({family_of(t) for t in tracers}),
        "petct_models": sorted({p.petct_model for p in pairs}),
        "petmr_models": sorted({p.petmr_model for p in pairs}),
        "ac_setups": sorted({getattr(p, "ac_setup", "unknown") for p in pairs}),
        "with_scanner_mu_map": sum(1 for p in pairs if getattr(p, "mu_map", None) is not None),
        "n_subjects": len({p.subject for p in pairs}),
        "n_pairs": len(pairs),
        "sha256_training_list": training_list_hash(pairs),
    }


def stage_descriptions(config) -> dict:
    """What each stage is, its settings and its training settings."""
    from .config import stage3_channels

    a = config.anatomy
    voxel = [c.name for c in stage3_channels(config.correction, route="voxel")]
    physics = "ac_error" in voxel
    task = "log-ratio r with harmonized = PET-MR * exp(r)"
    if physics and config.correction.physics_offset:
        task += "; r = ac_error (physics) + learned residual"
    return {
        "stage1": {
            "net": "CTAutoEncoder (MONAI PatchEmbeddingBlock + TransformerBlock, transposed-conv decoder)",
            "task": "reconstruct CT as 511 keV attenuation / mu_water (bilinear HU conversion)",
            "config": {k: getattr(a, k) for k in a.__dataclass_fields__},
            "training": config.stage1.__dict__,
        },
        "stage2": {
            "net": "ViTEncoder on T1w, same token grid",
            "task": "patch-wise InfoNCE to frozen CT tokens + cosine + pseudo-CT L1 "
            "through the frozen CT decoder",
            "loss": {
                "temperature": config.loss.temperature,
                "cosine_weight": config.loss.cosine_weight,
                "pseudo_ct_weight": config.loss.pseudo_ct_weight,
            },
            "training": config.stage2.__dict__,
        },
        "stage3": {
            "net": "ResidualCorrectionNet (MONAI UnetResBlock, anatomy-gated)",
            "task": task,
            "voxel_inputs": voxel,
            "config": {
                k: getattr(config.correction, k) for k in config.correction.__dataclass_fields__
            },
            "physics": config.physics.__dict__ if physics else None,
            "loss": {
                "voxel_weight": config.loss.voxel_weight,
                "regional_weight": config.loss.regional_weight,
                "smooth_weight": config.loss.smooth_weight,
            },
            "training": config.stage3.__dict__,
        },
    }


def io_format(config) -> tuple[dict, dict]:
    """Card ``inputs`` and ``outputs``, generated from the configured channel layout."""
    from .config import MODEL_SPACING_MM, stage3_channels

    roi = config.anatomy.roi_size
    inputs = {c.name: c.describe(MODEL_SPACING_MM) for c in stage3_channels(config.correction)}
    if not config.correction.use_anatomy:
        inputs.pop("t1w", None)
    inputs["brain_mask"] = {"modality": "brain mask", "channels": 1, "required": True}
    if "ac_error" in inputs:
        inputs["mu_map"] = {
            "modality": "the PET-MR scanner's attenuation map (1/cm at 511 keV) on the T1w grid",
            "channels": 1,
            "required": False,
            "used_for": "ac_error; without it the map the scanner's AC setup would make from "
            "the pseudo-CT is used, and without a known setup ac_error is 0",
        }
    inputs["patch"] = {"roi_size": [roi] * 3, "inference": "MONAI sliding_window_inference"}
    m = config.correction.max_abs_log_ratio
    outputs = {
        "harmonized": {
            "modality": "PET, PET-CT equivalent",
            "channels": 1,
            "value_range": "same units as the input PET",
        },
        "log_ratio": {"modality": "log(harmonized / PET-MR)", "channels": 1, "value_range": [-m, m]},
        "pseudo_ct": {"modality": "pseudo-CT from MRI", "channels": 1, "value_range": "HU, [-1000, ~1800]"},
    }
    if "ac_error" in inputs:
        outputs["ac_error"] = {
            "modality": "expected attenuation-correction error (log ratio) fed to stage 3",
            "channels": 1,
        }
    return inputs, outputs


def training_card(card, *, config, pairs, report, rt, library_versions, out_name) -> dict:
    """The full card of a freshly trained model (``card`` holds the caller's fields)."""
    card = dict(card or {})
    card.setdefault("name", out_name)
    card.setdefault("version", "0.1.0")
    card.setdefault("changelog", {card["version"]: "trained with bids_harmonize"})
    card.setdefault("intended_use", "research use only")
    card.setdefault("retrain_command", "bids_harmonize BIDS_DIR OUT_DIR train")
    card["training_data"] = training_summary(pairs)
    card["training"] = {
        name: {
            "seconds": round(info["seconds"], 2),
            "final_loss": info["history"][-1]["loss"] if info["history"] else None,
            "history": info["history"],
        }
        for name, info in report.items()
    }
    card["training"]["device"] = str(rt.device)
    card["training"]["world_size"] = rt.world
    card["training"]["mixed_precision"] = rt.amp
    card["stages"] = stage_descriptions(config)
    card["inputs"], card["outputs"] = io_format(config)
    card.setdefault("evaluation", {})
    card["library_versions"] = library_versions
    return card
