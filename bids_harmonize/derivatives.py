"""One derivatives contract: the name of every participant output, for writers and readers.

The specification is ``bids_harmonize/data/io_spec.json`` (as fMRIPrep's
``data/io_spec.json``): the order of the entities in a file name, and every derivative
the participant level writes, with its datatype, its scope (one per subject, session or
PET series), its fixed entities, suffix and extensions. Everything else derives from it:

- the writing side: :func:`path_patterns` (the sink's pybids path patterns) and
  :func:`sink_entities` (the arguments of one ``DerivativesDataSink``);
- the reading side: :func:`collect_derivatives` (every consumer: quantification, group,
  reports, ``train``), :func:`parse_name` and :func:`classify`;
- names: :func:`build_path` / :func:`build_name`, and :func:`series_entities` /
  :func:`node_key`, which identify a PET series by *every* entity (``ses``, ``task``,
  ``acq``, ``trc``, ``rec``, ``run``).

>>> build_path("pet_preproc", subject="01", session="petmr", tracer="PiB", run="2",
...            space="T1w")
'sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_run-2_space-T1w_desc-preproc_pet.nii.gz'
>>> parse_name("sub-01_ses-petmr_trc-PiB_rec-OSEM_seg-synth_desc-harmonized_suvr.tsv")
... # doctest: +NORMALIZE_WHITESPACE
{'subject': '01', 'session': 'petmr', 'tracer': 'PiB', 'reconstruction': 'OSEM',
 'seg': 'synth', 'desc': 'harmonized', 'suffix': 'suvr', 'extension': '.tsv'}
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: Datatype folders of a subject (``figures`` is never inside a session).
DATATYPES = ("anat", "pet", "figures")
_LABEL = re.compile(r"[A-Za-z0-9+]+")
_INDEX = re.compile(r"[0-9]+")


class DerivativeNameError(ValueError):
    """An entity value or a derivative kind that the specification does not allow."""


@lru_cache(maxsize=1)
def load_spec() -> dict:
    """The parsed ``data/io_spec.json`` (read once)."""
    text = resources.files("bids_harmonize.data").joinpath("io_spec.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _tables() -> tuple[tuple[tuple[str, str], ...], dict[str, str], dict[str, str]]:
    spec = load_spec()
    order = tuple((e["name"], e["key"]) for e in spec["entities"])
    return order, {k: n for n, k in order}, {n: k for n, k in order}


@lru_cache(maxsize=1)
def entity_order() -> tuple[str, ...]:
    """Entity names in file-name order (``subject``, ``session``, ... ``desc``)."""
    return tuple(name for name, _ in _tables()[0])


def kinds() -> tuple[str, ...]:
    """Every declared derivative kind, in declaration order."""
    return tuple(load_spec()["derivatives"])


def kind_spec(kind: str) -> dict:
    """The declaration of one derivative kind."""
    try:
        return load_spec()["derivatives"][kind]
    except KeyError:
        raise DerivativeNameError(f"unknown derivative kind {kind!r} (see data/io_spec.json)") \
            from None


@lru_cache(maxsize=1)
def _series_names() -> tuple[str, ...]:
    return tuple(load_spec()["series_entities"])


@lru_cache(maxsize=1)
def _derived_names() -> tuple[str, ...]:
    """Entities the pipeline sets (``from`` ... ``desc``), as opposed to the source's."""
    order = entity_order()
    return order[order.index("run") + 1:]


# --------------------------------------------------------------------------- parsing


def parse_name(filename: str | os.PathLike, *, strict: bool = True) -> dict[str, str] | None:
    """Entities (long names), ``suffix`` and ``extension`` of a file name; ``None`` if not ours.

    A name is ours when every ``key-value`` part has a key of the specification; with
    ``strict=False`` parts with other keys are left out instead (an input file may carry
    entities the outputs do not keep).

    >>> parse_name("sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5")["to"]
    'MNI152NLin2009aSym'
    >>> parse_name("sub-01_ce-gad_T1w.nii.gz") is None
    True
    >>> parse_name("sub-01_ce-gad_T1w.nii.gz", strict=False)
    {'subject': '01', 'suffix': 'T1w', 'extension': '.nii.gz'}
    """
    name = os.path.basename(os.fspath(filename))
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    if len(parts) < 2 or not dot:
        return None
    by_key = _tables()[1]
    out: dict[str, str] = {}
    for part in parts[:-1]:
        key, dash, value = part.partition("-")
        if not dash or not value:
            return None
        if key not in by_key:
            if strict:
                return None
            continue
        out[by_key[key]] = value
    if "subject" not in out or not parts[-1]:
        return None
    out["suffix"] = parts[-1]
    out["extension"] = "." + ext
    return out


def with_tracer(path: str | os.PathLike, label: str) -> Path:
    """The name outputs of a PET series are derived from: the input's, with ``trc-<label>``
    put in its place when the input has no ``trc-`` entity (bids-examples pet005); an input
    that has one is returned unchanged, so its outputs' names never change.

    >>> with_tracer("/d/sub-01/ses-a/pet/sub-01_ses-a_rec-OSEM_run-1_pet.nii.gz", "AZ10419369").name
    'sub-01_ses-a_trc-AZ10419369_rec-OSEM_run-1_pet.nii.gz'
    >>> with_tracer("/d/sub-01_ses-a_trc-PiB_pet.nii.gz", "PIB").name
    'sub-01_ses-a_trc-PiB_pet.nii.gz'
    """
    path = Path(path)
    stem, dot, ext = path.name.partition(".")
    parts = stem.split("_")
    if not label or any(p.startswith("trc-") for p in parts[:-1]):
        return path
    order = entity_order()
    later = set(order[order.index("tracer") + 1:])
    by_key = _tables()[1]
    at = next((i for i, part in enumerate(parts[:-1])
               if by_key.get(part.partition("-")[0]) in later), len(parts) - 1)
    parts.insert(at, f"trc-{_check_value('tracer', label)}")
    return path.with_name("_".join(parts) + dot + ext)


def _matches(value: str | None, wanted) -> bool:
    if wanted == "*":
        return value is not None
    if isinstance(wanted, list):
        return value in wanted
    return value == wanted


def classify(entities: dict[str, str], datatype: str | None = None) -> str | None:
    """The derivative kind a parsed name (and its datatype folder) belongs to, or ``None``.

    Entities set by the pipeline (``space``, ``seg``, ``desc``, ...) must be exactly those
    the kind declares; the source's entities are free, except that a subject-scope output
    has no session.

    >>> classify(parse_name("sub-01_ses-a_trc-PiB_run-1_space-T1w_desc-preproc_pet.nii.gz"),
    ...          "pet")
    'pet_preproc'
    >>> classify(parse_name("sub-01_ses-a_trc-PiB_space-T1w_desc-other_pet.nii.gz"), "pet")
    """
    derived = _derived_names()
    for kind, spec in _by_suffix().get(entities.get("suffix"), ()):
        if datatype is not None and spec["datatype"] != datatype:
            continue
        if entities.get("extension") not in spec["extension"]:
            continue
        fixed = spec["entities"]
        if not all(_matches(entities.get(k), v) for k, v in fixed.items()):
            continue
        if any(k in entities for k in derived if k not in fixed):
            continue
        if spec["scope"] == "subject" and "session" in entities:
            continue
        return kind
    return None


@lru_cache(maxsize=1)
def _by_suffix() -> dict[str, list[tuple[str, dict]]]:
    index: dict[str, list[tuple[str, dict]]] = {}
    for kind, spec in load_spec()["derivatives"].items():
        if "path" not in spec:
            index.setdefault(spec["suffix"], []).append((kind, spec))
    return index


# --------------------------------------------------------------------------- building


def _check_value(name: str, value) -> str:
    value = str(value)
    pattern = _INDEX if name == "run" else _LABEL
    if not pattern.fullmatch(value):
        raise DerivativeNameError(
            f"{name}={value!r}: BIDS {'indices' if name == 'run' else 'labels'} are "
            f"{'digits' if name == 'run' else 'alphanumeric'} only"
        )
    return value


def build_name(kind: str, *, extension: str | None = None, **entities) -> str:
    """The file name of one derivative (entities as long names; ``None`` values dropped).

    Fixed entities of the kind are filled in; the others must be given when the kind
    requires them.

    >>> build_name("suvr", subject="01", session="petct", tracer="FDG", seg="synth",
    ...            desc="preproc")
    'sub-01_ses-petct_trc-FDG_seg-synth_desc-preproc_suvr.tsv'
    >>> build_name("suvr", subject="01", seg="my-atlas", desc="preproc")
    Traceback (most recent call last):
    ...
    bids_harmonize.derivatives.DerivativeNameError: seg='my-atlas': BIDS labels are alphanumeric only
    """
    spec = kind_spec(kind)
    if "path" in spec:
        return Path(spec["path"].format(**entities)).name
    values = {k: v for k, v in entities.items() if v is not None}
    unknown = set(values) - set(entity_order())
    if unknown:
        raise DerivativeNameError(f"{kind}: unknown entities {sorted(unknown)}")
    for key, wanted in spec["entities"].items():
        if isinstance(wanted, str) and wanted != "*":
            if key in values and values[key] != wanted:
                raise DerivativeNameError(f"{kind}: {key} is always {wanted!r}")
            values[key] = wanted
        elif key not in values:
            raise DerivativeNameError(f"{kind}: needs a value for {key!r}")
        elif isinstance(wanted, list) and values[key] not in wanted:
            raise DerivativeNameError(f"{kind}: {key} must be one of {wanted}")
    if "subject" not in values:
        raise DerivativeNameError(f"{kind}: needs a subject")
    if spec["scope"] == "subject":
        values.pop("session", None)
    extension = extension or spec["extension"][0]
    if extension not in spec["extension"]:
        raise DerivativeNameError(f"{kind}: extension {extension!r} not in {spec['extension']}")
    keys = _tables()[2]
    parts = [f"{keys[n]}-{_check_value(n, values[n])}" for n in entity_order() if n in values]
    return "_".join([*parts, spec["suffix"]]) + extension


def build_path(kind: str, *, extension: str | None = None, **entities) -> str:
    """The path of one derivative relative to the output folder (POSIX separators)."""
    spec = kind_spec(kind)
    name = build_name(kind, extension=extension, **entities)
    if "path" in spec:
        return spec["path"].format(**entities)
    folders = [f"sub-{entities['subject']}"]
    if spec["datatype"] != "figures" and spec["scope"] != "subject" \
            and entities.get("session") is not None:
        folders.append(f"ses-{entities['session']}")
    return "/".join([*folders, spec["datatype"], name])


@lru_cache(maxsize=1)
def path_patterns() -> tuple[str, ...]:
    """pybids path patterns of every declared derivative (for ``DerivativesDataSink``).

    Two patterns, data files and figures, with every entity of the specification as an
    optional part, so that no entity of a source file is silently dropped.
    """
    spec = load_spec()
    declared = [d for d in spec["derivatives"].values() if "path" not in d]
    keys = _tables()[0]
    name = "sub-{subject}" + "".join(f"[_{k}-{{{n}}}]" for n, k in keys if n != "subject")

    def pattern(datatypes: list[str], folder: str) -> str:
        chosen = [d for d in declared if d["datatype"] in datatypes]
        suffixes = sorted({d["suffix"] for d in chosen})
        exts = sorted({e for d in chosen for e in d["extension"]})
        return (f"{folder}{{datatype<{'|'.join(datatypes)}>}}/{name}"
                f"_{{suffix<{'|'.join(suffixes)}>}}{{extension<{'|'.join(exts)}>}}")

    data = [t for t in DATATYPES if t != "figures"]
    return (pattern(data, "sub-{subject}[/ses-{session}]/"),
            pattern(["figures"], "sub-{subject}/"))


def sink_entities(kind: str, **overrides) -> dict:
    """Keyword arguments of the ``DerivativesDataSink`` that writes one derivative kind.

    Fixed entities, datatype and suffix come from the specification; ``overrides`` give
    the others (``space``, ``desc`` of a table, ...) and metadata, and are checked against
    it. NIfTI kinds are compressed; others get their extension.

    >>> sorted(sink_entities("t1w_preproc").items())  # doctest: +NORMALIZE_WHITESPACE
    [('compress', True), ('datatype', 'anat'), ('desc', 'preproc'),
     ('dismiss_entities', ['session']), ('suffix', 'T1w')]
    >>> sink_entities("suvr", desc="raw")
    Traceback (most recent call last):
    ...
    bids_harmonize.derivatives.DerivativeNameError: suvr: desc must be one of ['preproc', 'harmonized']
    """
    spec = kind_spec(kind)
    if "path" in spec:
        raise DerivativeNameError(f"{kind} is not written by a sink")
    out: dict = {"datatype": spec["datatype"], "suffix": spec["suffix"]}
    for key, wanted in spec["entities"].items():
        given = overrides.get(key)
        if isinstance(wanted, str) and wanted != "*":
            if given is not None and given != wanted:
                raise DerivativeNameError(f"{kind}: {key} is always {wanted!r}")
            out[key] = wanted
        elif isinstance(wanted, list) and given is not None and given not in wanted:
            raise DerivativeNameError(f"{kind}: {key} must be one of {wanted}")
    extension = overrides.pop("extension", None) or spec["extension"][0]
    if extension not in spec["extension"]:
        raise DerivativeNameError(f"{kind}: extension {extension!r} not in {spec['extension']}")
    if extension.startswith(".nii"):
        out["compress"] = extension.endswith(".gz")
    else:
        out["extension"] = extension
    if spec["scope"] == "subject":
        out["dismiss_entities"] = ["session"]
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


# --------------------------------------------------------------------------- series


def series_entities(entities: dict[str, str]) -> dict[str, str]:
    """The entities that identify a PET series (``session`` ... ``run``), from any name.

    >>> series_entities(parse_name("sub-01_ses-a_trc-PiB_rec-OSEM_seg-synth_desc-preproc_suvr.tsv"))
    {'session': 'a', 'tracer': 'PiB', 'reconstruction': 'OSEM'}
    """
    return {n: entities[n] for n in _series_names() if n in entities}


def bids_keys(entities: dict[str, str]) -> dict[str, str]:
    """Entities by their file-name keys (``sub``, ``ses``, ``trc``, ...); others kept as is.

    >>> bids_keys({"subject": "01", "tracer": "PiB", "suffix": "pet"})
    {'sub': '01', 'trc': 'PiB', 'suffix': 'pet'}
    """
    keys = _tables()[2]
    return {keys.get(n, n): v for n, v in entities.items()}


def series_label(entities: dict[str, str]) -> str:
    """``ses-a_trc-PiB_rec-OSEM``: a series' entities as a file-name fragment."""
    keys = _tables()[2]
    return "_".join(f"{keys[n]}-{v}" for n, v in series_entities(entities).items())


def node_key(entities: dict[str, str]) -> str:
    """A Nipype-safe node-name fragment from every entity of a PET series.

    >>> node_key({"session": "petmr", "tracer": "PiB"})
    'ses_petmr_trc_PiB'
    >>> node_key({"session": "petmr", "tracer": "PiB", "reconstruction": "OSEM", "run": "2"})
    'ses_petmr_trc_PiB_rec_OSEM_run_2'
    """
    keys = _tables()[2]
    parts = [f"{keys[n]}_{re.sub(r'[^A-Za-z0-9]', '', str(v))}"
             for n, v in series_entities(entities).items()]
    return "_".join(parts) or "series"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Derivative:
    """One participant output file: its path, kind and entities (long names)."""

    path: Path
    kind: str
    entities: dict[str, str] = field(hash=False, compare=False)

    @property
    def series(self) -> tuple[tuple[str, str], ...]:
        """The PET series it belongs to, hashable (``(("session", "a"), ...)``)."""
        return tuple(series_entities(self.entities).items())

    @property
    def sidecar(self) -> Path:
        """The JSON sidecar path of a NIfTI or table (may not exist)."""
        return self.path.with_name(self.path.name.split(".")[0] + ".json")

    def metadata(self) -> dict:
        """The JSON sidecar as a dict (the file itself for a ``.json`` derivative).

        Raises :class:`ValueError` naming the file when it is missing or not a JSON object.
        """
        path = self.path if self.path.suffix == ".json" else self.sidecar
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable sidecar ({exc})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: sidecar is not a JSON object")
        return meta

    def get(self, name: str, default=None):
        return self.entities.get(name, default)


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:  # unreadable folder: its files are not found, and we say so
        LOGGER.warning("%s: cannot list this folder (%s); its outputs are ignored", path,
                       exc.strerror or exc)
        return []


def list_subjects(output_dir: str | os.PathLike) -> list[str]:
    """Labels of the ``sub-*`` folders of an output folder, sorted."""
    return [e.name[4:] for e in _scandir(os.fspath(output_dir))
            if e.name.startswith("sub-") and e.is_dir()]


def _want(value, wanted) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str | int):
        return value is not None and str(value) == str(wanted)
    return value in {str(w) for w in wanted}


def collect_derivatives(output_dir: str | os.PathLike, *, subject=None,
                        kinds: Iterable[str] | None = None,
                        **filters) -> list[Derivative]:
    """Every declared participant output under ``output_dir``, sorted by path.

    Parameters
    ----------
    subject
        A label or labels (without ``sub-``); default every ``sub-*`` folder.
    kinds
        Derivative kinds of ``data/io_spec.json`` to keep; default all.
    filters
        Entity (long name, or ``suffix``/``extension``) -> value or list of values.

    Files whose names the specification does not declare are ignored; a file in a
    session folder whose name names another session or subject is ignored too.
    """
    root = os.fspath(output_dir)
    wanted_kinds = set(kinds) if kinds is not None else None
    if wanted_kinds is not None:
        for kind in wanted_kinds:
            kind_spec(kind)
    unknown = set(filters) - set(entity_order()) - {"suffix", "extension", "datatype"}
    if unknown:
        raise DerivativeNameError(f"unknown entity filters {sorted(unknown)}")
    if subject is None:
        subjects = list_subjects(root)
    else:
        subjects = [subject] if isinstance(subject, str) else list(subject)
        subjects = [s.removeprefix("sub-") for s in subjects]
    declared = load_spec()["derivatives"]
    reports = {k for k, d in declared.items() if "path" in d}
    datatypes = {d["datatype"] for k, d in declared.items() if "path" not in d
                 and (wanted_kinds is None or k in wanted_kinds)}
    found: list[Derivative] = []
    for sub in subjects:
        sub_dir = os.path.join(root, f"sub-{sub}")
        folders = [(os.path.join(sub_dir, dt), dt, None) for dt in DATATYPES
                   if dt in datatypes]
        for entry in _scandir(sub_dir):
            if entry.name.startswith("ses-") and entry.is_dir():
                folders += [(os.path.join(entry.path, dt), dt, entry.name[4:])
                            for dt in DATATYPES if dt != "figures" and dt in datatypes]
        for folder, datatype, session in folders:
            for entry in _scandir(folder):
                ent = parse_name(entry.name)
                if ent is None or ent["subject"] != sub or ent.get("session") != session \
                        and session is not None:
                    continue
                kind = classify(ent, datatype)
                if kind is None or (wanted_kinds is not None and kind not in wanted_kinds):
                    continue
                ent = {**ent, "datatype": datatype}
                if all(_want(ent.get(k), v) for k, v in filters.items()):
                    found.append(Derivative(Path(entry.path), kind, ent))
        for kind in sorted(reports):
            if wanted_kinds is not None and kind not in wanted_kinds:
                continue
            path = os.path.join(root, load_spec()["derivatives"][kind]["path"].format(
                subject=sub))
            if os.path.isfile(path) and not filters:
                found.append(Derivative(Path(path), kind, {"subject": sub}))
    found.sort(key=lambda d: str(d.path))
    return found
