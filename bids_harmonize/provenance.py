"""Provenance: software versions, dataset_description.json, PET sidecar metadata."""

from __future__ import annotations

import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path

from bids_harmonize.__about__ import __version__
from bids_harmonize.safeio import atomic_write_json, atomic_write_text

TRACKED_PACKAGES = ("torch", "monai", "antspyx", "nipype", "niworkflows", "pybids", "nibabel",
                    "templateflow", "numpy")


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    versions = {"bids_harmonize": __version__}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def container_tag() -> str | None:
    """The container image this runs in, when the image says so (``BIDS_HARMONIZE_IMAGE``)."""
    return os.environ.get("BIDS_HARMONIZE_IMAGE")


def dataset_description(bids_dir: Path) -> dict:
    """``dataset_description.json`` of the derivatives (BIDS 1.10, DatasetType derivative)."""
    generated = {
        "Name": "bids_harmonize",
        "Version": __version__,
        "CodeURL": "https://github.com/bids-harmonize/bids_harmonize",
        "Description": "PET-MR to PET-CT harmonization of brain PET",
    }
    if container_tag():
        generated["Container"] = {"Type": "docker", "Tag": container_tag()}
    source_name = None
    try:
        source_name = json.loads((bids_dir / "dataset_description.json").read_text()).get("Name")
    except (OSError, ValueError):
        pass
    return {
        "Name": f"bids_harmonize derivatives of {source_name or bids_dir.name}",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": bids_dir.as_uri(), "DatasetName": source_name or bids_dir.name}],
        "DatasetLinks": {"raw": bids_dir.as_uri()},
    }


def write_dataset_description(output_dir: Path, bids_dir: Path) -> Path:
    """Write (or refresh) the derivatives' description and their ``.bidsignore``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "dataset_description.json"
    atomic_write_json(path, dataset_description(bids_dir))
    ignore = output_dir / ".bidsignore"
    # files BIDS has no name for yet (CT, regional tables, ANTs .h5), and non-data folders
    patterns = ["*_CT.nii.gz", "*_CT.json", "*_suvr.tsv", "*_suvr.json", "*_measures.tsv",
                "*_measures.json", "*_xfm.h5", "**/figures", "**/log", "logs", "group",
                "work", "models", "*.html", "CITATION.md"]
    atomic_write_text(ignore, "\n".join(patterns) + "\n")
    readme = output_dir / "README.md"
    if not readme.exists():
        atomic_write_text(
            readme,
            "# bids_harmonize derivatives\n\nPreprocessed and harmonized PET, regional tables "
            "and reports written by bids_harmonize; see each sidecar's provenance and "
            "logs/CITATION.md for the methods.\n"
        )
    return path


def pet_sidecar(base: dict, static_info: dict, model_info: dict | None = None,
                space: str = "T1w", spatial_reference: str | None = None) -> dict:
    """Merge build-time provenance, the uptake-window record and the model's identity.

    >>> meta = pet_sidecar({"TracerName": "PiB"}, {"Units": "g/mL", "TimeWindow": [50, 70]},
    ...                    {"name": "demo", "version": "1", "sha256": "ab"}, space="T1w",
    ...                    spatial_reference="bids:raw:sub-01/anat/sub-01_T1w.nii.gz")
    >>> meta["Units"], meta["Harmonization"]["ModelName"], meta["SkullStripped"]
    ('g/mL', 'demo', False)

    The harmonizer's out-of-distribution decision, the attenuation-correction setup and the
    uncertainty record (``model_info`` keys of the same names) go to the top level:

    >>> pet_sidecar({}, {}, {"name": "m", "OODDecision": "warn", "OODScore": 0.7})["OODDecision"]
    'warn'
    """
    meta = dict(base)
    for key in ("TimeWindow", "TimeWindowRequested", "FramesUsed", "FrameWeights",
                "FrameRealignment", "FrameTranslationMM", "Units", "SUVFactor",
                "TimeWindowPolicy", "TimeWindowNote", "UnitsDescription", "BodyWeightSource",
                "UptakeScaleFactor"):
        if key in static_info:
            meta[key] = static_info[key]
    meta["SkullStripped"] = False
    meta["Space"] = space
    if spatial_reference:
        meta["SpatialReference"] = spatial_reference
    if model_info:
        meta["Harmonization"] = {
            "ModelName": model_info.get("name"),
            "ModelVersion": model_info.get("version"),
            "ModelSha256": model_info.get("sha256"),
            "ModelTrainedOn": model_info.get("trained_on"),
            "ModelDirectory": model_info.get("model_dir"),
            "Notes": model_info.get("notes", []),
            "Device": model_info.get("device"),
        }
        # inline (this function runs inside a Nipype Function node)
        for key in ("OODDecision", "OODScore", "OODComponents", "OODThreshold", "OODPolicy",
                    "OODReasons", "AttenuationCorrectionSetup",
                    "AttenuationCorrectionSetupInference", "PhysicsMapSource", "Uncertainty",
                    "CorrectionGuard"):
            if key in model_info:
                meta[key] = model_info[key]
    return meta
