"""Output names and writers of the participant quantification tables.

Per PET image, two BIDS-Derivatives tables, each with a JSON data dictionary::

    <entities>_seg-<atlas>_desc-<preproc|harmonized>_suvr.tsv       regional rows
    <entities>_seg-<atlas>_desc-<preproc|harmonized>_measures.tsv   summary measures

where ``<entities>`` are the PET file's ``sub``, ``ses``, ``trc`` (and ``rec``/``run``)
entities; ``space`` and ``desc`` of the input are dropped.

>>> pet = "sub-01_ses-petmr_trc-PiB_space-MNI152NLin2009cAsym_desc-harmonized_pet.nii.gz"
>>> derivative_name(pet, seg="synth", desc="harmonized", suffix="suvr")
'sub-01_ses-petmr_trc-PiB_seg-synth_desc-harmonized_suvr.tsv'
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bids_harmonize.quant.measures import MEASURE_DICTIONARY
from bids_harmonize.quant.regional import REGION_DICTIONARY

_KEEP = ("sub", "ses", "trc", "rec", "run")


def entities(filename: str | Path) -> dict[str, str]:
    """BIDS entities of a file name (``key-value`` pairs before the suffix).

    >>> entities("sub-01_ses-petct_trc-FDG_seg-synth_desc-preproc_measures.tsv")
    {'sub': '01', 'ses': 'petct', 'trc': 'FDG', 'seg': 'synth', 'desc': 'preproc'}
    """
    stem = Path(filename).name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


def derivative_name(in_file: str | Path, *, seg: str, desc: str, suffix: str,
                    extension: str = ".tsv") -> str:
    """The table file name for a PET image, a seg label, a desc and a suffix."""
    if not re.fullmatch(r"[A-Za-z0-9]+", seg) or not re.fullmatch(r"[A-Za-z0-9]+", desc):
        raise ValueError(f"seg ({seg!r}) and desc ({desc!r}) must be alphanumeric")
    ent = entities(in_file)
    if "sub" not in ent:
        raise ValueError(f"{in_file}: not a BIDS file name (no sub- entity)")
    parts = [f"{k}-{ent[k]}" for k in _KEEP if k in ent]
    return "_".join([*parts, f"seg-{seg}", f"desc-{desc}", suffix]) + extension


def write_tsv(table: pd.DataFrame, path: str | Path,
              dictionary: dict[str, dict] | None = None) -> tuple[Path, Path | None]:
    """Write a BIDS TSV (``n/a`` for missing) and, if given, its JSON data dictionary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    if dictionary is None:
        return path, None
    sidecar = path.with_name(path.name.split(".")[0] + ".json")
    described = {c: dictionary[c] for c in table.columns if c in dictionary}
    sidecar.write_text(json.dumps(described, indent=2) + "\n")
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
