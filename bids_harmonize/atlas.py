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
    "braak_I_II": ("entorhinal_cortex", "hippocampus_parahippocampal"),
    "braak_III_IV": ("inferior_temporal_fusiform", "lateral_temporal_cortex", "insula"),
    "braak_V_VI": (
        "frontal_cortex",
        "parietal_cortex",
        "occipital_cortex",
        "posterior_cingulate_precuneus",
        "anterior_cingulate",
    ),
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
