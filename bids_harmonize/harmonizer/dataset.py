"""Training pairs: one subject and tracer with same-day PET-CT and PET-MR on one grid.

:func:`load_pairs_from_derivatives` reads the participant workflow's outputs through the
one reader, :func:`bids_harmonize.derivatives.collect_derivatives` (``data/io_spec.json``):
per subject and tracer, the PET-CT and PET-MR ``space-T1w_desc-preproc_pet`` images (every
series: ``run-``/``rec-`` included; the platform is the sidecar's ``Platform``, as
discovery decided it), the preprocessed T1w, the brain mask and the PET-CT session's
``space-T1w_desc-preproc_CT``. The PET-MR sidecar's ``AttenuationCorrectionSetup`` (as
discovery inferred it) becomes the pair's ``ac_setup``, so the physics channel is made in
training exactly as the participant level makes it at inference, and the T1w's affine
the pair's ``affine`` (the model grid, :mod:`.grid`). Region labels on the T1w grid come
from the quantification atlas brought through the subject's template-to-T1w transform
(:func:`atlas_on_t1w`), so the regional loss and the ensemble calibration use the regions
users read SUVR in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_harmonize.derivatives import collect_derivatives, list_subjects, series_label

LOGGER = logging.getLogger(__name__)

ARRAY_FIELDS = ("t1w", "ct_hu", "pet_ct", "pet_mr", "brain_mask")


class InsufficientDataError(RuntimeError):
    """Fewer usable training pairs than required."""


@dataclass
class TrainingPair:
    """One training example: arrays (or NIfTI paths) on ONE common grid (the T1w grid).

    ``labels`` (integer region map, 0 = background) is optional; without it the regional
    loss uses the brain mask as a single region. ``mu_map`` is the PET-MR scanner's own
    attenuation map (1/cm at 511 keV) on the same grid, when the data have one;
    ``ac_setup`` names the PET-MR attenuation-correction setup
    (``bids_harmonize.acsetups``; "unknown" when not known).
    """

    subject: str
    tracer: str
    t1w: np.ndarray | str | Path
    ct_hu: np.ndarray | str | Path
    pet_ct: np.ndarray | str | Path
    pet_mr: np.ndarray | str | Path
    brain_mask: np.ndarray | str | Path
    labels: np.ndarray | str | Path | None = None
    petct_model: str = "unknown"
    petmr_model: str = "unknown"
    extra: dict = field(default_factory=dict)
    mu_map: np.ndarray | str | Path | None = None
    ac_setup: str = "unknown"
    #: voxel-to-world affine of the common grid (``None``: arrays already RAS+ 2 mm, as
    #: the simulator's in-memory volumes); training reorients and resamples with it
    #: (:class:`~.grid.ModelGrid`) exactly as inference does
    affine: np.ndarray | None = None

    def grid(self, shape):
        """The :class:`~.grid.ModelGrid` of this pair's arrays (of ``shape``)."""
        from .grid import ModelGrid

        if self.affine is None:
            return ModelGrid.from_spacing(shape)
        return ModelGrid.from_affine(shape, self.affine)

    def load(self) -> dict[str, np.ndarray]:
        """Arrays of every field (paths are read with nibabel); checks they share a shape."""
        out = {}
        for name in (*ARRAY_FIELDS, "labels", "mu_map"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str | Path):
                import nibabel as nb

                value = np.asanyarray(nb.load(str(value)).dataobj)
            out[name] = np.asarray(value)
        shapes = {k: v.shape for k, v in out.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"pair {self.key}: arrays are not on one grid: {shapes}")
        return out

    @property
    def key(self) -> str:
        return f"sub-{self.subject}_trc-{self.tracer}"


PLATFORMS = ("PET-CT", "PET-MR")


def _match_ct(mr, cts: list):
    """The PET-CT series paired with a PET-MR series: the only one, or the one whose
    non-session series entities (task, acq, rec, run) are the PET-MR's; else ``None``."""
    if len(cts) == 1:
        return cts[0]
    mine = {k: v for k, v in mr.series if k != "session"}
    same = [c for c in cts if {k: v for k, v in c.series if k != "session"} == mine]
    return same[0] if len(same) == 1 else None


def atlas_on_t1w(t1w, tpl2t1w_xfm, atlas="synth", labels=None, out_file=None) -> np.ndarray:
    """Integer region labels of ``atlas`` (template space: a loaded
    :class:`~bids_harmonize.quant.atlases.Atlas`, or a spec for
    :func:`~bids_harmonize.quant.atlases.load_atlas` with its ``labels``) on the grid of
    ``t1w``, through the participant level's composite template-to-T1w transform (ANTs,
    ``genericLabel`` interpolation). A mask-stack atlas (Centiloid VOIs) is flattened,
    later masks winning where they overlap."""
    import tempfile

    import nibabel as nb

    from bids_harmonize.quant.atlases import Atlas, load_atlas
    from bids_harmonize.registration import apply_transforms

    spec = atlas if isinstance(atlas, Atlas) else load_atlas(atlas, labels=labels)
    img = spec.image
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        flat = np.zeros(data.shape[:3], np.int16)
        for k in range(data.shape[3]):
            flat[data[..., k] > 0.5] = k + 1
        data = flat
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "atlas.nii.gz"
        nb.Nifti1Image(data.astype(np.float32), img.affine).to_filename(src)
        out = apply_transforms(str(src), str(t1w), [str(tpl2t1w_xfm)],
                               str(out_file or Path(tmp) / "labels.nii.gz"),
                               interpolation="genericLabel")
        return np.rint(np.asanyarray(nb.load(out).dataobj)).astype(np.int16)


def _label_ids(atlas, region: str | None) -> tuple[int, ...] | None:
    """Label values (as :func:`atlas_on_t1w` writes them) of a region or composite."""
    name = atlas.resolve(region) if region else None
    if name is None:
        return None
    index = dict(zip(atlas.labels["name"], atlas.labels["index"], strict=True))
    return tuple(int(index[part]) for part in atlas.composites.get(name, (name,)))


def reference_label_ids(atlas, tracer) -> tuple[int, ...] | None:
    """Label values of ``tracer``'s reference region in ``atlas``, or None when the tracer
    or its reference is not known there.

    >>> from bids_harmonize.quant.atlases import load_atlas
    >>> reference_label_ids(load_atlas("synth"), "PiB"), reference_label_ids(load_atlas("synth"), "FDG")
    ((19, 20, 21), (22,))
    """
    from bids_harmonize.tracers import UnknownTracerError, get_tracer

    try:
        return _label_ids(atlas, get_tracer(str(tracer)).reference)
    except UnknownTracerError:
        return None


def target_label_ids(atlas, tracer) -> tuple[int, ...] | None:
    """Label values of the headline target region of ``tracer``'s family
    (:data:`bids_harmonize.quant.measures.SUMMARY_TARGETS`), or None.

    >>> from bids_harmonize.quant.atlases import load_atlas
    >>> target_label_ids(load_atlas("synth"), "PiB")
    (1, 2, 3, 5, 6)
    """
    from bids_harmonize.quant.measures import SUMMARY_TARGETS
    from bids_harmonize.tracers import family_of

    return _label_ids(atlas, SUMMARY_TARGETS.get(family_of(tracer)))


def _subject_labels(root, sub, t1w, atlas):
    """Atlas labels on the subject's T1w grid, or ``None`` (brain mask as the only region)
    when the participant level left no template-to-T1w transform."""
    xfms = collect_derivatives(root, subject=sub, kinds=("tpl2t1w_xfm",))
    if not xfms:
        LOGGER.warning("sub-%s: no template-to-T1w transform (*_to-T1w_mode-image_xfm.h5): "
                       "the regional losses use the brain mask as one region", sub)
        return None
    return atlas_on_t1w(t1w, xfms[0].path, atlas)


def load_pairs_from_derivatives(
    derivatives_dir,
    *,
    participant_labels=None,
    tracers=None,
    min_pairs: int = 1,
    atlas: str | None = "synth",
    atlas_labels=None,
) -> tuple[list[TrainingPair], list[tuple[str, str]]]:
    """Pairs found under a participant-level output folder.

    ``atlas`` (``None``: no labels, the regional loss uses the brain mask) gives every
    pair region labels on its T1w grid (:func:`atlas_on_t1w`).

    Returns ``(pairs, excluded)`` where ``excluded`` lists ``(what, why)``. Raises
    :class:`InsufficientDataError` when fewer than ``min_pairs`` pairs are usable.
    """
    import nibabel as nb

    root = Path(derivatives_dir)
    if not root.is_dir():
        raise InsufficientDataError(f"derivatives folder {root} does not exist")
    atlas_spec = None
    if atlas:
        from bids_harmonize.quant.atlases import load_atlas

        atlas_spec = load_atlas(atlas, labels=atlas_labels)  # read once for every subject
    wanted_subjects = {s.removeprefix("sub-") for s in participant_labels or []}
    wanted_tracers = {t.lower() for t in tracers or []}
    pairs: list[TrainingPair] = []
    excluded: list[tuple[str, str]] = []
    for sub in list_subjects(root):
        if wanted_subjects and sub not in wanted_subjects:
            continue
        found = collect_derivatives(root, subject=sub, extension=".nii.gz",
                                    kinds=("t1w_preproc", "brain_mask", "ct_preproc",
                                           "pet_preproc"))
        t1w = next((d.path for d in found if d.kind == "t1w_preproc"), None)
        mask = next((d.path for d in found if d.kind == "brain_mask"), None)
        labels_of_subject, labels_done = None, False  # made once per subject, when needed
        by_tracer: dict[str, dict[str, list]] = {}
        for pet in found:
            if pet.kind != "pet_preproc" or pet.get("space") != "T1w":
                continue
            trc = pet.get("tracer", "")
            if wanted_tracers and trc.lower() not in wanted_tracers:
                continue
            try:
                meta = pet.metadata()
            except ValueError as exc:
                excluded.append((pet.path.name, str(exc)))
                continue
            platform = meta.get("Platform")
            if platform not in PLATFORMS:
                excluded.append((pet.path.name, f"platform unknown (sidecar Platform is "
                                                f"{platform!r}, not PET-CT/PET-MR)"))
                continue
            by_tracer.setdefault(trc, {p: [] for p in PLATFORMS})[platform].append((pet, meta))
        for trc, series in sorted(by_tracer.items()):
            what = f"sub-{sub}_trc-{trc}"
            missing = [p for p in PLATFORMS if not series[p]]
            if missing:
                excluded.append((what, f"no {' and no '.join(missing)} session"))
                continue
            if t1w is None or mask is None:
                excluded.append((what, "preprocessed T1w or brain mask missing"))
                continue
            cts = [pet for pet, _ in series["PET-CT"]]
            metas = {pet.path: meta for pet, meta in series["PET-CT"] + series["PET-MR"]}
            for mr, mr_meta in series["PET-MR"]:
                label = (what if len(series["PET-MR"]) == 1
                         else f"sub-{sub}_{series_label(mr.entities)}")
                ct_pet = _match_ct(mr, cts)
                if ct_pet is None:
                    excluded.append((label, f"{len(cts)} PET-CT series of trc-{trc} and none "
                                            "with this series' acq/rec/run: cannot pair"))
                    continue
                ct = next((d.path for d in found if d.kind == "ct_preproc"
                           and d.get("session") == ct_pet.get("session")), None)
                if ct is None:
                    excluded.append((label, "no CT on the T1w grid (*_space-T1w_desc-preproc_CT)"
                                            f" in ses-{ct_pet.get('session')}"))
                    continue
                if atlas_spec is not None and not labels_done:
                    labels_of_subject = _subject_labels(root, sub, t1w, atlas_spec)
                    labels_done = True
                pairs.append(
                    TrainingPair(
                        subject=sub,
                        tracer=trc,
                        t1w=t1w,
                        ct_hu=ct,
                        pet_ct=ct_pet.path,
                        pet_mr=mr.path,
                        brain_mask=mask,
                        labels=labels_of_subject,
                        petct_model=metas[ct_pet.path].get("ManufacturersModelName", "unknown"),
                        petmr_model=mr_meta.get("ManufacturersModelName", "unknown"),
                        extra={"petct_series": series_label(ct_pet.entities),
                               "petmr_series": series_label(mr.entities),
                               **({"reference_labels": reference_label_ids(atlas_spec, trc),
                                   "target_labels": target_label_ids(atlas_spec, trc)}
                                  if atlas_spec is not None and labels_of_subject is not None
                                  else {})},
                        ac_setup=str(mr_meta.get("AttenuationCorrectionSetup") or "unknown"),
                        affine=nb.load(str(t1w)).affine,
                    )
                )
    for what, why in excluded:
        LOGGER.info("excluded %s: %s", what, why)
    if len(pairs) < min_pairs:
        reasons = "; ".join(f"{w}: {y}" for w, y in excluded) or "no PET sessions found"
        raise InsufficientDataError(
            f"found {len(pairs)} usable PET-CT/PET-MR pair(s) under {root}, "
            f"need at least {min_pairs}; excluded {len(excluded)}: {reasons}"
        )
    return pairs, excluded


def pairs_from_simulation(subject, tracers=None) -> list[TrainingPair]:
    """Training pairs of a :class:`bids_harmonize.synth.SimulatedSubject` (in memory).

    With simulator v2 the pairs carry the PET-MR scanner's mu-map (``mu_mr``) and its
    attenuation-correction setup (``sessions["petmr"].ac_setup``).
    """
    sessions = getattr(subject, "sessions", {}) or {}
    petct = sessions.get("petct")
    petmr = sessions.get("petmr")
    pairs = []
    for tracer in tracers or subject.tracers:
        pairs.append(
            TrainingPair(
                subject=subject.subject,
                tracer=tracer,
                t1w=subject.t1w,
                ct_hu=subject.ct_hu,
                pet_ct=subject.pet_ct[tracer],
                pet_mr=subject.pet_mr[tracer],
                brain_mask=subject.brain_mask,
                labels=subject.labels,
                petct_model=getattr(petct, "model", "unknown"),
                petmr_model=getattr(petmr, "model", "unknown"),
                extra={"mrac": getattr(petmr, "attenuation_correction", "unknown")},
                mu_map=getattr(subject, "mu_mr", None),
                ac_setup=getattr(petmr, "ac_setup", None) or "unknown",
            )
        )
    return pairs
