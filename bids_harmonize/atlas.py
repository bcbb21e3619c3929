"""Label tables of the atlases the package knows, and region composites.

The ``synth`` atlas is the simulator's label map (``data/atlas-synth_dseg.tsv``);
composites are unions of its labels that quantification refers to by name.

>>> table = synth_label_table()
>>> int(table.loc[table.name == "pons", "index"].iloc[0])
22
>>> sorted(composite_labels("whole_cerebellum"))
[19, 20, 21]
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import pandas as pd

#: Regions of the synth atlas by the Braak stage at which tau reaches them, following the
#: PET Braak-stage regions of Schöll et al. 2016, Neuron 89:971-982 (Fig. 1; Desikan-
#: Killiany parcels): I entorhinal; II hippocampus; III parahippocampal, fusiform, lingual,
#: amygdala; IV insula, inferior and middle temporal, posterior and isthmus cingulate,
#: inferior parietal; V orbitofrontal, superior temporal, inferior/superior/rostral middle
#: frontal, anterior cingulate, supramarginal, superior parietal, precuneus, cuneus,
#: lateral occipital; VI pericalcarine, pre-/post-central, paracentral.
#: The synth atlas merges some of these; a merged label goes where most of its volume does:
#: ``hippocampus_parahippocampal`` to III (the parahippocampal gyrus; Schöll et al. leave
#: the hippocampus, Braak II, out of their PET stages because of choroid-plexus
#: off-target binding, so stage II has no label here), ``inferior_temporal_fusiform`` to
#: III (fusiform; inferior temporal is IV), ``lateral_temporal_cortex`` to IV (middle
#: temporal; superior temporal is V), ``posterior_cingulate_precuneus`` to V (precuneus;
#: posterior/isthmus cingulate is IV), ``frontal_cortex`` and ``parietal_cortex`` to V,
#: ``occipital_cortex`` to VI (its primary visual cortex; cuneus/lateral occipital are V,
#: which leaves the V-VI meta-ROI unchanged). The simulator's tau model
#: (``synth/uptake.py``) reads this same table.
BRAAK_STAGE_REGIONS: dict[int, tuple[str, ...]] = {
    1: ("entorhinal_cortex",),
    2: (),
    3: ("hippocampus_parahippocampal", "inferior_temporal_fusiform"),
    4: ("lateral_temporal_cortex", "insula"),
    5: ("frontal_cortex", "parietal_cortex", "posterior_cingulate_precuneus",
        "anterior_cingulate"),
    6: ("occipital_cortex",),
}


def _braak(*stages: int) -> tuple[str, ...]:
    return tuple(name for stage in stages for name in BRAAK_STAGE_REGIONS[stage])


#: Composite regions, as unions of synth-atlas region names.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "whole_cerebellum": (
        "superior_cerebellar_grey",
        "inferior_cerebellar_grey",
        "cerebellar_white_matter",
    ),
    "cerebellar_grey": ("superior_cerebellar_grey", "inferior_cerebellar_grey"),
    "cortical_composite": (
        "frontal_cortex",
        "parietal_cortex",
        "lateral_temporal_cortex",
        "posterior_cingulate_precuneus",
        "anterior_cingulate",
    ),
    # Braak meta-ROIs (Schöll et al. 2016): stages I-II, III-IV, V-VI of BRAAK_STAGE_REGIONS
    "braak_I_II": _braak(1, 2),
    "braak_III_IV": _braak(3, 4),
    "braak_V_VI": _braak(5, 6),
    "striatum": (
        "caudate_left",
        "caudate_right",
        "putamen_anterior_left",
        "putamen_anterior_right",
        "putamen_posterior_left",
        "putamen_posterior_right",
    ),
    "putamen_left": ("putamen_anterior_left", "putamen_posterior_left"),
    "putamen_right": ("putamen_anterior_right", "putamen_posterior_right"),
    "whole_brain": (),  # every label but ventricles, filled in by composite_labels
}


@cache
def synth_label_table() -> pd.DataFrame:
    """The synth atlas label table: ``index``, ``name``, ``abbreviation``, ``kind``, ``side``."""
    path = resources.files("bids_harmonize.data").joinpath("atlas-synth_dseg.tsv")
    with path.open() as handle:
        return pd.read_csv(handle, sep="\t")


def composite_labels(name: str, table: pd.DataFrame | None = None) -> list[int]:
    """Label indices of a region or composite, by name."""
    table = synth_label_table() if table is None else table
    by_name = dict(zip(table["name"], table["index"], strict=True))
    if name == "whole_brain":
        return [int(i) for n, i in by_name.items() if n != "ventricles_csf"]
    if name in by_name:
        return [int(by_name[name])]
    if name in COMPOSITES:
        return [int(by_name[part]) for part in COMPOSITES[name]]
    raise KeyError(f"unknown region or composite {name!r}")
