"""Nipype interfaces of the harmonizer: the harmonization itself and the scanner's mu-map.

The maths lives in :func:`bids_harmonize.harmonizer.uncertainty.harmonize_with_assessment`
(harmonization, ensemble uncertainty, out-of-distribution decision) and
:mod:`bids_harmonize.mumap` (mu-map checks); these nodes only move files in and out.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

OOD_POLICIES = ("warn", "passthrough", "fail")


class _HarmonizeInputSpec(BaseInterfaceInputSpec):
    in_pet = File(exists=True, mandatory=True, desc="PET-MR image on the T1w grid (3-D NIfTI)")
    in_t1w = File(exists=True, mandatory=True, desc="preprocessed T1w (defines the grid)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the T1w grid")
    in_mumap = File(exists=True, desc="the scanner's mu-map (1/cm at 511 keV) on the T1w grid")
    model_dir = Directory(
        exists=True,
        desc="harmonizer model directory (model.json + safetensors); "
        "default: the shipped demo model",
    )
    tracer = traits.Str("", usedefault=True, desc="tracer name (coverage notes only)")
    tracer_family = traits.Str("", usedefault=True, desc="tracer family (OOD metadata support)")
    scanner = traits.Str("", usedefault=True, desc="PET-MR scanner model (OOD metadata support)")
    ac_setup = traits.Str("", usedefault=True,
                          desc="attenuation-correction setup of the PET-MR scanner ('' unknown)")
    ac_setup_inference = traits.Str("", usedefault=True,
                                    desc="how the setup was inferred (for the sidecar)")
    mumap_notes = traits.List(traits.Str, value=[], usedefault=True,
                              desc="notes of the mu-map check (e.g. a fallback to metadata)")
    ood_policy = traits.Enum(*OOD_POLICIES, usedefault=True,
                             desc="what an out-of-distribution case gets: warn (correct and "
                                  "warn), passthrough (input unchanged) or fail (no output)")
    device = traits.Enum(
        "auto", "cpu", "cuda", usedefault=True, nohash=True, desc="where the nets run"
    )
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="torch CPU threads")
    source_name = traits.Str("", usedefault=True, nohash=True,
                             desc="the input PET series' file name, for log and error lines")


class _HarmonizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="harmonized PET (PET-CT equivalent), T1w grid; the input "
                                      "unchanged under an OOD passthrough decision")
    out_pseudoct = File(exists=True, desc="pseudo-CT from the T1w (HU), T1w grid")
    out_logratio = File(exists=True, desc="log-ratio map r: harmonized = PET-MR * exp(r)")
    out_uncertainty = File(desc="calibrated ensemble SD of r (relative SD of the harmonized "
                                "uptake), T1w grid; only for a model with an ensemble")
    out_members = OutputMultiObject(File(exists=True),
                                    desc="harmonized image of every ensemble member, T1w grid")
    uncertainty_scale = traits.Float(desc="calibration factor applied to the ensemble SD")
    model_info = traits.Dict(desc="model name, version, sha256, notes, OOD decision, AC setup")


class Harmonize(SimpleInterface):
    """Harmonize a PET-MR image towards PET-CT, with uncertainty and an OOD decision.

    Raises (the node fails with one line) under ``ood_policy="fail"`` for an
    out-of-distribution image.
    """

    input_spec = _HarmonizeInputSpec
    output_spec = _HarmonizeOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np
        import torch

        from bids_harmonize.harmonizer.ood import enforce
        from bids_harmonize.harmonizer.uncertainty import card_uncertainty, harmonize_with_assessment
        from bids_harmonize.harmonizer.weights import default_model_dir, load_model

        torch.set_num_threads(max(1, int(self.inputs.omp_nthreads)))
        model_dir = self.inputs.model_dir if isdefined(self.inputs.model_dir) else None
        model = load_model(model_dir or default_model_dir())
        pet_img = nb.load(self.inputs.in_pet)
        t1w_img = nb.load(self.inputs.in_t1w)
        mask_img = nb.load(self.inputs.in_mask)
        pet = np.asanyarray(pet_img.dataobj, dtype=np.float32)
        if pet.ndim == 4 and pet.shape[3] == 1:
            pet = pet[..., 0]
        if pet.ndim != 3:
            raise ValueError(f"{self.inputs.in_pet} is not a 3-D image (shape {pet.shape})")
        if pet.shape != t1w_img.shape[:3] or not np.allclose(
            pet_img.affine, t1w_img.affine, atol=1e-3
        ):
            raise ValueError(
                f"{self.inputs.in_pet} is not on the T1w grid of {self.inputs.in_t1w}"
            )
        mu_map = None
        if isdefined(self.inputs.in_mumap):
            mu_map = np.asanyarray(nb.load(self.inputs.in_mumap).dataobj, dtype=np.float32)
        setup = self.inputs.ac_setup or None
        result, uncertainty, members, assessment = harmonize_with_assessment(
            pet,
            np.asanyarray(t1w_img.dataobj, dtype=np.float32),
            np.asanyarray(mask_img.dataobj),
            model,
            tracer=self.inputs.tracer or None,
            tracer_family=self.inputs.tracer_family or None,
            scanner=self.inputs.scanner or None,
            mu_map=mu_map,
            ac_setup=setup,
            policy=self.inputs.ood_policy,
            device=self.inputs.device,
            affine=t1w_img.affine,
        )
        enforce(assessment, self.inputs.source_name or Path(self.inputs.in_pet).name)

        def write(name, data):
            header = t1w_img.header.copy()
            header.set_data_dtype(np.float32)
            path = Path(runtime.cwd) / name
            nb.Nifti1Image(np.asarray(data, np.float32), t1w_img.affine, header).to_filename(path)
            return str(path)

        stem = "pet"
        self._results["out_file"] = write(f"{stem}_desc-harmonized.nii.gz", result.harmonized)
        self._results["out_pseudoct"] = write(f"{stem}_desc-pseudo_CT.nii.gz", result.pseudo_ct_hu)
        self._results["out_logratio"] = write(f"{stem}_desc-logratio.nii.gz", result.log_ratio)
        unc = card_uncertainty(model.card)
        self._results["uncertainty_scale"] = float(unc.get("scale", 1.0))
        if uncertainty is not None:
            self._results["out_uncertainty"] = write(f"{stem}_desc-uncertainty.nii.gz", uncertainty)
        self._results["out_members"] = [
            write(f"{stem}_member-{k}_desc-harmonized.nii.gz", img) for k, img in enumerate(members)
        ]
        info = dict(result.model_info)
        info["notes"] = [*self.inputs.mumap_notes, *result.notes]
        if model_dir is None:
            info["notes"].append("no model_dir given: used the shipped demo model")
        info.update(assessment.sidecar())
        info["AttenuationCorrectionSetup"] = setup or "unknown"
        info["AttenuationCorrectionSetupInference"] = self.inputs.ac_setup_inference or "not inferred"
        if result.ac_error_source is not None:
            info["PhysicsMapSource"] = result.ac_error_source
        info["CorrectionGuard"] = result.guard or {
            "K": 0.0, "Source": "none",
            "Description": "the model card has no guard (no held-out calibration pairs): "
                           "the correction is applied as trained"}
        if unc:
            info["Uncertainty"] = {
                "Method": unc.get("method"),
                "Members": 1 + len(unc.get("members", [])),
                "CalibrationScale": unc.get("scale", 1.0),
                "Calibrated": bool(unc.get("calibrated", False)),
                "IntervalLevel": unc.get("level"),
            }
        self._results["model_info"] = info
        return runtime
