"""Nipype interface over :mod:`bids_harmonize.quant`: regional tables and summary measures."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)


class _RegionalQuantificationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True,
                   desc="static PET image in the atlas' template space (BIDS-named)")
    tracer = Str(mandatory=True, desc="tracer label or alias (tracers.yaml), e.g. PiB, FDG")
    atlas = Str("synth", usedefault=True,
                desc="'synth', 'centiloid' (with centiloid_vois), a TemplateFlow spec "
                     "tpl-<T>_atlas-<A>[_desc-<D>], or 'file' (with atlas_file/atlas_labels)")
    atlas_file = File(exists=True, desc="user atlas: integer label NIfTI in template space")
    atlas_labels = File(exists=True, desc="user atlas: label TSV with index and name columns")
    atlas_name = Str(desc="seg- label of a user atlas (alphanumeric); default from file name")
    centiloid_vois = Directory(exists=True,
                               desc="directory with the GAAIN Centiloid VOIs (voi_*_2mm.nii.gz)")
    reference = Str(desc="override the tracer's reference region (region or composite name)")
    cutoff = traits.Float(desc="override the tracer's positivity cut-off value")
    desc = traits.Enum("preproc", "harmonized", usedefault=True,
                       desc="desc- of the output tables: image before or after harmonization")
    members = InputMultiObject(File(exists=True),
                               desc="the same image from each member of the harmonizer's "
                                    "ensemble (template space): adds suvr_sd / value_sd")
    sd_scale = traits.Float(1.0, usedefault=True,
                            desc="calibration factor of the ensemble spread (model card)")


class _RegionalQuantificationOutputSpec(TraitedSpec):
    out_regions = File(exists=True, desc="regional table (*_seg-<atlas>_desc-<desc>_suvr.tsv)")
    out_regions_json = File(exists=True, desc="data dictionary of the regional table")
    out_measures = File(exists=True,
                        desc="summary measures (*_seg-<atlas>_desc-<desc>_measures.tsv)")
    out_measures_json = File(exists=True, desc="data dictionary of the measures table")
    seg = Str(desc="seg- label of the atlas used")


class RegionalQuantification(SimpleInterface):
    """Regional SUVR table and tracer summary measures of one PET image.

    The maths is in :func:`bids_harmonize.quant.regional.regional_table` and
    :func:`bids_harmonize.quant.measures.summary_measures`; this node only loads the
    atlas, calls them and writes the tables into its working directory.
    """

    input_spec = _RegionalQuantificationInputSpec
    output_spec = _RegionalQuantificationOutputSpec

    def _run_interface(self, runtime):
        from bids_harmonize.quant.atlases import centiloid_atlas, load_atlas, user_atlas
        from bids_harmonize.quant.io import write_quantification
        from bids_harmonize.quant.measures import summary_measures
        from bids_harmonize.quant.regional import regional_table

        inputs = self.inputs
        if inputs.atlas == "centiloid":
            if not isdefined(inputs.centiloid_vois):
                raise ValueError("atlas='centiloid' needs centiloid_vois (a directory)")
            atlas = centiloid_atlas(inputs.centiloid_vois)
        elif inputs.atlas == "file" or isdefined(inputs.atlas_file):
            if not (isdefined(inputs.atlas_file) and isdefined(inputs.atlas_labels)):
                raise ValueError("a user atlas needs both atlas_file and atlas_labels")
            name = inputs.atlas_name if isdefined(inputs.atlas_name) else None
            atlas = user_atlas(inputs.atlas_file, inputs.atlas_labels, name=name)
        else:
            atlas = load_atlas(inputs.atlas)

        reference = inputs.reference if isdefined(inputs.reference) else None
        cutoff = inputs.cutoff if isdefined(inputs.cutoff) else None
        regions = regional_table(inputs.in_file, atlas, inputs.tracer, reference=reference)
        measures = summary_measures(regions, inputs.tracer, cutoff=cutoff)
        if isdefined(inputs.members) and inputs.members:
            from bids_harmonize.quant.regional import add_member_spread

            member_regions = [regional_table(m, atlas, inputs.tracer, reference=reference)
                              for m in inputs.members]
            member_measures = [summary_measures(r, inputs.tracer, cutoff=cutoff)
                               for r in member_regions]
            regions = add_member_spread(regions, member_regions, "regions", scale=inputs.sd_scale)
            measures = add_member_spread(measures, member_measures, "measures",
                                         scale=inputs.sd_scale)
        paths = write_quantification(regions, measures, runtime.cwd, inputs.in_file,
                                     seg=atlas.name, desc=inputs.desc)
        self._results.update({k: str(v) for k, v in paths.items()})
        self._results["seg"] = atlas.name
        return runtime
