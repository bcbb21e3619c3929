"""BIDS discovery (pybids) and input checks.

The participant level turns a BIDS dataset into one :class:`SubjectPlan` per
subject: the T1w to use, and every PET series with its sidecar, tracer,
platform (PET-MR or PET-CT, and how that was decided: :mod:`bids_harmonize.platforms`)
and CT when present.
All checks of the input happen here, before any work starts.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_harmonize.derivatives import node_key, parse_name
from bids_harmonize.petmath import (
    FrameWindowError,
    frame_times_after_injection,
    select_frames,
)
from bids_harmonize.platforms import PLATFORMS, SCANNER_TABLE, infer_platform
from bids_harmonize.tracers import TracerError, resolve_tracer, session_window

LOGGER = logging.getLogger("bids_harmonize.bids")


class InputError(ValueError):
    """The input dataset or an option is unusable; the message is one line for the user.

    ``problems`` holds every one-line problem found (the message is the first).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


@dataclass
class PetSeries:
    """One PET image of a session, with what the pipeline needs to know about it."""

    path: Path
    subject: str
    session: str | None
    tracer: str
    metadata: dict
    platform: str
    platform_source: str
    ct: Path | None = None
    #: the tracer as a BIDS label: the file's ``trc-`` entity, else the tracer name's
    #: letters and digits (``tracer`` is the name: ``AZ-10419369``; this is ``AZ10419369``)
    tracer_label: str = ""
    #: the other entities that tell series of one session apart (task, acquisition,
    #: reconstruction, run), as pybids names them
    entities: dict = field(default_factory=dict)
    #: PET-MR: attenuation-correction setup and checked scanner mu-map
    #: (:class:`bids_harmonize.mumap.Attenuation`, from :func:`pet_attenuation`)
    attenuation: object | None = None
    #: the tracer's table row (:class:`bids_harmonize.tracers.Tracer`) and the session's
    #: uptake window, as discovery resolved them (None for a series made by hand)
    tracer_record: object | None = None
    uptake_window: tuple[float, float] | None = None

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("ManufacturersModelName", "unknown"))

    @property
    def key(self) -> str:
        """The one key of the series (graph branch, node names), from every entity of its
        file name; the tracer is the resolved name, the session the discovered one.

        >>> PetSeries(Path("sub-01_ses-mr_trc-PiB_run-2_pet.nii.gz"), "01", "mr", "PiB", {},
        ...           "PET-MR", "test").key
        'ses_mr_trc_PiB_run_2'
        """
        entities = {**(parse_name(self.path) or {}), "tracer": self.tracer}
        if self.session:
            entities["session"] = self.session
        return node_key(entities)


@dataclass
class SubjectPlan:
    """What the participant workflow will do for one subject."""

    subject: str
    t1w: Path
    pet: list[PetSeries] = field(default_factory=list)


# --------------------------------------------------------------------------- --platform-map


def read_platform_map(path: Path | None) -> dict[str, str]:
    """Read a ``--platform-map`` TSV (columns ``key``, ``platform``; UTF-8, BOM tolerated)."""
    from bids_harmonize.safeio import TABLE_LIMIT, UnsafeInputError, read_bytes_bounded

    if path is None:
        return {}
    try:
        text = read_bytes_bounded(path, TABLE_LIMIT).decode("utf-8-sig")
    except UnsafeInputError as exc:
        raise InputError(f"--platform-map {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"--platform-map {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"--platform-map {path}: cannot be read ({exc.strerror or exc})") from None
    mapping = {}
    try:
        reader = csv.DictReader(text.splitlines(), delimiter="\t")
        if not reader.fieldnames or not {"key", "platform"} <= set(reader.fieldnames):
            raise InputError(f"--platform-map {path}: needs tab-separated columns 'key' and "
                             "'platform'")
        for row in reader:
            if row.get("key") is None or row.get("platform") is None:
                raise InputError(f"--platform-map {path}: line {reader.line_num} has too few "
                                 "columns")
            platform = row["platform"].strip().upper()
            if platform not in PLATFORMS:
                raise InputError(
                    f"--platform-map {path}: platform {row['platform']!r} is not PET-MR, "
                    "PET-CT or PET (a PET-only scanner)"
                )
            mapping[row["key"].strip()] = platform
    except csv.Error as exc:
        raise InputError(f"--platform-map {path}: not a tab-separated table ({exc})") from None
    return mapping


# --------------------------------------------------------------------------- checks

#: Largest image accepted, from the header before any data is read. A 0.5 mm isotropic
#: MPRAGE (512 x 512 x 384, 1e8 voxels) or a 512 x 512 x 600 CT fits; a 1 MB gzip declaring
#: 800^3 voxels (5e8, 2 GB as float32) does not. Not a published constant: a sanity bound
#: for brain imaging, raise it here if a real dataset needs more.
MAX_SPATIAL_VOXELS = 2**28
#: Largest image including frames (4 GiB as float32): a 344 x 344 x 127 x 60-frame dynamic
#: PET (9e8 voxels) fits.
MAX_TOTAL_VOXELS = 2**30
#: Voxel sizes outside this range (mm) are a broken header, not a scanner.
VOXEL_SIZE_RANGE_MM = (0.01, 50.0)


#: Smallest extent (voxels) of each spatial axis: a single slice or a 4-voxel image cannot be
#: registered or averaged over regions. Not a published constant.
MIN_SPATIAL_EXTENT = 8
#: deflate cannot compress better than about 1032:1; a gzip NIfTI declaring more data than
#: this many times its size (plus this slack for the header) is lying, and is refused before
#: any data is inflated
GZIP_MAX_RATIO = 1032
GZIP_SLACK_BYTES = 1 << 16


def check_nifti(path: Path, *, ndim: tuple[int, ...] = (3, 4),
                signal: str = "any") -> nb.Nifti1Image:
    """Load an image and refuse unusable ones, each with a one-line message naming the file.

    From the file and header, before any data is read: a special file (FIFO, device), empty
    or corrupt file, wrong number of dimensions, a zero-length or tiny dimension (under
    :data:`MIN_SPATIAL_EXTENT`), a declared size over :data:`MAX_SPATIAL_VOXELS` /
    :data:`MAX_TOTAL_VOXELS` or more than the file can hold, complex, RGB or other
    non-scalar voxels, a NaN/infinite/singular affine. From the data: NaN or infinite
    values, an image without signal (every voxel equal); with ``signal="positive"`` (PET
    activity, T1w magnitude) also an image without positive values or one whose negative
    values outweigh its positive ones (sign-flipped or not that kind of image).
    """
    from bids_harmonize.safeio import UnsafeInputError, check_regular

    try:
        if check_regular(path).st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        img = nb.load(path)
    except InputError:
        raise
    except UnsafeInputError as exc:
        raise InputError(str(exc)) from None
    except PermissionError:
        raise InputError(f"{path}: not readable (permission denied)") from None
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None
    shape = tuple(int(n) for n in img.shape)
    if img.ndim not in ndim:
        raise InputError(f"{path}: expected a {' or '.join(map(str, ndim))}-D image, got {img.ndim}-D")
    if any(n < 1 for n in shape):
        raise InputError(f"{path}: the header declares a zero-length dimension {shape}")
    if any(n < MIN_SPATIAL_EXTENT for n in shape[:3]):
        raise InputError(f"{path}: {' x '.join(map(str, shape[:3]))} voxels is too small for a "
                         f"brain image (at least {MIN_SPATIAL_EXTENT} per axis)")
    spatial = int(np.prod(shape[:3], dtype=np.int64))
    total = int(np.prod(shape, dtype=np.int64))
    if spatial > MAX_SPATIAL_VOXELS or total > MAX_TOTAL_VOXELS:
        raise InputError(
            f"{path}: the header declares {' x '.join(map(str, shape))} voxels, more than this "
            f"app accepts ({MAX_SPATIAL_VOXELS} per volume, {MAX_TOTAL_VOXELS} in all)"
        )
    _check_voxel_type(img, path)
    _check_declared_size(img, path, total)
    affine = np.asarray(img.affine, dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: the header's affine holds NaN or infinite values")
    linear = affine[:3, :3]
    sizes = np.sqrt((linear**2).sum(axis=0))
    if abs(np.linalg.det(linear)) < 1e-9 or not (
        (sizes >= VOXEL_SIZE_RANGE_MM[0]) & (sizes <= VOXEL_SIZE_RANGE_MM[1])
    ).all():
        raise InputError(
            f"{path}: the header's affine is singular or its voxel sizes "
            f"({', '.join(f'{s:g}' for s in sizes)} mm) are not those of an image"
        )
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short file, ...
        raise InputError(f"{path}: image data unreadable ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise InputError(f"{path}: the image holds NaN or infinite values")
    if data.size and data.min() == data.max():
        raise InputError(f"{path}: the image holds no signal (every voxel is {data.flat[0]:g})")
    if signal == "positive":
        _check_positive_signal(data, path)
    return img


def _check_voxel_type(img, path: Path) -> None:
    """Refuse voxel types that are not one real number per voxel (from the header)."""
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(f"{path}: voxels of type {dtype} (RGB or several values per voxel); "
                         "expected one real number per voxel (a grey-scale image)")
    if dtype.kind == "c":
        raise InputError(f"{path}: complex-valued voxels ({dtype}); expected real numbers "
                         "(magnitude images)")
    if dtype.kind not in "biuf":
        raise InputError(f"{path}: voxels of type {dtype}; expected real numbers")


def _check_declared_size(img, path: Path, total_voxels: int) -> None:
    """Refuse a header that declares more data than the file can hold, before reading it."""
    try:
        offset = int(img.dataobj.offset)
    except (AttributeError, TypeError, ValueError):
        return  # not a file-backed proxy: nothing to compare
    declared = offset + total_voxels * np.dtype(img.get_data_dtype()).itemsize
    size = Path(path).stat().st_size
    if str(path).endswith(".gz"):
        if declared > GZIP_MAX_RATIO * size + GZIP_SLACK_BYTES:
            raise InputError(
                f"{path}: the header declares {declared} bytes of data, more than a "
                f"{size}-byte gzip file can hold: the header is wrong or the file truncated"
            )
    elif declared > size:
        raise InputError(f"{path}: the header declares {declared} bytes, the file has {size}: "
                         "truncated file or wrong header")


def _check_positive_signal(data: np.ndarray, path: Path) -> None:
    """An activity or magnitude image: some positive values, and not mostly negative.

    Volume by volume, so no copy of a whole 4-D series is made.
    """
    volumes = [data] if data.ndim < 4 else [data[..., i] for i in range(data.shape[3])]
    positive = negative = 0.0
    peak = -np.inf
    for volume in volumes:
        values = np.asarray(volume, dtype=np.float64)
        peak = max(peak, float(values.max()))
        positive += float(values[values > 0].sum())
        negative -= float(values[values < 0].sum())
    if peak <= 0:
        raise InputError(f"{path}: no voxel is positive (largest value {peak:g}): an activity "
                         "or magnitude image cannot be all negative or zero (sign flipped?)")
    if negative > positive:
        raise InputError(f"{path}: negative values outweigh positive ones (sums {-negative:.3g} "
                         f"and {positive:.3g}): sign-flipped or not an activity/magnitude image")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _number_list(value, key: str, path: Path) -> list[float]:
    """A JSON array of finite numbers (no booleans, nulls, strings or nested lists)."""
    if not isinstance(value, list):
        raise InputError(f"{path}: {key} must be a list of numbers (seconds), got "
                         f"{type(value).__name__} {json.dumps(value)[:60]}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise InputError(f"{path}: {key}[{i}] must be a number (seconds), got "
                             f"{_short(item)}")
        number = _finite_float(item)
        if number is None:
            raise InputError(f"{path}: {key}[{i}] is not finite or out of range "
                             f"({_short(item)})")
        out.append(number)
    return out


def _finite_float(value) -> float | None:
    """``float(value)`` when finite and in range, else None (``1e400``, NaN, 10**400).

    >>> _finite_float(3), _finite_float(float("inf")), _finite_float(10**400)
    (3.0, None, None)
    """
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if np.isfinite(number) else None


def _short(value) -> str:
    """A value as JSON, cut to 60 characters (huge integers and infinities included)."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError):
        text = repr(value)
    return text[:60]


def check_frames(metadata: dict, path: Path,
                 n_frames: int | None) -> tuple[list[float], list[float]]:
    """Validate ``FrameTimesStart`` and ``FrameDuration``; return them as float lists.

    >>> check_frames({"FrameTimesStart": [0, 600], "FrameDuration": [600, 600]}, Path("p"), 2)
    ([0.0, 600.0], [600.0, 600.0])
    >>> check_frames({"FrameTimesStart": [0, 600], "FrameDuration": [600, -1]}, Path("p"), 2)
    Traceback (most recent call last):
    ...
    bids_harmonize.bids.InputError: p: FrameDuration[1] must be positive, got -1
    """
    for key in ("FrameTimesStart", "FrameDuration"):
        if key not in metadata or metadata[key] in (None, [], ""):
            raise InputError(f"{path}: sidecar lacks {key}, needed to pick the uptake window")
    starts = _number_list(metadata["FrameTimesStart"], "FrameTimesStart", path)
    durations = _number_list(metadata["FrameDuration"], "FrameDuration", path)
    if n_frames is None:  # image unreadable: check the sidecar on its own
        n_frames = len(starts)
    if not (len(starts) == len(durations) == n_frames):
        raise InputError(
            f"{path}: image has {n_frames} frame(s) but FrameTimesStart has {len(starts)} and "
            f"FrameDuration {len(durations)} entries"
        )
    for i, (start, duration) in enumerate(zip(starts, durations, strict=True)):
        if duration <= 0:
            raise InputError(f"{path}: FrameDuration[{i}] must be positive, got {duration:g}")
        if start < 0:
            raise InputError(f"{path}: FrameTimesStart[{i}] is negative ({start:g} s)")
    for i in range(1, len(starts)):
        # one second of slack for rounded times
        if starts[i] < starts[i - 1] + durations[i - 1] - 1.0:
            raise InputError(
                f"{path}: frame {i} starts at {starts[i]:g} s, before frame {i - 1} ends "
                f"({starts[i - 1] + durations[i - 1]:g} s): FrameTimesStart must increase "
                "and frames must not overlap"
            )
    return starts, durations


def timing_problems(metadata: dict, path: Path, starts: list[float],
                    durations: list[float]) -> list[str]:
    """``InjectionStart`` and ``ScanStart`` against the frames; one line per problem.

    BIDS times frames, the scan and the injection from ``TimeZero``; the uptake window
    counts from the injection (:func:`bids_harmonize.petmath.frame_times_after_injection`).
    An ``InjectionStart`` that is not a number, or that comes after the last frame ends,
    is a problem. A ``ScanStart`` after the first frame begins is only a warning (the
    frames' times are used).

    >>> timing_problems({"InjectionStart": 5000}, Path("p"), [0, 600], [600, 600])
    ... # doctest: +ELLIPSIS
    ['p: InjectionStart (5000 s) is after the last frame ends (1200 s): no frame was ...']
    """
    problems = []
    for key in ("InjectionStart", "ScanStart"):
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or _finite_float(value) is None):
            problems.append(f"{path}: {key} must be a finite number of seconds after TimeZero, "
                            f"got {_short(value)}")
    if problems or not starts:
        return problems
    injection = float(metadata.get("InjectionStart") or 0.0)
    end = max(s + d for s, d in zip(starts, durations, strict=True))
    if injection >= end:
        problems.append(f"{path}: InjectionStart ({injection:g} s) is after the last frame ends "
                        f"({end:g} s): no frame was acquired after the injection")
    scan = metadata.get("ScanStart")
    if scan is not None and float(scan) > starts[0] + 1.0:
        LOGGER.warning("%s: ScanStart (%g s) is after the first frame starts (%g s); the frame "
                       "times are used", path, float(scan), starts[0])
    if injection:
        LOGGER.info("%s: InjectionStart is %g s after TimeZero: frame times are counted from "
                    "the injection", path, injection)
    return problems


#: Body weights (kg) and doses (MBq) outside these ranges are possible but unusual: warned.
USUAL_BODY_WEIGHT_KG = (30.0, 250.0)
USUAL_DOSE_MBQ = (20.0, 1000.0)


def plausibility_warnings(metadata: dict, path: Path) -> list[str]:
    """Unusual or unusable sidecar values that do not stop a run, one line each (logged).

    >>> plausibility_warnings({"BodyWeight": -70}, Path("p"))  # doctest: +ELLIPSIS
    ['p: BodyWeight -70 kg is not a body weight; it is ignored (weight from sessions.tsv ...']
    >>> plausibility_warnings({"InjectedRadioactivity": 10.97,
    ...                        "InjectedRadioactivityUnits": "MBq"}, Path("p"))  # doctest: +ELLIPSIS
    ['p: InjectedRadioactivity 10.97 MBq is unusually low for a PET dose (an mCi value?...']
    """
    from bids_harmonize.petmath import DOSE_TO_BQ, weight_kg

    out = []
    weight = metadata.get("BodyWeight")
    if isinstance(weight, int | float) and not isinstance(weight, bool) and (
            _finite_float(weight) is not None):
        if weight_kg(weight) is None:
            out.append(f"{path}: BodyWeight {weight:g} kg is not a body weight; it is ignored "
                       "(weight from sessions.tsv or participants.tsv, else %ID/L)")
        elif not USUAL_BODY_WEIGHT_KG[0] <= weight <= USUAL_BODY_WEIGHT_KG[1]:
            out.append(f"{path}: BodyWeight {weight:g} kg is unusual; check it (SUV scales "
                       "with it)")
    dose = metadata.get("InjectedRadioactivity")
    units = metadata.get("InjectedRadioactivityUnits")
    if isinstance(dose, int | float) and not isinstance(dose, bool) and (
            _finite_float(dose) is not None):
        unit_key = str(units or "MBq").lower()
        if units is not None and unit_key not in DOSE_TO_BQ:
            out.append(f"{path}: InjectedRadioactivityUnits {units!r} is not a known unit "
                       f"({', '.join(sorted(DOSE_TO_BQ))}); the dose is not used")
        elif dose <= 0:
            out.append(f"{path}: InjectedRadioactivity {dose:g} is not a dose; it is not used")
        else:
            mbq = dose * DOSE_TO_BQ[unit_key] / 1e6
            if mbq < USUAL_DOSE_MBQ[0]:
                hint = " (an mCi value?)" if unit_key == "mbq" else ""
                out.append(f"{path}: InjectedRadioactivity {dose:g} {units or 'MBq'} is unusually "
                           f"low for a PET dose{hint}; check InjectedRadioactivityUnits")
            elif mbq > USUAL_DOSE_MBQ[1]:
                out.append(f"{path}: InjectedRadioactivity {dose:g} {units or 'MBq'} is unusually "
                           "high for a PET dose; check InjectedRadioactivityUnits")
    for line in out:
        LOGGER.warning("%s", line)
    return out


#: Sidecar fields the app reads as text, and those it reads as numbers.
TEXT_FIELDS = ("ManufacturersModelName", "Manufacturer", "AttenuationCorrection", "TracerName",
               "Units", "InjectedRadioactivityUnits", "TracerRadionuclide", "InstitutionName")
NUMBER_FIELDS = ("InjectedRadioactivity", "BodyWeight", "ImageDecayCorrectionTime")


def metadata_type_problems(metadata: dict, path: Path) -> list[str]:
    """Sidecar fields of the wrong JSON type (a list where text is expected, ...), one line each.

    >>> for line in metadata_type_problems({"ManufacturersModelName": ["mMR"],
    ...                                     "BodyWeight": "70"}, Path("p")):
    ...     print(line)
    p: ManufacturersModelName must be text, got list ["mMR"]
    p: BodyWeight must be a finite number, got "70"
    """
    problems = []
    for key in TEXT_FIELDS:
        if key in metadata and metadata[key] is not None and not isinstance(metadata[key], str):
            problems.append(f"{path}: {key} must be text, got {type(metadata[key]).__name__} "
                            f"{json.dumps(metadata[key])[:60]}")
    for key in NUMBER_FIELDS:
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or _finite_float(value) is None):
            problems.append(f"{path}: {key} must be a finite number, got {_short(value)}")
    return problems


def check_pet(path: Path, metadata: dict | None) -> None:
    """Check a PET image against its sidecar (field types, frame timing, lengths, image).

    Raises one :class:`InputError` whose ``problems`` list every problem found.
    """
    if metadata is None:
        raise InputError(f"{path}: PET image without a JSON sidecar")
    problems = metadata_type_problems(metadata, path)
    img = None
    try:
        img = check_nifti(path, signal="positive")
    except InputError as exc:
        problems.append(str(exc))
    try:
        starts, durations = check_frames(metadata, path,
                                         img.shape[3] if img is not None and img.ndim == 4
                                         else None)
        problems.extend(timing_problems(metadata, path, starts, durations))
    except InputError as exc:
        problems.append(str(exc))
    if problems:
        raise InputError(problems[0], problems)
    plausibility_warnings(metadata, path)


def sidecar_path(image: Path) -> Path:
    """The JSON sidecar next to an image (same name, ``.json``)."""
    name = image.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return image.with_name(name[: -len(ext)] + ".json")
    return image.with_suffix(".json")


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; :class:`InputError` with one line otherwise.

    Only a regular file of at most :data:`bids_harmonize.safeio.SIDECAR_LIMIT` bytes is
    read, nested at most :data:`bids_harmonize.safeio.MAX_JSON_DEPTH` deep; a key given
    twice is a warning (the last value is used, as JSON parsers do).
    """
    from bids_harmonize.safeio import (
        SIDECAR_LIMIT,
        UnsafeInputError,
        loads_json,
        read_bytes_bounded,
    )

    duplicates: list[str] = []
    try:
        text = read_bytes_bounded(path, SIDECAR_LIMIT).decode("utf-8-sig")
        data = loads_json(text, what=str(path), duplicates=duplicates)
    except UnsafeInputError as exc:
        raise InputError(str(exc)) from None
    except PermissionError:
        raise InputError(f"{path}: not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if duplicates:
        LOGGER.warning("%s: key(s) given more than once, the last value is used: %s", path,
                       ", ".join(sorted(set(duplicates))[:5]))
    if not isinstance(data, dict):
        raise InputError(f"{path}: a sidecar must be a JSON object, got {type(data).__name__}")
    return data


def _name_entities(name: str) -> tuple[dict[str, str], str]:
    stem = name.split(".")[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def read_sidecar(image: Path, bids_dir: Path) -> dict | None:
    """The metadata of an image by the BIDS inheritance principle; None without its own sidecar.

    JSON files of the same suffix from the dataset root down to the image's folder whose
    entities are a subset of the image's are merged, the closer (and more specific) ones
    winning. The image's own sidecar must exist; every file read is checked (UTF-8, valid
    JSON, an object), so a truncated sidecar is one line naming it.
    """
    image, bids_dir = Path(image), Path(bids_dir)
    own = sidecar_path(image)
    if not own.exists():
        return None
    entities, suffix = _name_entities(image.name)
    try:
        folders = [bids_dir, *(bids_dir / p for p in
                               _accumulate(image.parent.relative_to(bids_dir).parts))]
    except ValueError:
        folders = [image.parent]
    candidates = []
    for depth, folder in enumerate(folders):
        try:
            names = sorted(p.name for p in folder.glob(f"*_{suffix}.json"))
        except OSError:
            names = []
        for name in names:
            ents, suf = _name_entities(name)
            if suf == suffix and all(entities.get(k) == v for k, v in ents.items()):
                candidates.append((depth, len(ents), folder / name))
    metadata: dict = {}
    for _depth, _n, path in sorted(candidates):
        metadata.update(read_json_object(path))
    if own not in {c[2] for c in candidates}:
        metadata.update(read_json_object(own))
    return metadata


def _accumulate(parts):
    out = []
    for i in range(len(parts)):
        out.append(Path(*parts[: i + 1]))
    return out


def unreadable_paths(folder: Path, limit: int = 5) -> list[str]:
    """Files or folders under ``folder`` this process cannot read (at most ``limit``)."""
    bad = []

    def onerror(exc):
        bad.append(str(getattr(exc, "filename", None) or exc))

    for root, dirs, files in os.walk(folder, onerror=onerror):
        for name in dirs:
            if not os.access(Path(root) / name, os.R_OK | os.X_OK):
                bad.append(str(Path(root) / name))
        for name in files:
            if not os.access(Path(root) / name, os.R_OK):
                bad.append(str(Path(root) / name))
        if len(bad) >= limit:
            break
    return sorted(set(bad))[:limit]


# --------------------------------------------------------------------------- discovery


def find_validator() -> str | None:
    """``bids-validator-deno`` next to the running interpreter (a venv's or container's bin/),
    else on ``PATH``; None when neither has it."""
    beside = Path(sys.executable).parent / "bids-validator-deno"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bids-validator-deno")


def validate_bids(bids_dir: Path) -> None:
    """Run the BIDS validator (bids-validator-deno) and refuse a dataset with errors.

    A missing validator is an error: the user either installs it or passes
    ``--skip-bids-validation``.
    """
    exe = find_validator()
    if exe is None:
        raise InputError(
            f"bids-validator-deno is neither next to {sys.executable} nor on PATH: install it "
            "(pip install bids-validator-deno) or pass --skip-bids-validation"
        )
    LOGGER.info("Validating %s with %s", bids_dir, exe)
    try:
        proc = subprocess.run(
            [exe, str(bids_dir), "--json", "--ignoreNiftiHeaders"],
            capture_output=True, text=True, timeout=600, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"bids-validator-deno ({exe}) could not run: {_one_line(exc)}; "
                         "pass --skip-bids-validation to go on without it") from None
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (ValueError, KeyError, TypeError):
        LOGGER.warning("BIDS validator gave no readable report: %s", proc.stderr.strip()[:300])
        return
    errors = sorted({i["code"] for i in issues if i.get("severity") == "error"})
    if errors:
        raise InputError(
            f"{bids_dir} fails BIDS validation ({', '.join(errors[:5])}); fix it or pass "
            "--skip-bids-validation"
        )


def read_bids_filters(path: Path | None) -> dict:
    """A ``--bids-filter-file``: a JSON object of query name -> object of pybids filters.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "f.json"
    >>> _ = f.write_text('{"pet": {"reconstruction": "acdyn"}}')
    >>> read_bids_filters(f)
    {'pet': {'reconstruction': 'acdyn'}}
    >>> _ = f.write_text('{"pet": ["acdyn"]}')
    >>> read_bids_filters(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.bids.InputError: ...: query 'pet' must map to a JSON object of entity filters...
    """
    if path is None:
        return {}
    data = read_json_object(path)
    for query, filters in data.items():
        if query not in FILTER_QUERIES:
            raise InputError(f"{path}: unknown query {query!r}; known: {', '.join(FILTER_QUERIES)}")
        if not isinstance(filters, dict):
            raise InputError(f"{path}: query {query!r} must map to a JSON object of entity "
                             f"filters, got {type(filters).__name__}")
        for entity, value in filters.items():
            ok = (value is None or isinstance(value, str | int | bool) or (
                isinstance(value, list) and all(isinstance(v, str | int) for v in value)))
            if not ok:
                raise InputError(f"{path}: filter {query}.{entity} must be text, a number, null "
                                 f"or a list of them, got {json.dumps(value)[:60]}")
    return data


#: Queries a ``--bids-filter-file`` may restrict.
FILTER_QUERIES = ("t1w", "pet", "ct")


def read_participants(bids_dir: Path) -> list[dict] | None:
    """Rows of ``participants.tsv`` (BOM tolerated); None when the file is absent.

    Raises :class:`InputError` for an unreadable file or one without ``participant_id``.
    """
    from bids_harmonize.safeio import TABLE_LIMIT, UnsafeInputError, read_bytes_bounded

    path = Path(bids_dir) / "participants.tsv"
    if not path.exists():
        return None
    try:
        text = read_bytes_bounded(path, TABLE_LIMIT).decode("utf-8-sig")
    except UnsafeInputError as exc:
        raise InputError(str(exc)) from None
    except PermissionError:
        raise InputError(f"{path}: not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
        header = next(csv.reader(text.splitlines()[:1], delimiter="\t"), [])
    except csv.Error as exc:
        raise InputError(f"{path}: not a tab-separated table ({exc})") from None
    if "participant_id" not in [h.strip() for h in header]:
        raise InputError(f"{path}: no 'participant_id' column (columns: "
                         f"{', '.join(header) or 'none'})")
    return rows


def load_layout(bids_dir: Path):
    """Index a BIDS dataset with pybids (CT files included, derivatives left out).

    Metadata is not indexed here (a truncated sidecar of one subject would stop the
    indexing of all): :func:`read_sidecar` reads each selected sidecar with checks.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    read_json_object(bids_dir / "dataset_description.json")
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

    # unreadable folders are left to the per-participant checks (pybids would stop on them)
    ignore = [*DEFAULT_LOCATIONS_TO_IGNORE,
              *(re.compile("^/" + re.escape(rel) + "(/|$)") for rel in _unreadable_dirs(bids_dir))]
    try:
        return BIDSLayout(str(bids_dir), validate=False, derivatives=False,
                          indexer=BIDSLayoutIndexer(validate=False, index_metadata=False,
                                                    ignore=ignore))
    except Exception as exc:  # pybids raises many types for odd trees
        raise InputError(f"{bids_dir}: pybids cannot index the dataset ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None


def _unreadable_dirs(bids_dir: Path) -> list[str]:
    """Folders of the dataset (derivatives and dot-folders left out) this process cannot list."""
    bad = []
    for root, dirs, _files in os.walk(bids_dir):
        keep = []
        for name in dirs:
            path = Path(root) / name
            if name.startswith(".") or (Path(root) == bids_dir and name in (
                    "derivatives", "sourcedata", "code")):
                continue
            if os.access(path, os.R_OK | os.X_OK):
                keep.append(name)
            else:
                bad.append(path.relative_to(bids_dir).as_posix())
        dirs[:] = keep
    return bad


def _filters(bids_filters: dict, query: str) -> dict:
    return dict(bids_filters.get(query, {}))


@dataclass
class Discovery:
    """What discovery found: plans to run, benign skips, and participants excluded for problems.

    ``excluded`` maps a participant label to every problem found (one line each).
    """

    plans: list[SubjectPlan]
    skipped: list[str]
    excluded: dict[str, list[str]]


def discover(
    bids_dir: Path,
    *,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    tracer_label: list[str] | None = None,
    bids_filters: dict | None = None,
    platform_map: dict[str, str] | None = None,
    uptake_windows: dict[str, list[float]] | None = None,
    window_policy: str = "strict",
    reference_regions: dict[str, str | None] | None = None,
) -> Discovery:
    """Check every selected participant and build a plan for each usable one.

    A participant with no PET matching the selection is skipped (benign); one with
    unusable inputs is excluded with every problem found (one line each). Raises
    :class:`InputError` only for problems of the whole dataset (not BIDS, unknown
    participants, nothing selected).
    """
    layout = load_layout(bids_dir)
    bids_filters = bids_filters or {}
    subjects = sorted(layout.get_subjects())
    if participant_label:
        missing = sorted(set(participant_label) - set(subjects))
        if missing:
            raise InputError(
                f"participant(s) not in {bids_dir}: {', '.join('sub-' + m for m in missing)}"
            )
        subjects = [s for s in subjects if s in set(participant_label)]
    if not subjects:
        raise InputError(f"{bids_dir}: no subjects found")

    plans, skipped, excluded = [], [], {}
    for subject in subjects:
        try:
            plan, why, problems = _plan_subject(
                layout, Path(bids_dir), subject, session_label=session_label,
                tracer_label=tracer_label, bids_filters=bids_filters,
                platform_map=platform_map or {}, uptake_windows=uptake_windows or {},
                tracer_options={"window_policy": window_policy,
                                "references": reference_regions or {}},
            )
        except Exception as exc:  # noqa: BLE001 - one participant's inputs never stop the rest
            LOGGER.debug("Checking sub-%s failed", subject, exc_info=True)
            plan, why = None, ""
            problems = [f"sub-{subject}: its inputs could not be checked (unexpected "
                        f"{type(exc).__name__}: {_one_line(exc)})"]
        if problems:
            for problem in problems:
                LOGGER.error("Excluding sub-%s: %s", subject, problem)
            excluded[subject] = problems
        elif plan is None:
            LOGGER.warning("Skipping sub-%s: %s", subject, why)
            skipped.append(f"sub-{subject}: {why}")
        else:
            plans.append(plan)
    return Discovery(plans, skipped, excluded)


#: Entities besides sub/ses/trc that tell two PET series of one session apart, in BIDS order.
SERIES_ENTITIES = ("task", "acquisition", "reconstruction", "run")


def _plan_subject(layout, bids_dir, subject, *, session_label, tracer_label, bids_filters,
                  platform_map, uptake_windows, tracer_options=None):
    """``(plan, why_skipped, problems)`` for one subject; problems exclude it."""
    unreadable = unreadable_paths(bids_dir / f"sub-{subject}")
    if unreadable:
        return None, "", [f"{p}: not readable (permission denied)" for p in unreadable]
    query = {"subject": subject, "extension": [".nii", ".nii.gz"], "return_type": "filename"}
    try:
        pets = layout.get(suffix="pet", datatype="pet", **query, **_filters(bids_filters, "pet"))
        t1ws = layout.get(suffix="T1w", datatype="anat", **query, **_filters(bids_filters, "t1w"))
    except Exception as exc:  # pybids refuses unknown filter entities with various types
        return None, "", [f"--bids-filter-file does not apply: {_one_line(exc)}"]
    if session_label:
        pets = [p for p in pets if _entity(layout, p, "session") in set(session_label)]
    if tracer_label:
        wanted = {t.lower() for t in tracer_label}
        pets = [p for p in pets if (_entity(layout, p, "tracer") or "").lower() in wanted]
    if not pets:
        return None, "no PET images match the selection", []

    series, problems = [], []
    for pet in sorted(pets):
        try:
            series.append(_plan_series(layout, bids_dir, subject, pet, bids_filters=bids_filters,
                                       platform_map=platform_map, uptake_windows=uptake_windows,
                                       tracer_options=tracer_options))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        return None, "", problems

    sessions_with_pet = {s.session for s in series}
    t1w = _pick_t1w(layout, t1ws, sessions_with_pet)
    if t1w is None:
        if any(s.platform == "PET-MR" for s in series):
            return None, "", ["PET-MR session(s) but no T1w in any session of this subject"]
        return None, "", ["no T1w in any session (needed for registration)"]
    try:
        check_nifti(Path(t1w), ndim=(3,), signal="positive")
    except InputError as exc:
        return None, "", [str(exc)]
    return SubjectPlan(subject=subject, t1w=Path(t1w), pet=series), "", []


def _plan_series(layout, bids_dir, subject, pet, *, bids_filters, platform_map, uptake_windows,
                 tracer_options=None):
    """One checked :class:`PetSeries`; raises :class:`InputError` naming the file."""
    path = Path(pet)
    query = {"subject": subject, "extension": [".nii", ".nii.gz"], "return_type": "filename"}
    session = _entity(layout, pet, "session")
    metadata = read_sidecar(path, bids_dir)
    check_pet(path, metadata)
    options = tracer_options or {}
    tracer = _resolve_tracer(_entity(layout, pet, "tracer"), metadata, path, uptake_windows,
                             options.get("references", {}))
    window = session_window(uptake_windows, tracer, session)
    try:
        select_frames(frame_times_after_injection(metadata), metadata["FrameDuration"], window,
                      policy=options.get("window_policy", "strict"))
    except FrameWindowError as exc:
        raise InputError(f"{path}: {exc} ({tracer.name}); see --uptake-window (one session: "
                         "ses-<label>:<tracer>=START-END) and --window-policy nearest") from None
    cts = layout.get(
        suffix="CT", session=session, **query, **_filters(bids_filters, "ct")
    ) if session else []
    ct = Path(sorted(cts)[0]) if cts else None
    if ct is not None:
        check_nifti(ct, ndim=(3,))
    platform, how = infer_platform(
        metadata, subject=subject, session=session, has_ct=ct is not None,
        platform_map=platform_map,
    )
    if platform is None:
        model = metadata.get("ManufacturersModelName")
        add = (f"add the model to {SCANNER_TABLE} or map it with --platform-map (a row "
               f"'{model}<TAB>PET-MR', PET-CT or PET)" if model else
               "map it with --platform-map (a row 'ses-<label><TAB>PET-MR', PET-CT or PET)")
        raise InputError(f"{path}: cannot tell PET-MR, PET-CT or PET-only ({how}); {add}")
    entities = {k: str(v) for k in SERIES_ENTITIES
                if (v := _entity(layout, pet, k)) is not None}
    label = _entity(layout, pet, "tracer") or tracer.label
    LOGGER.info("sub-%s%s trc-%s%s: %s (%s), from %s", subject,
                f" ses-{session}" if session else "", label,
                "".join(f" {k}-{v}" for k, v in entities.items()), platform, tracer.name, how)
    if platform == "PET":
        LOGGER.info("%s: PET-only scanner with measured (transmission) attenuation "
                    "correction: preprocessed and quantified, never harmonized", path.name)
    attenuation = pet_attenuation(path, metadata, bids_dir) if platform == "PET-MR" else None
    return PetSeries(path, subject, session, tracer.name, metadata, platform, how, ct,
                     entities=entities, attenuation=attenuation, tracer_label=label,
                     tracer_record=tracer, uptake_window=window)


def pet_attenuation(path: Path, metadata: dict, bids_dir: Path):
    """The attenuation-correction setup and the checked scanner mu-map of a PET-MR series.

    See :func:`bids_harmonize.mumap.series_attenuation`; an unusable mu-map without a known
    setup to fall back to is an :class:`InputError` naming the file.
    """
    from bids_harmonize.mumap import MuMapError, series_attenuation

    try:
        return series_attenuation(path, metadata, bids_dir)
    except MuMapError as exc:
        raise InputError(str(exc)) from None


def _resolve_tracer(label: str | None, metadata: dict, path: Path, windows=None,
                    references=None):
    """The tracer of a PET file: its ``trc-`` label, else the sidecar's ``TracerName``.

    See :func:`bids_harmonize.tracers.resolve_tracer`: a SPECT sidecar is refused, and a
    tracer named nowhere runs with ``--uptake-window``/``--reference-region``.
    """
    try:
        return resolve_tracer(label, metadata.get("TracerName"), metadata, windows=windows,
                              references=references)
    except TracerError as exc:
        raise InputError(f"{path}: {exc}") from None


def _entity(layout, filename: str, name: str):
    return layout.parse_file_entities(filename).get(name)


def _pick_t1w(layout, t1ws: list[str], sessions: set) -> str | None:
    """The subject's T1w: from a PET session when there is one, else from any session."""
    if not t1ws:
        return None
    in_pet_sessions = [t for t in sorted(t1ws) if _entity(layout, t, "session") in sessions]
    if len(t1ws) > 1:
        LOGGER.info("Several T1w images; using %s", (in_pet_sessions or sorted(t1ws))[0])
    return (in_pet_sessions or sorted(t1ws))[0]


def bids_uri(path: Path, bids_dir: Path, dataset: str = "raw") -> str:
    """A BIDS URI (``bids:raw:sub-01/...``) for a file inside ``bids_dir``.

    >>> bids_uri(Path("/d/sub-01/anat/sub-01_T1w.nii.gz"), Path("/d"))
    'bids:raw:sub-01/anat/sub-01_T1w.nii.gz'
    """
    return f"bids:{dataset}:{Path(path).relative_to(bids_dir).as_posix()}"
