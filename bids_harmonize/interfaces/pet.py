"""Nipype interfaces for PET: frame realignment, uptake-window average, SUV."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _StaticInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="PET series (3-D or 4-D)")
    metadata = traits.Dict(mandatory=True, desc="the PET JSON sidecar")
    window_min = traits.Tuple(traits.Float, traits.Float,
                              desc="uptake window, minutes after injection (undefined: every "
                                   "frame, the whole static or summed image)")
    window_policy = traits.Enum("strict", "nearest", usedefault=True,
                                desc="frames not covering the window: fail (strict) or use the "
                                     "nearest covered span of the same length (nearest)")
    half_life_min = traits.Float(mandatory=True, desc="radionuclide half-life (min)")
    body_weight_kg = traits.Float(desc="body weight (kg) from the sidecar, sessions.tsv or "
                                       "participants.tsv (undefined: sidecar BodyWeight only)")
    body_weight_source = traits.Str("sidecar BodyWeight", usedefault=True,
                                    desc="where body_weight_kg was read")
    realign = traits.Bool(True, usedefault=True, desc="rigidly realign frames in the window")
    suv = traits.Bool(True, usedefault=True, desc="scale to SUV when dose and weight are known")
    sloppy = traits.Bool(False, usedefault=True, desc="fast realignment settings")
    seed = traits.Int(0, usedefault=True, desc="random seed of ANTs' metric sampling")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _StaticOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="static uptake image in the PET's own space")
    out_info = File(exists=True, desc="JSON: frames used, weights, window, motion, units")
    info = traits.Dict(desc="the same information as a dict")


class PETStaticImage(SimpleInterface):
    """Realign the frames of the uptake window and average them (duration-weighted)."""

    input_spec = _StaticInputSpec
    output_spec = _StaticOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np

        from bids_harmonize.petmath import (
            actual_window,
            frame_times_after_injection,
            select_frames,
            uptake_scaling,
            weight_kg,
            weighted_frame_average,
        )
        from bids_harmonize.realign import realign_frames
        from bids_harmonize.registration import set_threads

        set_threads(self.inputs.omp_nthreads)
        cwd = Path(runtime.cwd)
        meta = dict(self.inputs.metadata)
        img = nb.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim == 3:
            data = data[..., None]
        # the uptake window counts from the injection, not from TimeZero
        starts, durations = frame_times_after_injection(meta), meta["FrameDuration"]
        requested = tuple(self.inputs.window_min) if isdefined(self.inputs.window_min) else None
        selection = select_frames(starts, durations, requested, policy=self.inputs.window_policy)
        weights = selection.weights
        window_text = (f"{selection.window_min[0]:g}-{selection.window_min[1]:g} min"
                       if selection.window_min else "all frames")
        used = np.flatnonzero(weights > 0)
        motion_mm = [0.0] * len(used)
        # "empty": the window's peak is a rounding error next to the series' peak
        if np.abs(data[..., used]).max() <= 1e-3 * max(np.abs(data).max(), 1e-30):
            raise ValueError(
                f"{self.inputs.in_file}: the frames of the uptake window "
                f"({window_text}) hold no signal"
            )

        if self.inputs.realign and len(used) > 1:
            realigned = realign_frames(data, img.affine, used, sloppy=self.inputs.sloppy,
                                       seed=self.inputs.seed, workdir=cwd)
            data, motion_mm = realigned.frames, realigned.motion_mm

        static = weighted_frame_average(data, weights)
        units = meta.get("Units", "Bq/mL")
        weight = (self.inputs.body_weight_kg if isdefined(self.inputs.body_weight_kg)
                  else weight_kg(meta.get("BodyWeight")))
        factor, scaled_units, units_how = uptake_scaling(
            {**meta, "_HalfLifeSeconds": self.inputs.half_life_min * 60.0}, weight)
        if self.inputs.suv and factor is not None:
            static = static * np.float32(factor)
            units = scaled_units
        else:
            units_how = "image units kept (SUV scaling off)" if factor is not None else units_how
        out = cwd / "pet_static.nii.gz"
        out_img = nb.Nifti1Image(static.astype(np.float32), img.affine)
        out_img.header.set_xyzt_units("mm")
        nb.save(out_img, out)
        info = {
            "TimeWindowRequested": list(requested) if requested else None,
            "TimeWindow": list(actual_window(starts, durations, weights)),
            "TimeWindowPolicy": self.inputs.window_policy,
            "TimeWindowNote": selection.note,
            "FramesUsed": [int(i) for i in used],
            "FrameWeights": [round(float(w), 6) for w in weights],
            "FrameTimesStart": list(starts),  # after injection (InjectionStart subtracted)
            "InjectionStart": float(meta.get("InjectionStart") or 0.0),
            "FrameDuration": list(durations),
            "FrameRealignment": bool(self.inputs.realign and len(used) > 1),
            "FrameTranslationMM": [round(m, 3) for m in motion_mm],
            "Units": units,
            "UnitsDescription": units_how,
            "BodyWeightSource": self.inputs.body_weight_source if weight is not None else "none",
            "SUVFactor": factor if (self.inputs.suv and units == "g/mL") else None,
            "UptakeScaleFactor": factor if (self.inputs.suv and factor is not None) else None,
        }
        (cwd / "static_info.json").write_text(json.dumps(info, indent=2))
        self._results.update(out_file=str(out), out_info=str(cwd / "static_info.json"), info=info)
        return runtime


class _SmoothInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="static PET in its own space")
    scanner_fwhm_mm = traits.Float(mandatory=True,
                                   desc="the scanner's effective resolution (FWHM, mm)")
    target_fwhm_mm = traits.Float(mandatory=True, desc="common effective resolution (FWHM, mm)")


class _SmoothOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the PET at the common effective resolution")
    kernel_fwhm_mm = traits.Float(desc="FWHM (mm) of the Gaussian applied")


class SmoothToResolution(SimpleInterface):
    """Smooth a PET image to a common effective resolution
    (:func:`bids_harmonize.resolution.smooth_to_resolution`)."""

    input_spec = _SmoothInputSpec
    output_spec = _SmoothOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np

        from bids_harmonize.resolution import smooth_to_resolution

        img = nb.load(self.inputs.in_file)
        data, kernel = smooth_to_resolution(np.asarray(img.dataobj, dtype=np.float32),
                                            img.affine, self.inputs.scanner_fwhm_mm,
                                            self.inputs.target_fwhm_mm)
        out = Path(runtime.cwd) / "pet_static_smoothed.nii.gz"
        out_img = nb.Nifti1Image(data, img.affine, img.header)
        out_img.set_data_dtype(np.float32)
        nb.save(out_img, out)
        self._results.update(out_file=str(out), kernel_fwhm_mm=float(kernel))
        return runtime
