"""Do-no-harm guard: apply the learned correction only as far as held-out pairs show it helps.

The harmonizer's correction ``r`` (a log ratio, ``harmonized = PET-MR * exp(r)``) is
shrunk voxel by voxel towards no correction, in proportion to how uncertain it is:

    r_applied = w * r,    w = r^2 / (r^2 + k * s^2)

where ``s`` is the calibrated ensemble SD of ``r`` in that voxel
(:mod:`.uncertainty`) and ``k >= 0`` sets how sure the correction has to be: ``k = 0``
applies it in full (the model as trained), ``k = inf`` not at all (the PET-MR as
acquired). A correction much larger than its SD is kept; one within its SD is mostly
removed. This is the posterior-mean shrinkage of an estimate ``r ~ N(t, s^2)`` of a true
correction ``t`` with a prior scale ``|t| ~ |r| / sqrt(k)``: the James-Stein form, with its
strength chosen on data instead of assumed.

``k`` is chosen **per attenuation-correction setup on held-out pairs** (paired PET-CT
subjects not used for training: ``train --calibration-subjects``, or a site's own pairs
with ``train --calibrate-only``): for every ``k`` of :data:`K_GRID` the guarded images of
the held-out pairs are compared with their PET-CT (:func:`pair_errors`): the mean
absolute error of the regional log SUVR with the tracer's reference region (what users
read), and the error of the family's headline target (the Centiloid cortex for amyloid:
:data:`bids_harmonize.quant.measures.SUMMARY_TARGETS`). Among the ``k`` that leave the
target no further from PET-CT than as acquired, the one with the smallest regional error
wins (:func:`choose_k`; ties go to the larger ``k``, the more cautious). ``k = inf`` is always
a candidate, so on the held-out pairs the guarded model is never worse than the PET-MR as
acquired; on a new subject this holds as far as the held-out pairs represent it (the
closing notes and ``benchmarks/README.md`` measure it on test subjects).

Why per setup: the medium consortium benchmark (issue 20) showed the same model improving
Dixon-without-bone subjects (mean |dCL| 2.5 -> 1.1) while adding a spurious +14 % to the
inferior cerebellar grey of head-atlas subjects (1.3 -> 4.5 CL); no single ``k`` helps
both (its sweep is in ``benchmarks/README.md``). Setups with fewer than
:data:`MIN_SETUP_PAIRS` held-out pairs, and setups never held out, use the ``k`` chosen on
all held-out pairs pooled.

>>> import numpy as np
>>> r, s = np.array([0.3, 0.05, 0.0]), np.array([0.1, 0.1, 0.1])
>>> shrink_weight(r, s, 1.0).astype(float).round(3).tolist()
[0.9, 0.2, 0.0]
>>> shrink_weight(r, s, 0.0).tolist(), shrink_weight(r, s, float("inf")).tolist()
([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

LOGGER = logging.getLogger(__name__)

#: candidate strengths: 0 (correction in full) ... inf (no correction); a design grid,
#: log-spaced around 1 (the correction kept in proportion to its squared z-score)
K_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)
#: held-out pairs a setup needs for its own ``k``; fewer: the pooled ``k`` (a design value:
#: one pair is one subject's noise)
MIN_SETUP_PAIRS = 2
POOLED = "pooled"
METRIC = ("mean absolute error, against PET-CT, of the regional log SUVR with the tracer's "
          "reference region (the brain where the atlas lacks it; atlas regions on the T1w "
          "grid), over the held-out pairs; only strengths whose error of the family's "
          "headline target (log SUVR of e.g. the Centiloid cortex) is no larger than as "
          "acquired are candidates")


def k_to_json(k: float):
    """``k`` as the card stores it (``"inf"`` for no correction).

    >>> k_to_json(0.5), k_to_json(float("inf"))
    (0.5, 'inf')
    """
    return "inf" if math.isinf(float(k)) else float(k)


def k_from_json(value) -> float:
    """Inverse of :func:`k_to_json`; a usable error for anything else.

    >>> k_from_json("inf"), k_from_json(2)
    (inf, 2.0)
    """
    if isinstance(value, str) and value.strip().lower() == "inf":
        return math.inf
    k = float(value)
    if not k >= 0.0:
        raise ValueError(f"guard strength k must be >= 0 or 'inf', not {value!r}")
    return k


def shrink_weight(r, sd, k: float) -> np.ndarray:
    """Weight ``w = r^2 / (r^2 + k sd^2)`` in [0, 1] of the correction (1 where both are 0)."""
    r = np.asarray(r, dtype=np.float64)
    if k == 0.0:
        return np.ones(r.shape, dtype=np.float32)
    if math.isinf(k):
        return np.zeros(r.shape, dtype=np.float32)
    r2 = r * r
    den = r2 + float(k) * np.square(np.asarray(sd, dtype=np.float64))
    w = np.divide(r2, den, out=np.ones_like(r2), where=den > 0)
    return w.astype(np.float32)


def guard_log_ratios(member_log_ratios, sd, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Guarded log ratios of an ensemble ``(M, ...)`` (member 0 = the model's own net).

    Member 0 becomes ``w * r_0``; every member keeps its offset from member 0
    (``w * r_0 + r_m - r_0``), so the ensemble's spread, and the uncertainty calibrated on
    it, stays what it was around the applied correction. Returns ``(guarded, w)``.

    >>> r = np.array([[0.2, 0.0], [0.3, 0.1]])
    >>> g, w = guard_log_ratios(r, np.array([0.2, 0.2]), 1.0)
    >>> g.astype(float).round(3).tolist(), w.astype(float).round(3).tolist()
    ([[0.1, 0.0], [0.2, 0.1]], [0.5, 0.0])
    """
    stack = np.asarray(member_log_ratios, dtype=np.float32)
    w = shrink_weight(stack[0], sd, k)
    applied = w * stack[0]
    return (applied[None] + (stack - stack[0][None])).astype(np.float32), w


def regional_log_means(image, labels, mask, reference_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Labels present and ``log(mean_region / mean_reference)`` of ``image``: a log SUVR.

    The reference is the whole brain (a global scale cancels), or the region of the labels
    ``reference_ids`` (the tracer's reference region: the SUVR users read), whose labels
    are then left out of the regions; the whole brain when ``labels`` lacks them.

    >>> img = np.array([[1.0, 1.0], [2.0, 2.0]]); lab = np.array([[1, 1], [2, 2]])
    >>> ids, values = regional_log_means(img, lab, np.ones((2, 2)))
    >>> ids.tolist(), values.round(3).tolist()
    ([1, 2], [-0.405, 0.288])
    >>> img = np.array([[1.0, 2.0], [4.0, 4.0]]); lab = np.array([[1, 2], [3, 3]])
    >>> ids, v = regional_log_means(img, lab, np.ones((2, 2)), reference_ids=(1,))
    >>> ids.tolist(), v.round(3).tolist()
    ([2, 3], [0.693, 1.386])
    """
    image = np.asarray(image, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    brain = np.asarray(mask) > 0.5
    in_reference = brain & np.isin(labels, list(reference_ids or ()))
    ids = np.unique(labels[brain & (labels > 0) & ~in_reference])
    ref = image[in_reference if in_reference.any() else brain].mean()
    means = np.array([image[(labels == i) & brain].mean() for i in ids])
    return ids, np.log(np.clip(means, 1e-12, None) / ref)


def pair_errors(pet_mr, pet_ct, member_log_ratios, sd, labels, mask, grid=K_GRID,
                reference_ids=None, target_ids=None) -> tuple[dict, dict | None]:
    """Selection metrics of one held-out pair for every ``k``: the mean absolute regional
    log SUVR error (:func:`regional_log_means` with the tracer's reference
    region) of the guarded image against PET-CT, and the absolute log SUVR error of the tracer's summary
    target (label values ``target_ids``, e.g. the Centiloid cortical composite; None
    without them).

    >>> pet = np.ones((4, 4)); lab = np.array([[1, 1, 2, 2]] * 4); ct = pet * (1 + (lab == 2))
    >>> r = np.log(ct / pet)[None]  # a perfect correction, ensemble of one
    >>> e, t = pair_errors(pet, ct, r, np.zeros((4, 4)), lab, np.ones((4, 4)),
    ...                    (0.0, float("inf")), reference_ids=(1,), target_ids=(2,))
    >>> round(e[0.0], 6), round(e[float("inf")], 3), round(t[float("inf")], 3)
    (0.0, 0.693, 0.693)
    """
    pet_mr = np.asarray(pet_mr, dtype=np.float64)
    labels = np.asarray(labels)
    brain = np.asarray(mask) > 0.5
    in_target = brain & np.isin(labels, list(target_ids or ()))
    in_reference = brain & np.isin(labels, list(reference_ids or ()))
    in_reference = in_reference if in_reference.any() else brain

    def target_log_suvr(image):
        image = np.asarray(image, dtype=np.float64)
        return float(np.log(max(image[in_target].mean(), 1e-12)
                            / max(image[in_reference].mean(), 1e-12)))

    _, reference = regional_log_means(pet_ct, labels, mask, reference_ids)
    ct_target = target_log_suvr(pet_ct) if in_target.any() else None
    r0 = np.asarray(member_log_ratios, dtype=np.float64)[0]
    regional, target = {}, {}
    for k in grid:
        image = pet_mr * np.exp(shrink_weight(r0, sd, k) * r0)
        _, values = regional_log_means(image, labels, mask, reference_ids)
        regional[float(k)] = float(np.mean(np.abs(values - reference)))
        if ct_target is not None:
            target[float(k)] = abs(target_log_suvr(image) - ct_target)
    return regional, (target or None)


def choose_k(errors_by_k: dict, summary_by_k: dict | None = None) -> float:
    """The ``k`` with the smallest mean regional error among those whose mean summary error
    (the tracer's summary target, e.g. the Centiloid cortex) is no larger than as acquired
    (``k = inf``, always allowed); ties (within 1e-9) go to the larger ``k``.

    >>> choose_k({0.0: [0.02, 0.03], 1.0: [0.01, 0.02], float("inf"): [0.03, 0.03]})
    1.0
    >>> choose_k({0.0: [0.02], float("inf"): [0.02]})
    inf
    >>> choose_k({0.0: [0.01], 1.0: [0.02], float("inf"): [0.03]},
    ...          {0.0: [0.05], 1.0: [0.01], float("inf"): [0.02]})  # k=0 harms the summary
    1.0
    """
    means = {float(k): float(np.mean(v)) for k, v in errors_by_k.items() if len(v)}
    if not means:
        raise ValueError("no held-out errors to choose the guard's strength from")
    if summary_by_k:
        summary = {float(k): float(np.mean(v)) for k, v in summary_by_k.items() if len(v)}
        limit = summary.get(math.inf)
        if limit is not None and np.isfinite(limit):
            means = {k: m for k, m in means.items()
                     if k == math.inf or summary.get(k, np.inf) <= limit + 1e-9}
    best = min(means.values())
    return max(k for k, m in means.items() if m <= best + 1e-9)


def _summary(errors_by_k: dict, n_pairs: int, subjects, summary_by_k: dict | None = None) -> dict:
    k = choose_k(errors_by_k, summary_by_k)
    means = {float(g): float(np.mean(v)) for g, v in errors_by_k.items()}
    out = {
        "k": k_to_json(k),
        "n_pairs": int(n_pairs),
        "subjects": sorted(set(subjects)),
        "error_by_k": {str(k_to_json(g)): round(m, 6) for g, m in sorted(means.items())},
        "error_as_acquired": round(means[math.inf], 6),
        "error_full_correction": round(means[0.0], 6),
        "error_guarded": round(means[k], 6),
    }
    if summary_by_k:
        sm = {float(g): float(np.mean(v)) for g, v in summary_by_k.items()}
        out.update({
            "summary_error_by_k": {str(k_to_json(g)): round(m, 6) for g, m in sorted(sm.items())},
            "summary_error_as_acquired": round(sm[math.inf], 6),
            "summary_error_full_correction": round(sm[0.0], 6),
            "summary_error_guarded": round(sm[k], 6),
        })
    return out


def fit_guard(records, grid=K_GRID) -> dict:
    """The card's ``guard`` block from held-out ``records``:
    ``(setup, tracer_family, subject, errors[, summary_errors])``, the :func:`pair_errors`
    of one pair (``summary_errors`` None where the tracer has no summary target; a group
    is held to the summary constraint of :func:`choose_k` when all its pairs have one).
    Strengths are chosen for every setup and tracer family, every setup, and all
    pairs pooled; a group with fewer than :data:`MIN_SETUP_PAIRS` pairs gets none (the next
    coarser one applies).

    >>> recs = [("zte", "fdg", "01", {0.0: 0.01, float("inf"): 0.03}, None),
    ...         ("zte", "amyloid", "02", {0.0: 0.02, float("inf"): 0.03}, None),
    ...         ("atlas", "fdg", "03", {0.0: 0.04, float("inf"): 0.02}, None)]
    >>> block = fit_guard(recs, grid=(0.0, float("inf")))
    >>> block["by_setup"]["zte"]["k"], block["pooled"]["k"], "atlas" in block["by_setup"]
    (0.0, 0.0, False)
    >>> block["by_setup_family"]
    {}
    """
    records = list(records)
    if not records:
        raise ValueError("the guard needs at least one held-out pair")
    grid = tuple(float(g) for g in grid)
    if 0.0 not in grid or math.inf not in grid:
        raise ValueError("the guard's grid must hold 0 (full correction) and inf (none)")

    def summary(rows):
        with_target = [r for r in rows if len(r) > 4 and r[4]]
        targets = ({g: [r[4][g] for r in with_target] for g in grid}
                   if len(with_target) == len(rows) else None)
        return _summary({g: [r[3][g] for r in rows] for g in grid}, len(rows),
                        [r[2] for r in rows], targets)

    block = {
        "method": "voxel-wise shrinkage of the correction, w = r^2 / (r^2 + k s^2) with s the "
                  "calibrated ensemble SD; k per attenuation-correction setup and tracer "
                  "family, chosen on held-out pairs (bids_harmonize.harmonizer.guard)",
        "metric": METRIC,
        "grid": [k_to_json(g) for g in grid],
        "min_setup_pairs": MIN_SETUP_PAIRS,
        "pooled": summary(records),
        "by_setup": {},
        "by_setup_family": {},
    }
    groups = {
        "by_setup": lambda r: r[0],
        "by_setup_family": lambda r: f"{r[0]}/{r[1]}",
    }
    for name, key in groups.items():
        for value in sorted({key(r) for r in records}):
            rows = [r for r in records if key(r) == value]
            if len(rows) >= MIN_SETUP_PAIRS:
                block[name][value] = summary(rows)
            else:
                LOGGER.info("guard: %d held-out pair(s) of %s, fewer than %d: the coarser "
                            "strength applies", len(rows), value, MIN_SETUP_PAIRS)
    return block


@dataclass(frozen=True)
class GuardChoice:
    """The guard strength for one PET-MR: ``k``, and where it comes from."""

    k: float
    source: str  #: ``"setup <name>"`` or ``"pooled"``
    entry: dict

    def describe(self, weight_median: float | None = None) -> str:
        e = self.entry
        held = (f"{e.get('n_pairs', '?')} held-out pair(s) of "
                + ("all setups" if self.source == POOLED else self.source))
        errors = (f"mean regional error {100 * float(e.get('error_as_acquired', float('nan'))):.1f} % "
                  f"as acquired, {100 * float(e.get('error_full_correction', float('nan'))):.1f} % "
                  f"with the full correction, {100 * float(e.get('error_guarded', float('nan'))):.1f} % "
                  "guarded")
        if math.isinf(self.k):
            return (f"correction guard: on {held} the correction did not help ({errors}): "
                    "the PET-MR is left as acquired")
        kept = "" if weight_median is None else f", median weight {weight_median:.2f} in the brain"
        return f"correction guard: k = {self.k:g} from {held} ({errors}){kept}"

    def sidecar(self, weight_median: float | None = None) -> dict:
        return {
            "K": k_to_json(self.k),
            "Source": self.source,
            "HeldOutPairs": self.entry.get("n_pairs"),
            "MedianWeightInBrain": None if weight_median is None else round(float(weight_median), 4),
            "ErrorAsAcquired": self.entry.get("error_as_acquired"),
            "ErrorFullCorrection": self.entry.get("error_full_correction"),
            "ErrorGuarded": self.entry.get("error_guarded"),
            "TargetErrorAsAcquired": self.entry.get("summary_error_as_acquired"),
            "TargetErrorGuarded": self.entry.get("summary_error_guarded"),
            "Description": "the correction is shrunk voxel by voxel, w = r^2 / (r^2 + K s^2) "
                           "(s: calibrated ensemble SD); K chosen on held-out paired subjects "
                           "(model card 'guard'); errors are mean absolute regional log SUVR "
                           "errors against PET-CT on those subjects",
        }


def guard_for(card: dict, setup: str | None, family: str | None = None) -> GuardChoice | None:
    """The guard of a model card for a PET-MR of ``setup`` and tracer ``family``: the
    strength chosen for that setup and family, else for the setup, else pooled (None: the
    card has no guard, the correction is applied as trained).

    >>> card = {"guard": {"pooled": {"k": 1.0, "n_pairs": 3},
    ...                   "by_setup": {"atlas": {"k": "inf", "n_pairs": 2}},
    ...                   "by_setup_family": {"atlas/fdg": {"k": 0.5, "n_pairs": 2}}}}
    >>> guard_for(card, "atlas").k, guard_for(card, "atlas", "fdg").k, guard_for(card, "atlas", "tau").k
    (inf, 0.5, inf)
    >>> guard_for(card, "zte").source, guard_for({}, "zte")
    ('pooled', None)
    """
    block = card.get("guard") or {}
    if not block:
        return None
    candidates = []
    if setup and family:
        candidates.append(("by_setup_family", f"{setup}/{family}",
                           f"setup {setup}, tracer family {family}"))
    if setup:
        candidates.append(("by_setup", str(setup), f"setup {setup}"))
    for group, key, source in candidates:
        entry = (block.get(group) or {}).get(key)
        if entry is not None:
            return GuardChoice(k_from_json(entry["k"]), source, dict(entry))
    pooled = block.get(POOLED)
    if not pooled:
        return None
    return GuardChoice(k_from_json(pooled["k"]), POOLED, dict(pooled))
