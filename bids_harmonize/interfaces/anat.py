"""Thin Nipype interfaces over :mod:`bids_harmonize.registration` (ANTs in process)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image (with skull)")
    sloppy = traits.Bool(False, usedefault=True, desc="fewer N4 iterations")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected T1w")


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction of a T1w image."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.registration import n4_bias_correct, set_threads

        set_threads(self.inputs.omp_nthreads)
        out = Path(runtime.cwd) / "t1w_n4.nii.gz"
        self._results["out_file"] = n4_bias_correct(self.inputs.in_file, str(out),
                                                    sloppy=self.inputs.sloppy)
        return runtime


class _TemplateRegInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected T1w")
    template_t1w = File(exists=True, mandatory=True, desc="template T1w")
    template_mask = File(exists=True, mandatory=True, desc="template brain mask")
    sloppy = traits.Bool(False, usedefault=True, desc="fast, low-accuracy settings")
    seed = traits.Int(0, usedefault=True, desc="random seed of ANTs' metric sampling")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _TemplateRegOutputSpec(TraitedSpec):
    forward_transforms = OutputMultiObject(File(exists=True), desc="T1w -> template (composite .h5)")
    inverse_transforms = OutputMultiObject(File(exists=True), desc="template -> T1w (composite .h5)")
    brain_mask = File(exists=True, desc="brain mask on the T1w grid")
    warped_file = File(exists=True, desc="T1w brain resampled into the template")


class TemplateRegistration(SimpleInterface):
    """Atlas-based brain extraction and SyN registration of the T1w to a template."""

    input_spec = _TemplateRegInputSpec
    output_spec = _TemplateRegOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.registration import register_to_template, set_threads

        set_threads(self.inputs.omp_nthreads)
        result = register_to_template(
            self.inputs.in_file, self.inputs.template_t1w, self.inputs.template_mask,
            Path(runtime.cwd), sloppy=self.inputs.sloppy, seed=self.inputs.seed,
        )
        self._results.update(
            forward_transforms=result["forward"], inverse_transforms=result["inverse"],
            brain_mask=result["brain_mask"],
            warped_file=result["warped"],
        )
        return runtime


class _RigidInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="image to move (PET, CT)")
    fixed = File(exists=True, mandatory=True, desc="reference image (T1w)")
    fixed_mask = File(exists=True, desc="mask of the reference, dilated before use")
    interpolation = traits.Enum("linear", "bSpline", "nearestNeighbor", usedefault=True,
                                desc="interpolation of the resampled output")
    default_value = traits.Float(0.0, usedefault=True, desc="value outside the moving image")
    sloppy = traits.Bool(False, usedefault=True, desc="fast, low-accuracy settings")
    seed = traits.Int(0, usedefault=True, desc="random seed of ANTs' metric sampling")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _RigidOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="moving image resampled on the reference grid")
    forward_transforms = OutputMultiObject(File(exists=True), desc="moving -> fixed (.mat)")


class RigidRegistration(SimpleInterface):
    """Rigid mutual-information registration, with the moving image resampled."""

    input_spec = _RigidInputSpec
    output_spec = _RigidOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.registration import apply_transforms, register_rigid, set_threads

        set_threads(self.inputs.omp_nthreads)
        mask = self.inputs.fixed_mask if self.inputs.fixed_mask else None
        result = register_rigid(self.inputs.moving, self.inputs.fixed, Path(runtime.cwd),
                                fixed_mask=mask, sloppy=self.inputs.sloppy, seed=self.inputs.seed)
        out = str(Path(runtime.cwd) / "resampled.nii.gz")
        apply_transforms(self.inputs.moving, self.inputs.fixed, result["forward"], out,
                         interpolation=self.inputs.interpolation,
                         default_value=self.inputs.default_value)
        self._results.update(out_file=out, forward_transforms=result["forward"])
        return runtime


class _ApplyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference = File(exists=True, mandatory=True, desc="grid to resample onto")
    transforms = InputMultiObject(File(exists=True), mandatory=True, desc="ANTs transforms")
    invert_flags = traits.List(traits.Bool, desc="invert each transform (default: none)")
    interpolation = traits.Enum("linear", "nearestNeighbor", "bSpline", "genericLabel",
                                usedefault=True, desc="interpolation")
    out_name = traits.Str("resampled.nii.gz", usedefault=True, desc="output file name")


class _ApplyOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="resampled image")


class ApplyTransforms(SimpleInterface):
    """Resample an image through ANTs transforms onto a reference grid."""

    input_spec = _ApplyInputSpec
    output_spec = _ApplyOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.registration import apply_transforms

        out = str(Path(runtime.cwd) / self.inputs.out_name)
        flags = self.inputs.invert_flags or None
        self._results["out_file"] = apply_transforms(
            self.inputs.in_file, self.inputs.reference, self.inputs.transforms, out,
            invert=flags, interpolation=self.inputs.interpolation,
        )
        return runtime
