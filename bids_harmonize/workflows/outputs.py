"""Derivatives sinks: one ``DerivativesDataSink`` node per output file kind."""

from __future__ import annotations

from nipype.pipeline import engine as pe

from bids_harmonize.interfaces.bids import DerivativesDataSink


def sink(name: str, output_dir: str, source_file: str, **entities) -> pe.Node:
    """A sink node writing under ``output_dir`` with names derived from ``source_file``."""
    return pe.Node(
        DerivativesDataSink(base_directory=str(output_dir), source_file=str(source_file),
                            **entities),
        name=name, run_without_submitting=True,
    )
