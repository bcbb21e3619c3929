"""Derivatives writing: niworkflows' ``DerivativesDataSink`` at the output root.

Its path patterns come from the one derivatives specification
(:func:`bids_harmonize.derivatives.path_patterns`, ``data/io_spec.json``), which also
declares this project's files: a CT resampled into T1w space, the pseudo-CT, and
regional tables (``seg-<atlas>``). Workflows build sinks through
:func:`bids_harmonize.workflows.outputs.spec_sink`, never with ad-hoc entities.
"""

from __future__ import annotations

from niworkflows.interfaces.bids import DerivativesDataSink as _DerivativesDataSink

from bids_harmonize.derivatives import path_patterns


class DerivativesDataSink(_DerivativesDataSink):
    """niworkflows' sink, writing at the output root with the specification's patterns."""

    out_path_base = ""
    _config_entities = _DerivativesDataSink._config_entities | {"seg"}
    _config_entities_dict = [
        *_DerivativesDataSink._config_entities_dict,
        {"name": "seg", "pattern": "[_/\\\\]+seg-([a-zA-Z0-9]+)"},
    ]
    _file_patterns = path_patterns()
