"""Nipype interfaces that draw the report figures of :mod:`bids_harmonize.reports.reportlets`."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _OverlayInputSpec(BaseInterfaceInputSpec):
    background = File(exists=True, mandatory=True, desc="grey-scale background image")
    overlay = File(exists=True, desc="image drawn in colour on top")
    contour = File(exists=True, desc="mask drawn as a contour")
    title = traits.Str("", usedefault=True, desc="figure title")


class _FigureOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="SVG figure")


class OverlayRPT(SimpleInterface):
    """Registration check: overlay and/or contour on a background, three views."""

    input_spec = _OverlayInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.reports.reportlets import plot_overlay

        out = str(Path(runtime.cwd) / "overlay.svg")
        self._results["out_report"] = plot_overlay(
            self.inputs.background,
            self.inputs.overlay if isdefined(self.inputs.overlay) else None, out,
            contour=self.inputs.contour if isdefined(self.inputs.contour) else None,
            title=self.inputs.title,
        )
        return runtime


class _WindowInputSpec(BaseInterfaceInputSpec):
    info = traits.Dict(mandatory=True, desc="uptake-window record of PETStaticImage")
    title = traits.Str("", usedefault=True, desc="figure title")


class UptakeWindowRPT(SimpleInterface):
    """Frames, weights and the uptake window."""

    input_spec = _WindowInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.reports.reportlets import plot_uptake_window

        out = str(Path(runtime.cwd) / "window.svg")
        self._results["out_report"] = plot_uptake_window(self.inputs.info, out,
                                                         title=self.inputs.title)
        return runtime


class _HarmonizationInputSpec(BaseInterfaceInputSpec):
    before = File(exists=True, mandatory=True, desc="PET-MR before harmonization")
    after = File(exists=True, mandatory=True, desc="PET-MR after harmonization")
    mask = File(exists=True, mandatory=True, desc="brain mask, same grid")
    title = traits.Str("", usedefault=True, desc="figure title")


class HarmonizationRPT(SimpleInterface):
    """Before, after and ratio maps of the harmonization."""

    input_spec = _HarmonizationInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.reports.reportlets import plot_harmonization

        out = str(Path(runtime.cwd) / "harmonization.svg")
        self._results["out_report"] = plot_harmonization(
            self.inputs.before, self.inputs.after, self.inputs.mask, out, title=self.inputs.title
        )
        return runtime
