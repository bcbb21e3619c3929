"""Nipype interface over :func:`bids_harmonize.harmonizer.infer.harmonize_volume`."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _HarmonizeInputSpec(BaseInterfaceInputSpec):
    in_pet = File(exists=True, mandatory=True, desc="PET-MR image on the T1w grid (3-D NIfTI)")
    in_t1w = File(exists=True, mandatory=True, desc="preprocessed T1w (defines the grid)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the T1w grid")
    model_dir = Directory(
        exists=True,
        desc="harmonizer model directory (model.json + safetensors); "
        "default: the shipped demo model",
    )
    tracer = traits.Str("", usedefault=True, desc="tracer name (coverage notes only)")
    device = traits.Enum(
        "auto", "cpu", "cuda", usedefault=True, nohash=True, desc="where the nets run"
    )
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="torch CPU threads")


class _HarmonizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="harmonized PET (PET-CT equivalent), T1w grid")
    out_pseudoct = File(exists=True, desc="pseudo-CT from the T1w (HU), T1w grid")
    out_logratio = File(exists=True, desc="log-ratio map r: harmonized = PET-MR * exp(r)")
    model_info = traits.Dict(desc="model name, version, sha256 of its card, notes")


class Harmonize(SimpleInterface):
    """Harmonize a PET-MR image towards PET-CT with the three-stage model."""

    input_spec = _HarmonizeInputSpec
    output_spec = _HarmonizeOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np
        import torch

        from bids_harmonize.harmonizer.infer import harmonize_volume
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
        result = harmonize_volume(
            pet,
            np.asanyarray(t1w_img.dataobj, dtype=np.float32),
            np.asanyarray(mask_img.dataobj),
            model,
            tracer=self.inputs.tracer or None,
            device=self.inputs.device,
            spacing=t1w_img.header.get_zooms()[:3],
        )
        stem = "pet"
        outputs = {
            "out_file": (f"{stem}_desc-harmonized.nii.gz", result.harmonized),
            "out_pseudoct": (f"{stem}_desc-pseudo_CT.nii.gz", result.pseudo_ct_hu),
            "out_logratio": (f"{stem}_desc-logratio.nii.gz", result.log_ratio),
        }
        for key, (name, data) in outputs.items():
            header = t1w_img.header.copy()
            header.set_data_dtype(np.float32)
            img = nb.Nifti1Image(data.astype(np.float32), t1w_img.affine, header)
            path = Path(runtime.cwd) / name
            img.to_filename(path)
            self._results[key] = str(path)
        info = dict(result.model_info)
        info["notes"] = list(result.notes)
        if model_dir is None:
            info["notes"].append("no model_dir given: used the shipped demo model")
        self._results["model_info"] = info
        return runtime
