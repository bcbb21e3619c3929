"""Derivatives writing: niworkflows' ``DerivativesDataSink`` at the output root.

Extended with this project's files: a CT resampled into T1w space, the
pseudo-CT, and regional tables (``seg-<atlas>``).
"""

from __future__ import annotations

from niworkflows.interfaces.bids import DerivativesDataSink as _DerivativesDataSink

_PET_ENTITIES = (
    "sub-{subject}[_ses-{session}][_trc-{tracer}][_rec-{reconstruction}][_run-{run}]"
)
EXTRA_PATTERNS = (
    "sub-{subject}[/ses-{session}]/{datatype<anat|pet>|anat}/" + _PET_ENTITIES
    + "[_space-{space}][_desc-{desc}]_{suffix<CT>}{extension<.nii|.nii.gz|.json>|.nii.gz}",
    "sub-{subject}[/ses-{session}]/{datatype<pet>|pet}/" + _PET_ENTITIES
    + "[_space-{space}][_seg-{seg}][_desc-{desc}]_{suffix<suvr|measures>}"
    "{extension<.tsv|.json>|.tsv}",
    "sub-{subject}[/ses-{session}]/{datatype<pet>|pet}/" + _PET_ENTITIES
    + "[_space-{space}][_desc-{desc}]_{suffix<mask|dseg>}{extension<.nii|.nii.gz|.json>|.nii.gz}",
    "sub-{subject}/{datatype<figures>}/sub-{subject}[_ses-{session}][_trc-{tracer}]"
    "[_space-{space}][_desc-{desc}]_{suffix<pet|T1w|CT>}{extension<.svg|.png|.html>|.svg}",
)


class DerivativesDataSink(_DerivativesDataSink):
    """niworkflows' sink, writing at the output root and knowing this project's files."""

    out_path_base = ""
    _config_entities = _DerivativesDataSink._config_entities | {"seg"}
    _config_entities_dict = [
        *_DerivativesDataSink._config_entities_dict,
        {"name": "seg", "pattern": "[_/\\\\]+seg-([a-zA-Z0-9]+)"},
    ]
    _file_patterns = (*EXTRA_PATTERNS, *_DerivativesDataSink._file_patterns)
