"""Regional uptake table: per region and composite, mean uptake and SUVR.

SUVR (standardized uptake value ratio, the BEP023/PET-BIDS name) is a region's mean
uptake divided by the mean uptake of the tracer's reference region
(``tracers.yaml: reference``), both measured on the same image.

>>> import numpy as np, nibabel as nb, pandas as pd
>>> from bids_harmonize.quant.atlases import Atlas
>>> labels = np.zeros((4, 4, 4), "int16"); labels[:2] = 1; labels[2:] = 2
>>> pet = nb.Nifti1Image(np.where(labels == 1, 3.0, 1.5).astype("float32"), np.eye(4))
>>> atlas = Atlas("toy", nb.Nifti1Image(labels, np.eye(4)),
...               pd.DataFrame({"index": [1, 2], "name": ["frontal_cortex", "pons"]}),
...               composites={"whole_brain": ("frontal_cortex", "pons")})
>>> table = regional_table(pet, atlas, "FDG")
>>> table["region"].tolist()
['frontal_cortex', 'pons', 'whole_brain']
>>> table["n_voxels"].tolist(), table["mean"].tolist(), table["suvr"].tolist()
([32, 32, 64], [3.0, 1.5, 2.25], [2.0, 1.0, 1.5])
>>> table["reference_region"].unique().tolist()
['pons']
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_harmonize.quant.atlases import Atlas, resample_atlas
from bids_harmonize.tracers import Tracer, get_tracer

LOGGER = logging.getLogger(__name__)

#: Columns of the regional table, in order.
REGION_COLUMNS = ("region", "kind", "index", "volume_mm3", "n_voxels", "mean", "sd",
                  "reference_region", "reference_mean", "suvr")

#: BIDS-style data dictionary of the regional table (``*_suvr.json``).
REGION_DICTIONARY: dict[str, dict[str, str]] = {
    "region": {"LongName": "Region name",
               "Description": "Atlas region, or composite (union of atlas regions)."},
    "kind": {"LongName": "Region kind",
             "Description": "'region' for an atlas label or mask, 'composite' for a union.",
             "Levels": {"region": "atlas label or mask", "composite": "union of regions"}},
    "index": {"LongName": "Atlas label",
              "Description": "Label value in the atlas image (volume number for mask stacks); "
                             "n/a for composites."},
    "volume_mm3": {"LongName": "Region volume",
                   "Description": "Volume of the region on the PET grid.", "Units": "mm^3"},
    "n_voxels": {"LongName": "Number of voxels",
                 "Description": "Voxels of the region on the PET grid (after nearest-"
                                "neighbour resampling of the atlas)."},
    "mean": {"LongName": "Mean uptake",
             "Description": "Mean of the finite PET voxel values in the region.",
             "Units": "same as the PET image (see its sidecar 'Units')"},
    "sd": {"LongName": "Standard deviation of uptake",
           "Description": "Sample standard deviation (ddof=1) of the PET values in the region.",
           "Units": "same as the PET image (see its sidecar 'Units')"},
    "reference_region": {"LongName": "Reference region",
                         "Description": "Region whose mean uptake normalises the SUVR "
                                        "(tracer default from tracers.yaml)."},
    "reference_mean": {"LongName": "Reference region mean uptake",
                       "Description": "Mean uptake of the reference region.",
                       "Units": "same as the PET image (see its sidecar 'Units')"},
    "suvr": {"LongName": "Standardized uptake value ratio (SUVR)",
             "Description": "mean / reference_mean.", "Units": "unitless"},
    "suvr_sd": {"LongName": "Standard deviation of the SUVR (harmonizer uncertainty)",
                "Description": "Harmonized images only, with a model that has an ensemble: SD "
                               "of the SUVR over the ensemble's harmonized images, times the "
                               "model's calibration factor (model.json: uncertainty.scale); "
                               "suvr +- 1.645 suvr_sd is the calibrated 90 % interval.",
                "Units": "unitless"},
}

#: Column of the member spread added to each table kind: (value column, key column, SD column)
SPREAD_COLUMNS = {"regions": ("suvr", "region", "suvr_sd"),
                  "measures": ("value", "measure", "value_sd")}


def add_member_spread(table: pd.DataFrame, member_tables: list[pd.DataFrame], kind: str, *,
                      scale: float = 1.0) -> pd.DataFrame:
    """A copy of ``table`` with the spread column of ``kind`` (:data:`SPREAD_COLUMNS`).

    The spread is ``scale`` times the sample SD over ``member_tables`` (the same table
    computed on each ensemble member's image), matched by the key column; measures in
    'boolean' units (positivity flags) get n/a.

    >>> t = pd.DataFrame({"region": ["a", "b"], "suvr": [1.0, 2.0]})
    >>> members = [pd.DataFrame({"region": ["a", "b"], "suvr": [1.0, 2.0 + d]}) for d in (0.1, -0.1)]
    >>> add_member_spread(t, members, "regions", scale=2.0)["suvr_sd"].round(4).tolist()
    [0.0, 0.2828]
    """
    value, key, out = SPREAD_COLUMNS[kind]
    table = table.copy()
    if len(member_tables) < 2:
        table[out] = np.nan
        return table
    stacked = pd.concat([m.set_index(key)[value].astype(float) for m in member_tables], axis=1)
    sd = stacked.std(axis=1, ddof=1) * float(scale)
    table[out] = table[key].map(sd).astype(float)
    if "units" in table:
        table.loc[table["units"] == "boolean", out] = np.nan
    return table


def _as_image(img) -> nb.spatialimages.SpatialImage:
    return nb.load(img) if isinstance(img, (str, Path)) else img


def _pet_data(img: nb.spatialimages.SpatialImage) -> np.ndarray:
    data = np.asanyarray(img.dataobj, dtype="float64")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"a static (3-D) PET image is expected, got shape {data.shape}")
    return data


def _region_stats(atlas: Atlas, pet: np.ndarray):
    """Per atlas region: n_voxels, n_finite, sum, sum of squared deviations, mean."""
    data = np.asanyarray(atlas.image.dataobj)
    finite = np.isfinite(pet)
    if not finite.all():
        LOGGER.warning("PET image holds %d non-finite voxels; they are left out",
                       int((~finite).sum()))
    idx = atlas.labels["index"].to_numpy(int)
    n = len(idx)
    out = {k: np.zeros(n) for k in ("n_voxels", "n_finite", "sum", "ss")}
    if atlas.kind == "masks":
        for j in range(n):
            mask = data[..., idx[j] - 1] > 0
            vals = pet[mask & finite]
            out["n_voxels"][j] = mask.sum()
            out["n_finite"][j] = vals.size
            out["sum"][j] = vals.sum()
            out["ss"][j] = ((vals - vals.mean()) ** 2).sum() if vals.size else 0.0
    else:
        lab = np.rint(data).astype(np.int64).ravel()
        lab[lab < 0] = 0
        size = max(int(lab.max()), int(idx.max(initial=0))) + 1
        counts = np.bincount(lab, minlength=size)
        keep = finite.ravel()
        lab_f, val_f = lab[keep], pet.ravel()[keep]
        nf = np.bincount(lab_f, minlength=size).astype(float)
        sums = np.bincount(lab_f, weights=val_f, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / nf
        ss = np.bincount(lab_f, weights=(val_f - np.nan_to_num(means)[lab_f]) ** 2,
                         minlength=size)
        out = {"n_voxels": counts[idx].astype(float), "n_finite": nf[idx],
               "sum": sums[idx], "ss": ss[idx]}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = out["sum"] / out["n_finite"]
    return out


def _combine(stats: dict, members: list[int]):
    """Pool region statistics into a composite (exact, via the parallel-axis rule)."""
    n = stats["n_finite"][members]
    total = n.sum()
    mean = stats["sum"][members].sum() / total if total else np.nan
    dev = np.nan_to_num(stats["mean"][members] - mean)
    ss = (stats["ss"][members] + n * dev**2).sum()
    return stats["n_voxels"][members].sum(), total, mean, ss


def regional_table(pet, atlas: Atlas, tracer: str | Tracer, *,
                   reference: str | None = None) -> pd.DataFrame:
    """Regional mean, SD and SUVR of a PET image in template space.

    Parameters
    ----------
    pet : path or image
        Static PET image (3-D, or 4-D with one frame) in the atlas' template space.
    atlas : Atlas
        Resampled to the PET grid by world coordinates (nearest neighbour) if needed.
    tracer : str or Tracer
        Gives the reference region (``tracers.yaml: reference``).
    reference : str, optional
        Overrides the tracer's reference region (a region or composite name).

    Returns
    -------
    DataFrame with :data:`REGION_COLUMNS`: one row per atlas region, then composites.
    Masks and composites may overlap (e.g. Centiloid VOIs), so rows may not sum up.
    """
    tracer = get_tracer(tracer) if isinstance(tracer, str) else tracer
    img = _as_image(pet)
    data = _pet_data(img)
    atlas = resample_atlas(atlas, img)
    voxel_mm3 = float(abs(np.linalg.det(img.affine[:3, :3])))
    stats = _region_stats(atlas, data)
    names = atlas.region_names()
    pos = {name: i for i, name in enumerate(names)}

    rows = []
    for j, name in enumerate(names):
        n_vox, n_fin = stats["n_voxels"][j], stats["n_finite"][j]
        sd = np.sqrt(stats["ss"][j] / (n_fin - 1)) if n_fin > 1 else np.nan
        rows.append((name, "region", int(atlas.labels["index"].iloc[j]), n_vox,
                     stats["mean"][j], sd))
    for comp, parts in atlas.composites.items():
        _, total, mean, ss = _combine(stats, [pos[p] for p in parts])
        if atlas.kind == "masks":  # masks may overlap: count the union, not the sum
            vol = np.asanyarray(atlas.image.dataobj)
            idx = [int(atlas.labels["index"].iloc[pos[p]]) - 1 for p in parts]
            mask = (vol[..., idx] > 0).any(axis=-1)
            vals = data[mask & np.isfinite(data)]
            n_vox, total, mean = mask.sum(), vals.size, vals.mean() if vals.size else np.nan
            ss = ((vals - mean) ** 2).sum() if vals.size else np.nan
        else:
            n_vox = stats["n_voxels"][[pos[p] for p in parts]].sum()
        sd = np.sqrt(ss / (total - 1)) if total > 1 else np.nan
        rows.append((comp, "composite", pd.NA, n_vox, mean, sd))

    table = pd.DataFrame(rows, columns=["region", "kind", "index", "n_voxels", "mean", "sd"])
    table["n_voxels"] = table["n_voxels"].astype(int)
    table["index"] = table["index"].astype("Int64")
    table.insert(3, "volume_mm3", table["n_voxels"] * voxel_mm3)
    empty = table.loc[table["n_voxels"] == 0, "region"].tolist()
    if empty:
        LOGGER.warning("atlas %s: regions without voxels on the PET grid: %s", atlas.name, empty)

    ref_wanted = reference or tracer.reference
    ref_name = atlas.resolve(ref_wanted)
    if ref_name is None:
        LOGGER.warning("atlas %s has no reference region %r for %s; SUVR is n/a",
                       atlas.name, ref_wanted, tracer.name)
        ref_mean = np.nan
        ref_name = ref_wanted
    else:
        ref_mean = float(table.loc[table["region"] == ref_name, "mean"].iloc[0])
    table["reference_region"] = ref_name
    table["reference_mean"] = ref_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        table["suvr"] = table["mean"] / ref_mean
    return table.loc[:, list(REGION_COLUMNS)]
