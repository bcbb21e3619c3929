"""The tracer table (``data/tracers.yaml``): families, uptake windows, references, equations.

>>> tracer = get_tracer("av45")
>>> tracer.name, tracer.family, tracer.window_min
('florbetapir', 'amyloid', (50.0, 60.0))
>>> round(get_tracer("PiB").centiloid_from_suvr(2.076), 1)
100.0
>>> round(get_tracer("florbetapir").centiloid_from_suvr(1.5, "avid"), 2)
97.35

A user table (``--tracer-file``) has the same schema and is validated the same way;
the command line makes it visible to every process of a run through the
``BIDS_HARMONIZE_TRACER_FILE`` environment variable. A tracer named nowhere can still
run with a user window and reference region (:func:`unknown_tracer`): family
``unknown``, no tracer-specific measures.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

FAMILIES = ("amyloid", "tau", "fdg", "dat")
#: family of a tracer named nowhere (regional means/SUVR only, no tracer-specific measures)
UNKNOWN_FAMILY = "unknown"
#: environment variable naming a user tracer table (set by the command line)
TRACER_FILE_ENV = "BIDS_HARMONIZE_TRACER_FILE"
#: environment variable holding the tracers named nowhere that this run resolved (JSON), so
#: that Nipype's worker processes look them up like the main process
RUNTIME_TRACERS_ENV = "BIDS_HARMONIZE_RUNTIME_TRACERS"

#: Physical half-lives (minutes) of PET radionuclides, NuDat 3 / ENSDF (NNDC):
#: 11C 20.364, 13N 9.965, 15O 2.041, 18F 109.77, 64Cu 762.0 (12.70 h), 68Ga 67.71,
#: 89Zr 4704 (78.41 h), 124I 6013 (4.176 d).
PET_HALF_LIVES_MIN = {"C11": 20.364, "N13": 9.965, "O15": 2.041, "F18": 109.77,
                      "CU64": 762.0, "GA68": 67.71, "ZR89": 4704.0, "I124": 6013.0}
#: Radionuclides of single-photon (SPECT) imaging: a dataset with one is refused.
SPECT_RADIONUCLIDES = ("I123", "TC99M", "IN111", "TL201", "I125", "XE133")
#: Names shared by a PET tracer of the table and a SPECT tracer: never resolved silently.
#: key (lower case, alphanumerics only) -> (PET entry, radionuclide that selects it, SPECT name)
AMBIGUOUS_NAMES = {
    "fpcit": ("FPCIT", "F18", "[123I]FP-CIT (ioflupane, DaTSCAN), a SPECT tracer"),
}
#: Names that only ever mean a SPECT tracer.
SPECT_TRACER_NAMES = {"datscan": "[123I]ioflupane (DaTSCAN)",
                      "ioflupane": "[123I]ioflupane (DaTSCAN)",
                      "123ifpcit": "[123I]FP-CIT (DaTSCAN)",
                      "hmpao": "[99mTc]HMPAO", "ecd": "[99mTc]ECD", "trodat": "[99mTc]TRODAT-1"}

_REQUIRED = ("family", "radionuclide", "half_life_min", "window_min", "reference")
_OPTIONAL = ("centiloid", "cutoff", "aliases", "sources")


class TracerError(ValueError):
    """A tracer that cannot be used as given; the message is one line."""


class UnknownTracerError(TracerError):
    """A tracer name that the tracer table does not know."""


class NotPetError(TracerError):
    """A SPECT (or other non-PET) dataset or tracer."""


class TracerTableError(TracerError):
    """A tracer table (built-in or ``--tracer-file``) that does not follow the schema."""


@dataclass(frozen=True)
class Tracer:
    """One row of the tracer table.

    ``centiloid`` is the default equation (the first of ``centiloid_equations``), a dict
    with ``slope``, ``intercept``, ``pipeline``, ``source``; ``cutoff`` has ``measure``,
    ``value`` (None when no published value exists) and ``source``.
    """

    name: str
    family: str
    radionuclide: str
    half_life_min: float
    window_min: tuple[float, float] | None
    reference: str | None
    centiloid: dict | None = None
    cutoff: dict | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    centiloid_equations: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    origin: str = "built-in"

    @property
    def known(self) -> bool:
        """False for a tracer named nowhere (family ``unknown``)."""
        return self.family != UNKNOWN_FAMILY

    @property
    def label(self) -> str:
        """The name as a BIDS label (letters and digits: ``AZ-10419369`` -> ``AZ10419369``).

        The name is what the user reads and types (``TracerName``, ``--uptake-window``);
        the label is for file names and graph keys. Built-in tracers' names are labels.
        """
        return tracer_label(self.name)

    def equation(self, name: str | None = None) -> dict:
        """A named Centiloid equation (default: the first, normally ``standard``)."""
        if not self.centiloid_equations:
            raise TracerError(f"tracer {self.name!r} has no Centiloid equation")
        if name is None:
            return self.centiloid
        if name not in self.centiloid_equations:
            raise TracerError(
                f"tracer {self.name!r} has no Centiloid equation {name!r}; it has: "
                + ", ".join(self.centiloid_equations))
        return {"name": name, **self.centiloid_equations[name]}

    def centiloid_from_suvr(self, suvr, equation: str | None = None):
        """Centiloid from whole-cerebellum SUVR with a published equation (default: standard)."""
        eq = self.equation(equation)
        return eq["slope"] * suvr + eq["intercept"]


def _fail(where: str, name: str, what: str):
    raise TracerTableError(f"{where}: tracer {name!r}: {what}")


def _number(where, name, key, value, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(where, name, f"{key} must be a finite number, not {value!r}")
    if positive and value <= 0:
        _fail(where, name, f"{key} must be positive, not {value!r}")
    return float(value)


def _text(where, name, key, value):
    if not isinstance(value, str) or not value.strip() or any(ord(c) < 32 for c in value):
        _fail(where, name, f"{key} must be a one-line, non-empty text, not {value!r}")
    return value


def parse_tracer(name, row, *, where: str = "tracers.yaml") -> Tracer:
    """One validated :class:`Tracer` from a table row (raises :class:`TracerTableError`).

    >>> parse_tracer("X", {"family": "tau"}, where="my.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.tracers.TracerTableError: my.yaml: tracer 'X': missing radionuclide, ...
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise TracerTableError(f"{where}: tracer key {name!r} is not a BIDS label "
                               "(letters and digits only)")
    if not isinstance(row, dict):
        _fail(where, name, "expected a mapping of fields")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        _fail(where, name, "missing " + ", ".join(missing))
    unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        _fail(where, name, "unknown field(s) " + ", ".join(map(str, unknown)))
    if row["family"] not in FAMILIES:
        _fail(where, name, f"family must be one of {', '.join(FAMILIES)}, not {row['family']!r}")
    nuclide = _text(where, name, "radionuclide", row["radionuclide"])
    if nuclide.upper().replace("-", "") in SPECT_RADIONUCLIDES:
        _fail(where, name, f"radionuclide {nuclide} is a SPECT radionuclide; PET only")
    half_life = _number(where, name, "half_life_min", row["half_life_min"], positive=True)
    window = row["window_min"]
    if not isinstance(window, list | tuple) or len(window) != 2:
        _fail(where, name, f"window_min must be [start, end] in minutes, not {window!r}")
    start, end = (_number(where, name, "window_min", v) for v in window)
    if not 0 <= start < end:
        _fail(where, name, f"window_min start must be >= 0 and before its end, not {window!r}")
    reference = _text(where, name, "reference", row["reference"])
    equations = {}
    cl = row.get("centiloid")
    if cl is not None:
        if not isinstance(cl, dict) or not cl:
            _fail(where, name, "centiloid must map equation names to {slope, intercept, source}")
        for key, eq in cl.items():
            if not isinstance(eq, dict) or {"slope", "intercept", "source"} - set(eq):
                _fail(where, name, f"centiloid equation {key!r} needs slope, intercept and source")
            equations[str(key)] = {
                **eq, "slope": _number(where, name, f"centiloid.{key}.slope", eq["slope"]),
                "intercept": _number(where, name, f"centiloid.{key}.intercept", eq["intercept"]),
                "source": _text(where, name, f"centiloid.{key}.source", eq["source"])}
        if row["family"] != "amyloid":
            _fail(where, name, "only amyloid tracers have Centiloid equations")
    cutoff = row.get("cutoff")
    if cutoff is not None:
        if not isinstance(cutoff, dict) or {"measure", "source"} - set(cutoff):
            _fail(where, name, "cutoff needs measure, value (a number or null) and source")
        value = cutoff.get("value")
        cutoff = {"measure": _text(where, name, "cutoff.measure", cutoff["measure"]),
                  "value": None if value is None else _number(where, name, "cutoff.value", value),
                  "source": _text(where, name, "cutoff.source", cutoff["source"])}
    aliases = row.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        _fail(where, name, "aliases must be a list of names")
    for alias in aliases:
        if _key(alias) in AMBIGUOUS_NAMES or _key(alias) in SPECT_TRACER_NAMES:
            _fail(where, name, f"alias {alias!r} also names a SPECT tracer; use an "
                               "unambiguous name such as '[18F]FP-CIT'")
    sources = row.get("sources") or {}
    if not isinstance(sources, dict):
        _fail(where, name, "sources must map field names to references")
    first = next(iter(equations), None)
    return Tracer(
        name=name, family=row["family"], radionuclide=nuclide, half_life_min=half_life,
        window_min=(start, end), reference=reference,
        centiloid={"name": first, **equations[first]} if first else None,
        cutoff=cutoff, aliases=tuple(aliases), centiloid_equations=equations,
        sources={str(k): str(v) for k, v in sources.items()},
        origin="built-in" if where == "tracers.yaml" else where)


def parse_table(data, *, where: str) -> dict[str, Tracer]:
    """Validate a whole table (a mapping of tracer label -> row)."""
    if not isinstance(data, dict) or not data:
        raise TracerTableError(f"{where}: expected a mapping of tracer labels to fields")
    return {name: parse_tracer(name, row, where=where) for name, row in data.items()}


@cache
def _builtin_table() -> dict[str, Tracer]:
    text = resources.files("bids_harmonize.data").joinpath("tracers.yaml").read_text()
    return parse_table(yaml.safe_load(text), where="tracers.yaml")


@cache
def load_tracer_file(path: str | Path) -> dict[str, Tracer]:
    """A user tracer table (``--tracer-file``), validated; errors name the file and the field."""
    from bids_harmonize.safeio import (
        SMALL_FILE_LIMIT,
        UnsafeInputError,
        read_bytes_bounded,
        safe_yaml_load,
    )

    path = Path(path)
    try:
        # a regular file of at most 1 MB, parsed without YAML aliases (no expansion bombs)
        text = read_bytes_bounded(path, SMALL_FILE_LIMIT).decode("utf-8")
        data = safe_yaml_load(text, what=str(path))
    except UnsafeInputError as exc:
        raise TracerTableError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise TracerTableError(f"{path}: cannot read the tracer file ({reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise TracerTableError(f"{path}: not valid YAML{at}") from None
    return parse_table(data, where=str(path))


def use_tracer_file(path: str | Path) -> dict[str, Tracer]:
    """Validate a user tracer table and make it part of :func:`tracer_table` for this
    process and the processes it starts (``$BIDS_HARMONIZE_TRACER_FILE``)."""
    path = Path(path).expanduser().absolute()
    table = load_tracer_file(path)
    os.environ[TRACER_FILE_ENV] = str(path)
    return table


def tracer_table() -> dict[str, Tracer]:
    """The packaged tracers, plus (overriding by label) those of the user tracer file,
    plus the tracers named nowhere that this run registered (:func:`register_tracer`)."""
    table = dict(_builtin_table())
    user = os.environ.get(TRACER_FILE_ENV)
    if user:
        table.update(load_tracer_file(user))
    table.update(_runtime_tracers(os.environ.get(RUNTIME_TRACERS_ENV, "")))
    return table


@cache
def _runtime_tracers(text: str) -> dict[str, Tracer]:
    if not text:
        return {}
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        raise TracerTableError(f"${RUNTIME_TRACERS_ENV} is not valid JSON") from None
    return {name: unknown_tracer(name, row["radionuclide"], window=row["window_min"],
                                 reference=row["reference"]) for name, row in rows.items()}


def register_tracer(tracer: Tracer) -> None:
    """Make a tracer named nowhere findable by :func:`get_tracer` in this process and in
    the processes it starts (through ``$BIDS_HARMONIZE_RUNTIME_TRACERS``)."""
    rows = json.loads(os.environ.get(RUNTIME_TRACERS_ENV) or "{}")
    rows[tracer.name] = {"radionuclide": tracer.radionuclide,
                         "window_min": list(tracer.window_min) if tracer.window_min else None,
                         "reference": tracer.reference}
    os.environ[RUNTIME_TRACERS_ENV] = json.dumps(rows, sort_keys=True)


def session_window(windows: dict | None, tracer: Tracer, session: str | None):
    """The uptake window of one session: ``ses-<label>:<tracer>`` from ``windows``, else
    ``<tracer>``, else the table's (None: a tracer named nowhere without a window).

    Keys name the tracer by label, alias or free-text name, with or without its
    radionuclide (``--uptake-window av45=50-70``, ``18F-AV45=50-70``, ``AZ-10419369=20-60``).

    >>> fbb = get_tracer("florbetaben")
    >>> w = {"florbetaben": [90, 110], "ses-petmr:FBB": [130, 150]}
    >>> session_window(w, fbb, "petmr"), session_window(w, fbb, "petct")
    ((130.0, 150.0), (90.0, 110.0))
    >>> session_window({}, fbb, None)
    (90.0, 110.0)
    """
    by_session, general = None, None
    for key, value in (windows or {}).items():
        scope, _, name = key.rpartition(":")
        if not names_tracer(name, tracer):
            continue
        if scope and session is not None and scope.removeprefix("ses-") == session:
            by_session = value
        elif not scope:
            general = value
    chosen = by_session if by_session is not None else general
    if chosen is None:
        return tracer.window_min
    return (float(chosen[0]), float(chosen[1]))


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def tracer_label(name: str) -> str:
    """A free-text tracer name as a BIDS label: its letters and digits.

    >>> tracer_label("AZ-10419369"), tracer_label("[11C]PiB"), tracer_label("PiB")
    ('AZ10419369', '11CPiB', 'PiB')
    """
    return "".join(ch for ch in str(name) if ch.isascii() and ch.isalnum())


#: A radionuclide written before a tracer's name: ``[11C]PiB``, ``18F-AV45``, ``C-11 UCBJ``.
_NUCLIDE_PREFIX = re.compile(
    r"^\s*(?:\[(?P<bracket>[A-Za-z0-9-]+)\]\s*-?\s*"
    r"|(?P<plain>\d+m?[A-Za-z]{1,2}|[A-Za-z]{1,2}-?\d+m?)[-\s]+)")


def _nuclide(text: str) -> str:
    """A radionuclide in one spelling, letters first: ``18F``, ``F-18``, ``[18F]`` -> ``F18``."""
    key = _key(text).upper()
    match = re.fullmatch(r"(\d+)(M?)([A-Z]{1,2})", key)
    return f"{match.group(3)}{match.group(1)}{match.group(2)}" if match else key


def split_radionuclide(name: str) -> tuple[str | None, str]:
    """A tracer name without the radionuclide written before it, and that radionuclide.

    Only a PET or SPECT radionuclide counts (``AZ-10419369`` and ``MK-6240`` are names).

    >>> split_radionuclide("[11C]PiB"), split_radionuclide("18F-AV45")
    (('C11', 'PiB'), ('F18', 'AV45'))
    >>> split_radionuclide("AZ-10419369"), split_radionuclide("MK-6240")
    ((None, 'AZ-10419369'), (None, 'MK-6240'))
    """
    match = _NUCLIDE_PREFIX.match(str(name))
    if match:
        nuclide = _nuclide(match.group("bracket") or match.group("plain"))
        rest = str(name)[match.end():].strip()
        if _key(rest) and (nuclide in PET_HALF_LIVES_MIN or nuclide in SPECT_RADIONUCLIDES):
            return nuclide, rest
    return None, str(name)


def name_keys(name: str) -> set[str]:
    """Every key a typed tracer name stands for: as written, and without its radionuclide.

    >>> sorted(name_keys("[11C]PiB")), sorted(name_keys("AZ-10419369"))
    (['11cpib', 'pib'], ['az10419369'])
    """
    _, rest = split_radionuclide(name)
    return {k for k in (_key(str(name)), _key(rest)) if k}


def names_tracer(name: str, tracer: Tracer) -> bool:
    """Whether a name typed by the user (an option's ``TRACER``) means ``tracer``.

    Case, punctuation and a radionuclide written before the name do not matter; the
    tracer is known by its name, label and aliases.

    >>> pib = get_tracer("PiB")
    >>> names_tracer("[11C]PiB", pib), names_tracer("pib", pib), names_tracer("FDG", pib)
    (True, True, False)
    """
    known = set()
    for alias in (tracer.name, *tracer.aliases):
        known |= name_keys(alias)
    return bool(name_keys(name) & known)


def _shell_word(text: str) -> str:
    """``text`` as the user would type it in a shell (quoted when it needs it)."""
    return shlex.quote(text)


def get_tracer(name: str, *, radionuclide: str | None = None, strict: bool = False) -> Tracer:
    """Look a tracer up by its label, or any alias, ignoring case and punctuation.

    A name shared with a SPECT tracer (``FP-CIT``) resolves only with ``radionuclide``
    F18, or by its exact label (``FPCIT``, as the app itself writes it) unless ``strict``
    (what discovery uses on a dataset's labels).

    >>> get_tracer("FP-CIT")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.tracers.UnknownTracerError: tracer 'FP-CIT' is ambiguous: it names ...
    >>> get_tracer("FP-CIT", radionuclide="F18").name, get_tracer("FPCIT", radionuclide="18F").name
    ('FPCIT', 'FPCIT')
    """
    wanted = _key(str(name))
    table = tracer_table()
    prefix, rest = split_radionuclide(str(name))
    for key in (wanted, _key(rest)):
        if key in SPECT_TRACER_NAMES:
            raise NotPetError(f"tracer {name!r} is {SPECT_TRACER_NAMES[key]}, a SPECT tracer; "
                              "bids_harmonize processes PET only")
    if prefix in SPECT_RADIONUCLIDES:
        raise NotPetError(f"tracer {name!r} is labelled with {prefix}, a SPECT radionuclide; "
                          "bids_harmonize processes PET only")
    if wanted in AMBIGUOUS_NAMES and (strict or name not in table):
        entry, nuclide, spect = AMBIGUOUS_NAMES[wanted]
        given = _key(radionuclide or "")
        if radionuclide and _nuclide(radionuclide) == _nuclide(nuclide):  # 18F, F-18, [18F]
            return table[entry]
        if given.upper() in SPECT_RADIONUCLIDES:
            raise NotPetError(f"tracer {name!r} with radionuclide {radionuclide} is {spect}; "
                              "bids_harmonize processes PET only")
        raise UnknownTracerError(
            f"tracer {name!r} is ambiguous: it names [18F]FP-CIT (PET) and {spect}; set "
            f"TracerRadionuclide to {nuclide} in the PET sidecar, or use the label '18FFPCIT'")
    for tracer in table.values():
        if wanted in {_key(tracer.name), *(_key(a) for a in tracer.aliases)}:
            return tracer
    if prefix is not None:  # "[11C]PiB", "18F-AV45": the name after a matching radionuclide
        stripped = _key(rest)
        for tracer in table.values():
            if (_nuclide(tracer.radionuclide) == prefix
                    and stripped in {_key(tracer.name), *(_key(a) for a in tracer.aliases)}):
                return tracer
    known = ", ".join(table)
    raise UnknownTracerError(
        f"unknown tracer {name!r} (known: {known}); to run it, describe it in a YAML table "
        f"given with --tracer-file, or give its window with --uptake-window "
        f"{_shell_word(f'{name}=START-END')} (and optionally --reference-region "
        f"{_shell_word(f'{name}=REGION')})")


def family_of(name: str) -> str:
    """The family of a tracer in the table, ``"unknown"`` for a name it does not hold.

    >>> family_of("PiB"), family_of("no-such-tracer")
    ('amyloid', 'unknown')
    """
    try:
        return get_tracer(str(name)).family
    except UnknownTracerError:
        return "unknown"


def check_pet_metadata(metadata: dict | None) -> None:
    """Refuse a sidecar that describes SPECT (``Modality``/``ImagingModality``, radionuclide).

    >>> check_pet_metadata({"Modality": "PT", "TracerRadionuclide": "F18"})
    >>> check_pet_metadata({"TracerRadionuclide": "I123"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.tracers.NotPetError: TracerRadionuclide I123 is a SPECT radionuclide: ...
    """
    metadata = metadata or {}
    for key in ("Modality", "ImagingModality"):
        value = metadata.get(key)
        if isinstance(value, str) and _key(value) in {"nm", "spect", "spec"}:
            raise NotPetError(f"{key} is {value!r} (single-photon imaging): this is a SPECT "
                              "dataset, and bids_harmonize processes PET only")
    nuclide = metadata.get("TracerRadionuclide")
    if isinstance(nuclide, str) and _key(nuclide).upper() in SPECT_RADIONUCLIDES:
        raise NotPetError(f"TracerRadionuclide {nuclide} is a SPECT radionuclide: this is a "
                          "SPECT dataset, and bids_harmonize processes PET only")


def half_life_of(radionuclide: str | None) -> float | None:
    """Half-life (min) of a PET radionuclide named as in BIDS (``F18``, ``18F``, ``C-11``).

    >>> half_life_of("18F"), half_life_of("C-11"), half_life_of("Tc99m")
    (109.77, 20.364, None)
    """
    if not isinstance(radionuclide, str):
        return None
    key = _key(radionuclide).upper()
    match = re.fullmatch(r"(\d+)([A-Z]+)", key)
    if match:
        key = match.group(2) + match.group(1)
    return PET_HALF_LIVES_MIN.get(key)


def resolve_tracer(label: str | None, tracer_name: str | None, metadata: dict | None = None, *,
                   windows: dict | None = None, references: dict | None = None) -> Tracer:
    """The tracer of a PET series, from its ``trc-`` label, else its ``TracerName``.

    A SPECT sidecar is refused (:class:`NotPetError`). A tracer that the tables do not
    know runs as family ``unknown`` when ``windows`` has its name (for any session; the
    window of each session is :func:`session_window`'s) or ``references`` names it (a
    region, or None: regional means only; no window: the whole static or summed image);
    it is then registered (:func:`register_tracer`). Otherwise
    :class:`UnknownTracerError` says which option makes it run.
    """
    check_pet_metadata(metadata)
    nuclide = (metadata or {}).get("TracerRadionuclide")
    nuclide = nuclide if isinstance(nuclide, str) else None
    error = None
    names = [n for n in (label, tracer_name) if isinstance(n, str) and n]
    for candidate in names:
        try:
            return get_tracer(candidate, radionuclide=nuclide, strict=True)
        except NotPetError:
            raise
        except UnknownTracerError as exc:
            error = error or exc
    if not names:
        raise UnknownTracerError("no trc- label and no TracerName in the sidecar")
    windows, references = windows or {}, references or {}
    if len(names) == 2 and _key(names[0]) == _key(names[1]):
        names = names[1:]  # trc-AZ10419369 and TracerName "AZ-10419369": keep the name
    for candidate in names:
        placeholder = _placeholder(candidate)
        window = session_window(windows, placeholder, None)
        scoped = any(names_tracer(k.rpartition(":")[2], placeholder) for k in windows)
        reference = [k for k in references if names_tracer(k, placeholder)]
        if window is not None or scoped or reference:
            tracer = unknown_tracer(candidate, nuclide, window=window,
                                    reference=references[reference[0]] if reference else None)
            register_tracer(tracer)
            return tracer
    raise error


def _placeholder(name: str) -> Tracer:
    return Tracer(name=name, family=UNKNOWN_FAMILY, radionuclide="", half_life_min=1.0,
                  window_min=None, reference=None)


def unknown_tracer(name: str, radionuclide: str | None, *, window=None,
                   reference: str | None = None) -> Tracer:
    """A tracer named nowhere, run with a user window (or none: whole image) and reference.

    >>> t = unknown_tracer("UCBJ", "C11", window=(60, 90))
    >>> t.family, t.half_life_min, t.window_min, t.reference, t.known
    ('unknown', 20.364, (60.0, 90.0), None, False)
    >>> t = unknown_tracer("AZ-10419369", "C11")
    >>> t.name, t.label
    ('AZ-10419369', 'AZ10419369')
    """
    if (not isinstance(name, str) or not tracer_label(name)
            or any(not ch.isprintable() for ch in name)):
        raise UnknownTracerError(f"tracer name {name!r} is not usable (one line of text with "
                                 "letters or digits)")
    half_life = half_life_of(radionuclide)
    if half_life is None:
        raise UnknownTracerError(
            f"tracer {name!r}: TracerRadionuclide {radionuclide!r} is not a known PET "
            f"radionuclide ({', '.join(PET_HALF_LIVES_MIN)}); describe the tracer in a "
            "--tracer-file table")
    if window is not None:
        start, end = (float(v) for v in window)
        window = (start, end)
    return Tracer(name=name, family=UNKNOWN_FAMILY, radionuclide=str(radionuclide),
                  half_life_min=half_life, window_min=window, reference=reference,
                  origin="unknown tracer (user options)")
