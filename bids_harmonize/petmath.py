"""PET arithmetic: uptake-window frame weights, window averaging, SUV scaling.

Pure functions on numbers and arrays; the Nipype interfaces in
``interfaces/pet.py`` move files in and out of them.

Frame selection (:func:`select_frames`) has two policies: ``strict`` (the frames must
cover at least half of the window, else :class:`FrameWindowError`) and ``nearest``
(when they do not, the window keeps its length and moves to the nearest span the frames
cover, e.g. the second scan of a same-day pair with one injection; the window actually
used is returned and recorded). Without a window (a tracer named nowhere, no
``--uptake-window``), every frame is averaged: the whole static or summed image.

Units between sessions (:func:`uptake_scaling`): SUV (g/mL) when the injected dose and
the body weight are known, the weight read where BIDS keeps it (:func:`body_weight`:
PET sidecar ``BodyWeight``, then ``sessions.tsv``, then ``participants.tsv``
``weight``); otherwise dose-normalised uptake (%ID/L, decay-corrected like the image),
never raw Bq/mL, so that two sessions with different injections compare on uptake,
not on dose.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)
WINDOW_POLICIES = ("strict", "nearest")

UNIT_TO_BQML = {"bq/ml": 1.0, "kbq/ml": 1e3, "mbq/ml": 1e6, "bqml": 1.0, "kbqml": 1e3}
DOSE_TO_BQ = {"bq": 1.0, "kbq": 1e3, "mbq": 1e6, "gbq": 1e9, "mci": 3.7e7, "ci": 3.7e10}


class FrameWindowError(ValueError):
    """The frames do not cover the requested uptake window."""


def window_weights(
    frame_starts_s, frame_durations_s, window_min: tuple[float, float], *, min_coverage=0.5
) -> np.ndarray:
    """Weight of each frame in the window average: its overlap with the window, normalised.

    >>> window_weights([0, 600, 1200, 1800], [600] * 4, (10, 30))
    array([0. , 0.5, 0.5, 0. ])
    >>> window_weights([0, 600], [600, 600], (50, 70))
    Traceback (most recent call last):
    ...
    bids_harmonize.petmath.FrameWindowError: frames cover 0.0 of 20.0 min of the window 50-70 min
    """
    starts = np.asarray(frame_starts_s, dtype=float)
    ends = starts + np.asarray(frame_durations_s, dtype=float)
    lo, hi = window_min[0] * 60.0, window_min[1] * 60.0
    overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None)
    covered = overlap.sum() / 60.0
    span = (hi - lo) / 60.0
    if covered < min_coverage * span or covered == 0:
        raise FrameWindowError(
            f"frames cover {covered:.1f} of {span:.1f} min of the window "
            f"{window_min[0]:g}-{window_min[1]:g} min"
        )
    return overlap / overlap.sum()


def frame_times_after_injection(metadata: dict) -> list[float]:
    """Frame start times (s) counted from the injection, as the uptake window is.

    BIDS gives ``FrameTimesStart`` and ``InjectionStart`` both relative to ``TimeZero``;
    when ``TimeZero`` is the scan start and the injection comes later, the frames are
    that much earlier after injection than after ``TimeZero``.

    >>> frame_times_after_injection({"FrameTimesStart": [3000, 3600], "InjectionStart": 1200})
    [1800.0, 2400.0]
    >>> frame_times_after_injection({"FrameTimesStart": [0, 600]})
    [0.0, 600.0]
    """
    injection = metadata.get("InjectionStart") or 0.0
    try:
        injection = float(injection)
    except (TypeError, ValueError, OverflowError):
        injection = 0.0
    if not math.isfinite(injection):
        injection = 0.0
    return [float(t) - injection for t in metadata["FrameTimesStart"]]


@dataclass(frozen=True)
class FrameSelection:
    """Frame weights of a window average and what was actually averaged."""

    weights: np.ndarray
    window_min: tuple[float, float] | None  # the window used (None: every frame)
    requested_min: tuple[float, float] | None
    note: str = ""

    @property
    def moved(self) -> bool:
        """True when the ``nearest`` policy moved the window."""
        return self.window_min != self.requested_min and self.requested_min is not None


def select_frames(frame_starts_s, frame_durations_s, window_min, *, policy: str = "strict",
                  min_coverage: float = 0.5) -> FrameSelection:
    """Frame weights for ``window_min`` under a policy (see the module docstring).

    >>> sel = select_frames([7800, 8400], [600, 600], (90, 110), policy="nearest")
    >>> sel.window_min, sel.weights.tolist()
    ((130.0, 150.0), [0.5, 0.5])
    >>> select_frames([0, 600], [600, 900], None).weights.tolist()
    [0.4, 0.6]
    """
    if policy not in WINDOW_POLICIES:
        raise ValueError(f"window policy {policy!r} is not one of {', '.join(WINDOW_POLICIES)}")
    starts = np.asarray(frame_starts_s, dtype=float)
    durations = np.asarray(frame_durations_s, dtype=float)
    if window_min is None:
        return FrameSelection(durations / durations.sum(), None, None,
                              "no uptake window: every frame averaged (whole static image)")
    window = (float(window_min[0]), float(window_min[1]))
    try:
        return FrameSelection(window_weights(starts, durations, window,
                                             min_coverage=min_coverage), window, window)
    except FrameWindowError:
        if policy == "strict":
            raise
    length = (window[1] - window[0]) * 60.0
    first, last = starts.min(), (starts + durations).max()
    lo = min(max(window[0] * 60.0, first), max(last - length, first))
    moved = (round(float(lo) / 60.0, 6), round(float(min(lo + length, last)) / 60.0, 6))
    weights = window_weights(starts, durations, moved, min_coverage=min_coverage)
    note = (f"frames do not cover the window {window[0]:g}-{window[1]:g} min; the nearest "
            f"span the frames cover, {moved[0]:g}-{moved[1]:g} min, was used instead")
    LOGGER.warning(note)
    return FrameSelection(weights, moved, window, note)


def actual_window(frame_starts_s, frame_durations_s, weights) -> tuple[float, float]:
    """First and last minute of the frames that contribute to the average.

    >>> actual_window([0, 600, 1200], [600] * 3, [0, 1, 0])
    (10.0, 20.0)
    """
    starts = np.asarray(frame_starts_s, dtype=float)
    ends = starts + np.asarray(frame_durations_s, dtype=float)
    used = np.asarray(weights) > 0
    return float(starts[used].min() / 60.0), float(ends[used].max() / 60.0)


def weighted_frame_average(frames: np.ndarray, weights) -> np.ndarray:
    """Average a 4-D series (x, y, z, t) with frame weights summing to one.

    >>> float(weighted_frame_average(np.stack([np.ones((2, 2, 2)), 3 * np.ones((2, 2, 2))], -1),
    ...                              [0.5, 0.5])[0, 0, 0])
    2.0
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 3:
        return frames.astype(np.float32)
    return np.tensordot(frames, np.asarray(weights, dtype=np.float64), axes=([3], [0])).astype(
        np.float32
    )


def suv_factor(metadata: dict) -> float | None:
    """Factor turning the image's units into SUV (g/mL), or None when dose or weight is unknown.

    SUV = concentration [Bq/mL] * body weight [g] / injected activity [Bq], with the
    sidecar's ``BodyWeight`` (see :func:`body_weight` for the BIDS tables and
    :func:`uptake_scaling` for the dose-normalised fallback); the dose as in
    :func:`injected_bq`.

    >>> suv_factor({"Units": "Bq/mL", "InjectedRadioactivity": 370,
    ...             "InjectedRadioactivityUnits": "MBq", "BodyWeight": 74})
    0.0002
    >>> suv_factor({"Units": "Bq/mL"}) is None
    True
    """
    weight = weight_kg(metadata.get("BodyWeight"))
    if weight is None:
        return None
    factor, units, _ = uptake_scaling(metadata, weight)
    return factor if units == "g/mL" else None


def weight_kg(value) -> float | None:
    """A plausible body weight in kg from a sidecar/TSV value, else None.

    >>> weight_kg("72.5"), weight_kg("n/a"), weight_kg(0), weight_kg(float("nan"))
    (72.5, None, None, None)
    """
    if isinstance(value, bool):
        return None
    try:
        kg = float(value)
    except (TypeError, ValueError):
        return None
    return kg if math.isfinite(kg) and 1.0 <= kg <= 500.0 else None


def _tsv_row(path: Path, column: str, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if (row.get(column) or "").strip() == key:
                    return row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        LOGGER.warning("%s: cannot read it for the body weight (%s)", path, exc)
    return None


def body_weight(bids_dir, subject: str, session: str | None,
                metadata: dict | None) -> tuple[float | None, str]:
    """Body weight (kg) and where it came from: the PET sidecar's ``BodyWeight``, then the
    subject's ``sessions.tsv`` ``weight`` for the session, then ``participants.tsv``
    ``weight``; ``(None, "none")`` when none has a plausible value (1-500 kg).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "participants.tsv").write_text("participant_id\\tweight\\nsub-01\\t70\\n")
    >>> body_weight(root, "01", "petmr", {})
    (70.0, 'participants.tsv')
    >>> body_weight(root, "01", "petmr", {"BodyWeight": 68})
    (68.0, 'sidecar BodyWeight')
    """
    kg = weight_kg((metadata or {}).get("BodyWeight"))
    if kg is not None:
        return kg, "sidecar BodyWeight"
    root = Path(bids_dir)
    if session:
        row = _tsv_row(root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv", "session_id",
                       f"ses-{session}")
        kg = weight_kg((row or {}).get("weight"))
        if kg is not None:
            return kg, "sessions.tsv"
    row = _tsv_row(root / "participants.tsv", "participant_id", f"sub-{subject}")
    kg = weight_kg((row or {}).get("weight"))
    if kg is not None:
        return kg, "participants.tsv"
    return None, "none"


def injected_bq(metadata: dict) -> float | None:
    """Injected activity in Bq at the image's decay-correction time, or None when unknown.

    The image is assumed decay-corrected to injection (``ImageDecayCorrected``); when it is
    corrected to another time (``ImageDecayCorrectionTime``, s after injection) the dose
    is decayed to that time with ``_HalfLifeSeconds``.

    >>> injected_bq({"InjectedRadioactivity": 370, "InjectedRadioactivityUnits": "MBq"})
    370000000.0
    """
    try:
        dose = float(metadata["InjectedRadioactivity"])
    except (KeyError, TypeError, ValueError):
        return None
    dose_units = str(metadata.get("InjectedRadioactivityUnits", "MBq")).lower()
    if not math.isfinite(dose) or dose <= 0 or dose_units not in DOSE_TO_BQ:
        return None
    dose_bq = dose * DOSE_TO_BQ[dose_units]
    half_life_s = metadata.get("_HalfLifeSeconds")
    correction_time = metadata.get("ImageDecayCorrectionTime", 0) or 0
    if half_life_s and correction_time:
        dose_bq *= 0.5 ** (float(correction_time) / float(half_life_s))
    return dose_bq


def uptake_scaling(metadata: dict, weight_kg: float | None = None
                   ) -> tuple[float | None, str, str]:
    """``(factor, units, how)``: what turns the image into units comparable between sessions.

    SUV (``g/mL``) with dose and weight; dose-normalised uptake (``%ID/L``: percent of the
    injected dose per litre, the dose decay-corrected like the image) with the dose only;
    ``(None, <image units>, ...)`` when the dose or the image's units are unknown.

    >>> meta = {"Units": "Bq/mL", "InjectedRadioactivity": 370,
    ...         "InjectedRadioactivityUnits": "MBq"}
    >>> uptake_scaling(meta, 74)[:2]
    (0.0002, 'g/mL')
    >>> f, units, how = uptake_scaling(meta)
    >>> round(10_000 * f, 4), units  # 10 kBq/mL after 370 MBq: 2.7 % of the dose per litre
    (2.7027, '%ID/L')
    """
    units = str(metadata.get("Units", "Bq/mL")).lower().replace(" ", "")
    dose_bq = injected_bq(metadata)
    if units not in UNIT_TO_BQML or dose_bq is None:
        return None, str(metadata.get("Units", "Bq/mL")), (
            "image units kept: injected dose or image units unknown (not comparable "
            "between sessions with different injections)")
    if weight_kg is not None:
        factor = round(UNIT_TO_BQML[units] * weight_kg * 1000.0 / dose_bq, 12)
        return factor, "g/mL", "SUV: concentration x body weight / injected dose"
    factor = UNIT_TO_BQML[units] * 1000.0 * 100.0 / dose_bq
    return factor, "%ID/L", ("dose-normalised uptake: concentration / injected dose "
                             "(decay-corrected), no body weight found")
