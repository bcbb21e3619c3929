"""Template space: nilearn's MNI152 2009a template, tissue maps and the synth label map."""

from __future__ import annotations


def template_labels():
    """The synth atlas (24 labels) on nilearn's 2 mm MNI152NLin2009aSym grid."""
    raise NotImplementedError("in progress")
