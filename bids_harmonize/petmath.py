"""PET arithmetic: uptake-window frame weights, window averaging, SUV scaling.

Pure functions on numbers and arrays; the Nipype interfaces in
``interfaces/pet.py`` move files in and out of them.
"""

from __future__ import annotations

import numpy as np

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

    SUV = concentration [Bq/mL] * body weight [g] / injected activity [Bq]. The
    image is assumed decay-corrected to injection (``ImageDecayCorrected``);
    when it is corrected to another time the dose is decayed to that time.

    >>> suv_factor({"Units": "Bq/mL", "InjectedRadioactivity": 370,
    ...             "InjectedRadioactivityUnits": "MBq", "BodyWeight": 74})
    0.0002
    >>> suv_factor({"Units": "Bq/mL"}) is None
    True
    """
    try:
        dose = float(metadata["InjectedRadioactivity"])
        weight_kg = float(metadata["BodyWeight"])
    except (KeyError, TypeError, ValueError):
        return None
    if dose <= 0 or weight_kg <= 0:
        return None
    dose_units = str(metadata.get("InjectedRadioactivityUnits", "MBq")).lower()
    units = str(metadata.get("Units", "Bq/mL")).lower().replace(" ", "")
    if dose_units not in DOSE_TO_BQ or units not in UNIT_TO_BQML:
        return None
    dose_bq = dose * DOSE_TO_BQ[dose_units]
    half_life_s = metadata.get("_HalfLifeSeconds")
    correction_time = metadata.get("ImageDecayCorrectionTime", 0) or 0
    if half_life_s and correction_time:
        dose_bq *= 0.5 ** (float(correction_time) / float(half_life_s))
    return round(UNIT_TO_BQML[units] * weight_kg * 1000.0 / dose_bq, 12)
