"""Paired PET-CT / PET-MR brain PET simulator.

>>> from bids_harmonize.synth import SynthConfig
>>> SynthConfig().resolution_mm
2.0

Public API:

- :func:`simulate_subject` -> :class:`SimulatedSubject` (everything on one grid);
- :func:`write_dataset` writes a BIDS dataset (the ``bids_harmonize-synth`` command);
- :class:`SynthConfig` the settings;
- :func:`template_labels` the synth atlas in MNI152NLin2009aSym template space.
"""

from bids_harmonize.synth.api import SessionTruth, SimulatedSubject, SynthConfig
from bids_harmonize.synth.simulate import simulate_subject
from bids_harmonize.synth.template import template_labels

__all__ = [
    "SessionTruth",
    "SimulatedSubject",
    "SynthConfig",
    "simulate_subject",
    "template_labels",
    "write_dataset",
]


def write_dataset(*args, **kwargs):
    """Write a BIDS dataset (see :func:`bids_harmonize.synth.bids_writer.write_dataset`)."""
    from bids_harmonize.synth.bids_writer import write_dataset as _write

    return _write(*args, **kwargs)
