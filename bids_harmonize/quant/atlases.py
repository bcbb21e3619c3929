"""Atlases in template space for regional quantification.

An :class:`Atlas` is either a *label image* (``kind="dseg"``: one integer label per
voxel, regions are disjoint) or a stack of *binary masks* (``kind="masks"``: a 4-D
image, one volume per region, regions may overlap, as the GAAIN Centiloid VOIs do).
Its label table has ``index`` and ``name`` columns; for ``masks`` atlases ``index``
is the 1-based volume number. ``composites`` are unions of region names;
``aliases`` map the standard region names used in ``tracers.yaml``
(``whole_cerebellum``, ``cortical_composite``, ...) to the atlas' own names.

Four sources, all returning an :class:`Atlas` (see :func:`load_atlas`):

* ``synth``: the simulator's 24-label map, :func:`synth_atlas`;
* the GAAIN Centiloid standard VOIs from a directory, :func:`centiloid_atlas`;
* a user NIfTI with a label TSV (``index``, ``name``), :func:`user_atlas`;
* a TemplateFlow atlas from the local cache only, :func:`templateflow_atlas`.

>>> import numpy as np, nibabel as nb
>>> data = np.zeros((4, 4, 4), dtype="int16"); data[:2] = 1; data[2:] = 2
>>> img = nb.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> labels = pd.DataFrame({"index": [1, 2], "name": ["frontal_cortex", "pons"]})
>>> atlas = Atlas(name="toy", image=img, labels=labels)
>>> atlas.region_names()
['frontal_cortex', 'pons']
>>> atlas.resolve("pons")
'pons'
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_harmonize.atlas import COMPOSITES, synth_label_table

LOGGER = logging.getLogger(__name__)

#: File names of the GAAIN Centiloid standard VOIs (2 mm SPM MNI grid), by region name.
CENTILOID_VOIS: dict[str, str] = {
    "voi_ctx": "voi_ctx_2mm.nii.gz",
    "voi_WhlCbl": "voi_WhlCbl_2mm.nii.gz",
    "voi_CerebGry": "voi_CerebGry_2mm.nii.gz",
    "voi_Pons": "voi_Pons_2mm.nii.gz",
    "voi_WhlCblBrnStm": "voi_WhlCblBrnStm_2mm.nii.gz",
}

#: Standard region names (tracers.yaml, bids_harmonize.atlas) -> Centiloid VOI names.
CENTILOID_ALIASES: dict[str, str] = {
    "whole_cerebellum": "voi_WhlCbl",
    "cortical_composite": "voi_ctx",
    "cerebellar_grey": "voi_CerebGry",
    "pons": "voi_Pons",
    "whole_cerebellum_brainstem": "voi_WhlCblBrnStm",
}


class AtlasError(ValueError):
    """An atlas that cannot be found, read or used."""


@dataclass(frozen=True)
class Atlas:
    """An atlas in template space: label image (or mask stack), label table, composites."""

    name: str
    image: nb.Nifti1Image
    labels: pd.DataFrame
    composites: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    kind: str = "dseg"
    standard_centiloid: bool = False
    source: str = ""

    def __post_init__(self):
        if self.kind not in ("dseg", "masks"):
            raise AtlasError(f"atlas {self.name!r}: kind must be 'dseg' or 'masks'")
        if not re.fullmatch(r"[A-Za-z0-9]+", self.name):
            raise AtlasError(f"atlas name {self.name!r} must be alphanumeric (a BIDS seg- label)")
        missing = {"index", "name"} - set(self.labels.columns)
        if missing:
            raise AtlasError(f"atlas {self.name!r}: label table lacks columns {sorted(missing)}")
        if self.labels["name"].duplicated().any():
            dups = sorted(self.labels.loc[self.labels["name"].duplicated(), "name"])
            raise AtlasError(f"atlas {self.name!r}: duplicated region names {dups}")
        for comp, parts in self.composites.items():
            unknown = set(parts) - set(self.labels["name"])
            if unknown:
                raise AtlasError(f"atlas {self.name!r}: composite {comp!r} names unknown "
                                 f"regions {sorted(unknown)}")

    def region_names(self) -> list[str]:
        """Names of the atlas' own regions, in label-table order."""
        return [str(n) for n in self.labels["name"]]

    def resolve(self, name: str) -> str | None:
        """The atlas' name for a region or composite (through ``aliases``), or None."""
        name = self.aliases.get(name, name)
        if name in self.composites or name in set(self.labels["name"]):
            return name
        return None


def _relabel_table(table: pd.DataFrame) -> pd.DataFrame:
    out = table.loc[:, ["index", "name"]].copy()
    out["index"] = out["index"].astype(int)
    out["name"] = out["name"].astype(str)
    return out.reset_index(drop=True)


def _default_composites(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Composites of ``bids_harmonize.atlas.COMPOSITES`` whose parts all exist, + whole_brain."""
    present = set(names)
    comps = {c: parts for c, parts in COMPOSITES.items() if parts and set(parts) <= present}
    comps["whole_brain"] = tuple(n for n in names if n != "ventricles_csf")
    return comps


def _synth_template_labels() -> nb.Nifti1Image:
    try:
        from bids_harmonize.synth import template_labels
    except ImportError:
        try:
            from bids_harmonize.synth.template import template_labels
        except ImportError as exc:
            raise AtlasError(
                "the synth atlas needs bids_harmonize.synth.template_labels(), "
                "which this installation lacks"
            ) from exc
    return template_labels()


def synth_atlas(image: nb.Nifti1Image | None = None) -> Atlas:
    """The simulator's 24-label atlas with the package's composites.

    ``image`` defaults to ``bids_harmonize.synth.template_labels()``.
    """
    img = _synth_template_labels() if image is None else image
    table = _relabel_table(synth_label_table())
    return Atlas(
        name="synth",
        image=img,
        labels=table,
        composites=_default_composites(table["name"].tolist()),
        source="bids_harmonize.synth.template_labels()",
    )


def centiloid_atlas(directory: str | Path) -> Atlas:
    """The five GAAIN Centiloid standard VOIs from ``directory`` (a 4-D mask stack)."""
    directory = Path(directory)
    vols, affine, shape = [], None, None
    for region, fname in CENTILOID_VOIS.items():
        path = directory / fname
        if not path.is_file() and path.with_suffix("").is_file():  # uncompressed .nii
            path = path.with_suffix("")
        if not path.is_file():
            raise AtlasError(
                f"Centiloid VOI {region!r} not found: expected {directory / fname} "
                f"(--centiloid-vois must hold {', '.join(CENTILOID_VOIS.values())})"
            )
        img = nb.load(path)
        if affine is None:
            affine, shape = img.affine, img.shape[:3]
        elif img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise AtlasError(f"Centiloid VOI {path} is not on the grid of the others")
        vols.append(np.asarray(img.dataobj).reshape(shape) > 0.5)
    stack = nb.Nifti1Image(np.stack(vols, axis=-1).astype("uint8"), affine)
    table = pd.DataFrame({"index": range(1, len(CENTILOID_VOIS) + 1),
                          "name": list(CENTILOID_VOIS)})
    return Atlas(
        name="centiloid",
        image=stack,
        labels=table,
        aliases=dict(CENTILOID_ALIASES),
        kind="masks",
        standard_centiloid=True,
        source=str(directory),
    )


def read_label_table(path: str | Path) -> pd.DataFrame:
    """A label TSV with ``index`` and ``name`` columns (other columns are ignored)."""
    table = pd.read_csv(path, sep="\t")
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise AtlasError(f"label table {path} lacks columns {sorted(missing)} "
                         "(a TSV with 'index' and 'name' columns is expected)")
    table = table.loc[table["index"].astype(int) != 0]  # background
    return _relabel_table(table)


def _seg_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text) or "atlas"


def user_atlas(image: str | Path | nb.Nifti1Image, labels: str | Path | pd.DataFrame,
               *, name: str | None = None) -> Atlas:
    """A user atlas: an integer label NIfTI in template space and its label table."""
    if not isinstance(image, nb.Nifti1Image):
        path = Path(image)
        if not path.is_file():
            raise AtlasError(f"atlas image {path} not found")
        if name is None:
            name = path.name.split(".")[0]
            name = re.sub(r"_(dseg|atlas)$", "", name)
        image = nb.load(path)
    table = labels if isinstance(labels, pd.DataFrame) else read_label_table(labels)
    table = _relabel_table(table)
    name = _seg_label(name or "user")
    data = np.asanyarray(image.dataobj)
    if data.ndim != 3:
        raise AtlasError(f"atlas {name!r}: a 3-D label image is expected, got {data.shape}")
    if not np.allclose(data, np.round(data)):
        raise AtlasError(f"atlas {name!r}: label image holds non-integer values")
    present = set(np.unique(data).astype(int)) - {0}
    absent = sorted(set(table["index"]) - present)
    if absent:
        LOGGER.warning("atlas %s: %d labels of the table are absent from the image: %s",
                       name, len(absent), absent[:10])
    unknown = sorted(present - set(table["index"]))
    if unknown:
        LOGGER.warning("atlas %s: image labels %s are not in the label table; ignored",
                       name, unknown[:10])
    return Atlas(name=name, image=image, labels=table,
                 composites=_default_composites(table["name"].tolist()),
                 source=str(getattr(image, "get_filename", lambda: None)() or name))


_TF_ENTITY = re.compile(r"(tpl|atlas|desc|res|cohort)-([A-Za-z0-9]+)")


def parse_templateflow_spec(spec: str) -> dict[str, str]:
    """Split ``tpl-<T>_atlas-<A>[_desc-<D>][_res-<R>]`` into entities.

    >>> parse_templateflow_spec("tpl-MNI152NLin2009cAsym_atlas-Schaefer2018_desc-100Parcels")
    {'tpl': 'MNI152NLin2009cAsym', 'atlas': 'Schaefer2018', 'desc': '100Parcels'}
    """
    found = dict(_TF_ENTITY.findall(spec))
    if "tpl" not in found or "atlas" not in found:
        raise AtlasError(f"TemplateFlow atlas {spec!r} must name at least tpl-<template> and "
                         "atlas-<atlas>, e.g. tpl-MNI152NLin2009cAsym_atlas-Schaefer2018_"
                         "desc-100Parcels7Networks")
    return found


def _tf_cached(path: Path) -> bool:
    return Path(path).is_file() and Path(path).stat().st_size > 0


def templateflow_atlas(spec: str, *, resolution: int = 2, client=None) -> Atlas:
    """A TemplateFlow atlas from the local cache only (never downloads).

    ``client`` is ``templateflow.api`` by default (``TEMPLATEFLOW_HOME``), or a
    ``templateflow.TemplateFlowClient``. Files listed but not cached (TemplateFlow
    keeps empty placeholders for those) raise :class:`AtlasError` saying how to fetch.
    """
    ent = parse_templateflow_spec(spec)
    if client is None:
        from templateflow import api as client
    cache = getattr(client, "cache", None)
    if cache is not None and not cache.cached:  # an empty home would be filled from the network
        raise AtlasError(f"the TemplateFlow cache {cache.config.root} is empty; fill it ahead of "
                         f"time (TEMPLATEFLOW_HOME) to use the atlas {spec!r}")
    tpl = ent.pop("tpl")
    res = int(ent.pop("res", resolution))
    query = {k: v for k, v in ent.items()}
    query.setdefault("desc", None)
    img_query = dict(query, resolution=res, suffix="dseg", extension=".nii.gz")
    tsv_query = dict(query, suffix="dseg", extension=".tsv")
    images = client.ls(tpl, **img_query)
    tables = client.ls(tpl, **tsv_query)
    fetch = (f"python -c \"from templateflow.api import get; get('{tpl}', "
             + ", ".join(f"{k}={v!r}" for k, v in img_query.items()) + ")\"")
    if len(images) != 1 or len(tables) != 1:
        raise AtlasError(
            f"TemplateFlow atlas {spec!r} (resolution {res}) is not in the TemplateFlow cache "
            f"({cache.config.root if cache is not None else 'TEMPLATEFLOW_HOME'}): found "
            f"{len(images)} image(s) and {len(tables)} label "
            f"table(s). Fetch it ahead of time on a machine with network: {fetch}"
        )
    missing = [str(p) for p in (*images, *tables) if not _tf_cached(p)]
    if missing:
        raise AtlasError(
            f"TemplateFlow atlas {spec!r} is listed but not downloaded in the local cache "
            f"({', '.join(missing)}); no download is attempted at run time. "
            f"Fetch it ahead of time on a machine with network: {fetch}"
        )
    image_path = client.get(tpl, **img_query)  # cached: get() only returns the path
    table_path = client.get(tpl, **tsv_query)
    name = _seg_label(ent["atlas"] + ent.get("desc", ""))
    atlas = user_atlas(image_path, table_path, name=name)
    return Atlas(name=atlas.name, image=atlas.image, labels=atlas.labels,
                 composites=atlas.composites, source=str(image_path))


def load_atlas(spec: str | Path = "synth", *, labels: str | Path | None = None,
               name: str | None = None, resolution: int = 2) -> Atlas:
    """Any atlas from a command-line style spec.

    ``spec`` is ``"synth"``; a directory with the GAAIN Centiloid VOIs
    (``--centiloid-vois``); a NIfTI label image (``--atlas``; ``labels`` gives its TSV,
    else a ``.tsv`` next to it with the same stem is used); or a TemplateFlow atlas
    ``tpl-<T>_atlas-<A>[_desc-<D>][_res-<R>]`` read from the local cache.
    """
    spec_s = str(spec)
    if spec_s == "synth":
        return synth_atlas()
    path = Path(spec_s)
    if path.is_dir():
        return centiloid_atlas(path)
    if path.is_file() or spec_s.endswith((".nii", ".nii.gz")):
        if labels is None:
            stem = path.name.split(".")[0]
            guess = path.with_name(stem + ".tsv")
            if not guess.is_file():
                raise AtlasError(f"atlas {path}: give its label TSV (index, name); "
                                 f"none found at {guess}")
            labels = guess
        return user_atlas(path, labels, name=name)
    if spec_s.startswith("tpl-"):
        return templateflow_atlas(spec_s, resolution=resolution)
    raise AtlasError(f"unknown atlas {spec_s!r}: use 'synth', a Centiloid VOI directory, "
                     "a label NIfTI (+ TSV) or a TemplateFlow spec tpl-<T>_atlas-<A>...")


def same_grid(a: nb.spatialimages.SpatialImage, b: nb.spatialimages.SpatialImage,
              atol: float = 1e-3) -> bool:
    """Whether two images share the 3-D voxel grid (shape and affine)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)


def _nearest(data: np.ndarray, src_affine: np.ndarray, shape: tuple[int, ...],
             affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour pull of ``data`` (3-D or 4-D) onto a grid, by world coordinates.

    A target voxel takes the source voxel whose centre is nearest to its own centre
    (within half a voxel of the source field of view), else 0.
    """
    vox2vox = np.linalg.inv(src_affine) @ affine
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    coords = np.floor(vox2vox[:3, :3] @ ijk + vox2vox[:3, 3:] + 0.5).astype(np.int64)
    inside = np.all((coords >= 0) & (coords < np.array(data.shape[:3])[:, None]), axis=0)
    out = np.zeros((int(np.prod(shape)),) + data.shape[3:], dtype=data.dtype)
    out[inside] = data[tuple(coords[:, inside])]
    return out.reshape(tuple(shape) + data.shape[3:])


def resample_atlas(atlas: Atlas, target: nb.spatialimages.SpatialImage) -> Atlas:
    """The atlas on ``target``'s voxel grid, by world coordinates, nearest neighbour.

    Returns the atlas unchanged when the grids already match.

    >>> import numpy as np, nibabel as nb
    >>> data = np.zeros((4, 4, 4), "int16"); data[2:] = 1
    >>> atlas = Atlas("toy", nb.Nifti1Image(data, np.diag([2., 2., 2., 1.])),
    ...               pd.DataFrame({"index": [1], "name": ["a"]}))
    >>> shifted = np.diag([2., 2., 2., 1.]); shifted[0, 3] = 2.0  # one voxel along x
    >>> pet = nb.Nifti1Image(np.zeros((4, 4, 4), "float32"), shifted)
    >>> out = resample_atlas(atlas, pet)
    >>> np.asarray(out.image.dataobj)[:, 0, 0].tolist()
    [0, 1, 1, 0]
    """
    if same_grid(atlas.image, target):
        return atlas
    src = atlas.image
    data = np.asanyarray(src.dataobj)
    data = data.astype("uint8") if atlas.kind == "masks" else np.rint(data).astype("int32")
    new = nb.Nifti1Image(_nearest(data, src.affine, target.shape[:3], target.affine),
                         target.affine)
    LOGGER.info("atlas %s resampled (nearest neighbour) from %s to %s", atlas.name,
                src.shape[:3], target.shape[:3])
    return Atlas(name=atlas.name, image=new, labels=atlas.labels, composites=atlas.composites,
                 aliases=atlas.aliases, kind=atlas.kind,
                 standard_centiloid=atlas.standard_centiloid, source=atlas.source)
