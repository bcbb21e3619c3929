"""Out-of-distribution (OOD) score of one harmonization: pure functions.

Three parts, each in ``[0, 1]`` (0: like the training data, 1: clearly outside it):

``metadata``
    Support of the session's metadata in the model card: the PET-MR attenuation-correction
    setup (``training_data.ac_setups``), the scanner model (``training_data.petmr_models``)
    and the tracer family (``training_data.tracer_families``). A setup the model never saw
    scores 1 (the correction learnt for one attenuation map is wrong for another, issue
    13: 1.4 % -> 7.0 % regional bias on an unseen setup); a setup that cannot be inferred
    scores ``UNKNOWN_SETUP``; an unseen scanner or tracer family ``UNSEEN_SCANNER`` /
    ``UNSEEN_FAMILY``.
``feature``
    Distance of the image's feature vector (:func:`image_features`) to the training
    features, in units of the training spread (diagonal Mahalanobis, root mean square of
    z-scores), relative to the largest leave-one-out distance among the training images
    (:func:`feature_statistics`, stored in the card at training time; at least
    ``MIN_REFERENCE_DISTANCE``): 0 up to that distance, 1 at ``SATURATION`` times it.
``disagreement``
    Median over the brain of the ensemble's per-voxel SD of the log ratio, relative to the
    same figure on the training images (card): 0 up to it, 1 at ``SATURATION`` times it.

The score is a noisy-OR, ``1 - prod(1 - part)``: any one part near 1 makes the case OOD,
and weak evidence from several parts adds up. A case is OOD at ``score >= threshold``
(default ``DEFAULT_THRESHOLD``). The thresholds here are this project's design choices,
chosen on the simulator (see ``benchmarks/accuracy``), not published constants.

>>> card = {"training_data": {"ac_setups": ["dixon-nobone"], "petmr_models": ["Biograph mMR"],
...                           "tracer_families": ["amyloid"]}}
>>> part, reasons = metadata_support(card, setup="dixon-nobone", scanner="Biograph mMR",
...                                  tracer_family="amyloid")
>>> part, reasons
(0.0, [])
>>> part, reasons = metadata_support(card, setup="atlas", scanner="Biograph mMR",
...                                  tracer_family="amyloid")
>>> part, reasons[0]
(1.0, "attenuation-correction setup 'atlas' is not among the model's (dixon-nobone)")
>>> result = assess({"metadata": part, "feature": 0.0, "disagreement": 0.1}, policy="warn")
>>> result.decision, result.score
('warn', 1.0)
>>> assess({"metadata": 0.0, "feature": 0.0, "disagreement": 0.1}, policy="fail").decision
'apply'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

LOGGER = logging.getLogger(__name__)

POLICIES = ("warn", "passthrough", "fail")  #: ``--ood-policy`` choices; ``warn`` is the default
DEFAULT_POLICY = "warn"
DEFAULT_THRESHOLD = 0.5  #: score at or above which a case is out of distribution
UNKNOWN_SETUP = 0.5  #: metadata part when the attenuation-correction setup is not known
UNSEEN_SCANNER = 0.3  #: metadata part for a PET-MR scanner model absent from the card
UNSEEN_FAMILY = 0.3  #: metadata part for a tracer family absent from the card
SATURATION = 3.0  #: feature/disagreement parts reach 1 at this multiple of the training level
#: Floor of a feature's training SD (log units, about 5 %): simulated training sets are so
#: alike that their spread can be far below what two runs of the same subject differ by (a
#: brain mask from a non-repeatable multi-threaded registration moved the brain-SD features
#: by several hundredths and flipped the feature part of one demo image from 0.0 to 1.0).
FEATURE_SD_FLOOR = 0.05
#: Smallest reference distance (RMS of z-scores) the feature part is measured against: the
#: largest leave-one-out distance of a small, homogeneous simulated training set can be
#: well under 1, which would call an image 1 SD from the training mean OOD.
MIN_REFERENCE_DISTANCE = 2.0
COMPONENTS = ("metadata", "feature", "disagreement")


class OODFailure(RuntimeError):
    """An out-of-distribution case under ``--ood-policy fail``."""


@dataclass(frozen=True)
class OODResult:
    """Score, parts and decision for one image.

    ``decision`` is ``apply`` (in distribution), ``warn`` (OOD, correction applied),
    ``passthrough`` (OOD, the input is written unchanged) or ``fail`` (OOD, no output).
    """

    score: float
    components: dict
    decision: str
    threshold: float
    policy: str
    reasons: list = field(default_factory=list)

    @property
    def is_ood(self) -> bool:
        return self.score >= self.threshold

    def sidecar(self) -> dict:
        """Fields for the harmonized PET's sidecar."""
        return {
            "OODDecision": self.decision,
            "OODScore": round(float(self.score), 4),
            "OODComponents": {k: round(float(v), 4) for k, v in self.components.items()},
            "OODThreshold": self.threshold,
            "OODPolicy": self.policy,
            "OODReasons": list(self.reasons),
        }


def metadata_support(card: dict, *, setup: str | None, scanner: str | None,
                     tracer_family: str | None) -> tuple[float, list[str]]:
    """Metadata part and its reasons: is this session's set-up one the model was trained on?

    A card without an ``ac_setups`` list, or with only ``unknown`` in it (a model from
    before attenuation-correction setups were recorded, or trained on data without them),
    gives :data:`UNKNOWN_SETUP` for the setup check.

    >>> metadata_support({"training_data": {}}, setup=None, scanner=None, tracer_family=None)[0]
    0.5
    >>> card = {"training_data": {"ac_setups": ["zte"], "petmr_models": ["SIGNA PET/MR"],
    ...                           "tracer_families": ["fdg"]}}
    >>> part, why = metadata_support(card, setup="zte", scanner="uPMR 790", tracer_family="tau")
    >>> round(part, 2), len(why)
    (0.51, 2)
    """
    data = card.get("training_data", {}) or {}
    setups = [s for s in data.get("ac_setups", []) or [] if s and s != "unknown"]
    models = list(data.get("petmr_models", []) or [])
    families = list(data.get("tracer_families", []) or [])
    parts, reasons = [], []
    if not setups:
        parts.append(UNKNOWN_SETUP)
        reasons.append("the model card lists no attenuation-correction setups")
    elif setup is None:
        parts.append(UNKNOWN_SETUP)
        reasons.append("the attenuation-correction setup of this PET could not be inferred")
    elif setup not in setups:
        parts.append(1.0)
        reasons.append(f"attenuation-correction setup {setup!r} is not among the model's "
                       f"({', '.join(setups)})")
    if scanner and models and "unknown" not in models and scanner not in models:
        parts.append(UNSEEN_SCANNER)
        reasons.append(f"scanner {scanner!r} is not among the model's ({', '.join(models)})")
    if tracer_family and families and tracer_family not in families:
        parts.append(UNSEEN_FAMILY)
        reasons.append(f"tracer family {tracer_family!r} is not among the model's "
                       f"({', '.join(families)})")
    return combine(parts), reasons


def combine(parts) -> float:
    """Noisy-OR of parts in ``[0, 1]``.

    >>> combine([]), combine([0.5, 0.5]), combine([1.0, 0.2])
    (0.0, 0.75, 1.0)
    """
    out = 1.0
    for p in parts:
        out *= 1.0 - float(np.clip(p, 0.0, 1.0))
    return float(1.0 - out)


def _ramp(ratio: float) -> float:
    """0 up to 1, linear to 1 at :data:`SATURATION`.

    >>> _ramp(0.5), _ramp(2.0), _ramp(10.0)
    (0.0, 0.5, 1.0)
    """
    if not np.isfinite(ratio):
        return 1.0
    return float(np.clip((ratio - 1.0) / (SATURATION - 1.0), 0.0, 1.0))


def image_features(channels, mask) -> np.ndarray:
    """Feature vector of one image: robust brain centre and spread of each channel, in the
    log domain.

    ``channels`` is a sequence of 3-D arrays the net sees (normalised PET, T1w, ...) or a
    ``(C, ...)`` array; the token features of the anatomy encoder can be appended by the
    caller. Log of positive values keeps multiplicative differences symmetric. Centre =
    median, spread = interquartile range / 1.349 (the SD for a normal distribution): both
    move little when the brain mask gains or loses a rim of voxels at its edge, where a
    mean and SD would.

    >>> img = np.ones((4, 4, 4)); mask = np.ones((4, 4, 4), bool)
    >>> image_features([img, 2 * img], mask).round(3).tolist()
    [0.0, 0.0, 0.693, 0.0]
    """
    mask = np.asarray(mask) > 0.5
    if not mask.any():
        raise ValueError("brain mask is empty")
    out = []
    for channel in channels:
        values = np.log(np.clip(np.asarray(channel, dtype=np.float64)[mask], 1e-3, None))
        q25, q50, q75 = np.percentile(values, (25, 50, 75))
        out += [q50, (q75 - q25) / 1.349]
    return np.asarray(out, dtype=np.float64)


def _distance(stats: dict, vector) -> float:
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != mean.shape:
        raise ValueError(f"feature vector of length {vector.size}, the card has {mean.size}")
    z = (vector - mean) / std
    return float(np.sqrt(np.mean(z**2)))


def feature_statistics(features) -> dict:
    """Training feature statistics for the card: per-feature mean and SD, and the reference
    distance (the largest leave-one-out distance of a training image to the others).

    The SD has a floor of :data:`FEATURE_SD_FLOOR` plus 5 % of the feature's range, so
    that a (nearly) constant feature does not make every new image far away.

    >>> rng = np.random.default_rng(0)
    >>> stats = feature_statistics(rng.normal(size=(8, 3)))
    >>> sorted(stats), stats["n"]
    (['mean', 'n', 'reference_distance', 'std'], 8)
    >>> feature_part(stats, stats["mean"])
    0.0
    >>> feature_part(stats, np.asarray(stats["mean"]) + 100.0)
    1.0
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError("feature statistics need at least two training images")

    def _stats(rows):
        spread = np.ptp(rows, axis=0)
        return {"mean": rows.mean(axis=0),
                "std": np.maximum(rows.std(axis=0, ddof=1) if len(rows) > 1 else spread,
                                  0.05 * spread + FEATURE_SD_FLOOR)}

    loo = []
    for i in range(features.shape[0]):
        rest = np.delete(features, i, axis=0)
        if len(rest) < 2:
            rest = features
        loo.append(_distance(_stats(rest), features[i]))
    full = _stats(features)
    return {"n": int(features.shape[0]), "mean": full["mean"].round(6).tolist(),
            "std": full["std"].round(6).tolist(),
            "reference_distance": round(float(max(max(loo), 1e-6)), 6)}


def feature_part(stats: dict | None, vector) -> float:
    """Feature part: distance over the training reference distance (at least
    :data:`MIN_REFERENCE_DISTANCE`), through the ramp.

    Without statistics in the card (an older model) the part is 0 and says nothing.
    """
    if not stats:
        return 0.0
    reference = max(float(stats["reference_distance"]), MIN_REFERENCE_DISTANCE)
    return _ramp(_distance(stats, vector) / reference)


def disagreement_part(sd_map, mask, reference: float | None) -> tuple[float, float]:
    """Disagreement part and the raw figure (median ensemble SD of ``r`` in the brain).

    >>> sd = np.full((4, 4, 4), 0.02); mask = np.ones((4, 4, 4))
    >>> disagreement_part(sd, mask, 0.01)
    (0.5, 0.02)
    >>> disagreement_part(sd, mask, None)
    (0.0, 0.02)
    """
    mask = np.asarray(mask) > 0.5
    value = float(np.median(np.asarray(sd_map, dtype=np.float64)[mask])) if mask.any() else 0.0
    if not reference or reference <= 0:
        return 0.0, round(value, 6)
    return _ramp(value / reference), round(value, 6)


def assess(components: dict, *, policy: str = DEFAULT_POLICY,
           threshold: float = DEFAULT_THRESHOLD, reasons=()) -> OODResult:
    """Combine the parts and decide under ``policy`` (``warn``, ``passthrough``, ``fail``).

    In distribution the decision is ``apply`` whatever the policy. Raising on ``fail`` is
    the caller's job (:func:`enforce`), so that the decision can be logged first.

    >>> assess({"metadata": 0.5, "feature": 0.0, "disagreement": 0.0},
    ...        policy="passthrough").decision
    'passthrough'
    >>> assess({"metadata": 0.2}, policy="bogus")
    Traceback (most recent call last):
    ...
    ValueError: OOD policy must be one of warn, passthrough, fail, not 'bogus'
    """
    if policy not in POLICIES:
        raise ValueError(f"OOD policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    parts = {k: float(np.clip(components.get(k, 0.0), 0.0, 1.0)) for k in COMPONENTS}
    score = combine(parts.values())
    decision = policy if score >= threshold else "apply"
    return OODResult(score=round(score, 6), components=parts, decision=decision,
                     threshold=float(threshold), policy=policy, reasons=list(reasons))


def enforce(result: OODResult, name: str) -> None:
    """Log the decision; raise :class:`OODFailure` (one line) under the ``fail`` policy."""
    if result.decision == "apply":
        LOGGER.info("%s: in distribution (OOD score %.2f)", name, result.score)
        return
    why = "; ".join(result.reasons) or "feature distance / ensemble disagreement"
    line = (f"{name}: out of distribution for the harmonization model (score "
            f"{result.score:.2f} >= {result.threshold:.2f}: {why})")
    if result.decision == "fail":
        raise OODFailure(line + "; --ood-policy fail")
    if result.decision == "passthrough":
        LOGGER.warning("%s; --ood-policy passthrough: the input is written unchanged", line)
    else:
        LOGGER.warning("%s; --ood-policy warn: the correction is applied, check the results",
                       line)
