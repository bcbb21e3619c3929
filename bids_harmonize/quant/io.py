"""Output names and writers of the participant quantification tables.

Per PET image, two BIDS-Derivatives tables, each with a JSON data dictionary (the
``suvr`` and ``measures`` kinds of ``data/io_spec.json``)::

    <series>_seg-<atlas>_desc-<preproc|harmonized>_suvr.tsv       regional rows
    <series>_seg-<atlas>_desc-<preproc|harmonized>_measures.tsv   summary measures

where ``<series>`` are every entity of the PET series (``sub``, ``ses``, ``task``, ``acq``,
``trc``, ``rec``, ``run``); ``space`` and ``desc`` of the input are dropped.

>>> pet = "sub-01_ses-petmr_trc-PiB_space-MNI152NLin2009cAsym_desc-harmonized_pet.nii.gz"
>>> derivative_name(pet, seg="synth", desc="harmonized", suffix="suvr")
'sub-01_ses-petmr_trc-PiB_seg-synth_desc-harmonized_suvr.tsv'
>>> derivative_name(pet.replace("_space", "_rec-OSEM_run-2_space"), seg="synth",
...                 desc="preproc", suffix="measures")
'sub-01_ses-petmr_trc-PiB_rec-OSEM_run-2_seg-synth_desc-preproc_measures.tsv'
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bids_harmonize.derivatives import DerivativeNameError, build_name, parse_name, series_entities
from bids_harmonize.quant.measures import MEASURE_DICTIONARY
from bids_harmonize.quant.regional import REGION_DICTIONARY
from bids_harmonize.safeio import atomic_write_json, atomic_write_table


def derivative_name(in_file: str | Path, *, seg: str, desc: str, suffix: str,
                    extension: str = ".tsv") -> str:
    """The table file name for a PET image, a seg label, a desc and a suffix."""
    entities = parse_name(in_file, strict=False)
    if entities is None:
        raise ValueError(f"{in_file}: not a BIDS file name (no sub- entity)")
    try:
        return build_name(suffix, subject=entities["subject"], **series_entities(entities),
                          seg=seg, desc=desc, extension=extension)
    except DerivativeNameError as exc:
        raise ValueError(f"{in_file}: {exc}") from None


def write_tsv(table: pd.DataFrame, path: str | Path,
              dictionary: dict[str, dict] | None = None) -> tuple[Path, Path | None]:
    """Write a BIDS TSV (``n/a`` for missing) and, if given, its JSON data dictionary."""
    path = Path(path)
    atomic_write_table(table, path)
    if dictionary is None:
        return path, None
    sidecar = path.with_name(path.name.split(".")[0] + ".json")
    described = {c: dictionary[c] for c in table.columns if c in dictionary}
    atomic_write_json(sidecar, described)
    return path, sidecar


def write_quantification(regions: pd.DataFrame, measures: pd.DataFrame, out_dir: str | Path,
                         in_file: str | Path, *, seg: str, desc: str) -> dict[str, Path]:
    """Write both tables and their data dictionaries; returns the four paths.

    Keys: ``out_regions``, ``out_regions_json``, ``out_measures``, ``out_measures_json``.
    """
    out_dir = Path(out_dir)
    reg, reg_json = write_tsv(regions, out_dir / derivative_name(
        in_file, seg=seg, desc=desc, suffix="suvr"), REGION_DICTIONARY)
    mea, mea_json = write_tsv(measures, out_dir / derivative_name(
        in_file, seg=seg, desc=desc, suffix="measures"), MEASURE_DICTIONARY)
    return {"out_regions": reg, "out_regions_json": reg_json,
            "out_measures": mea, "out_measures_json": mea_json}
