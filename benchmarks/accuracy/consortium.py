"""The paper's problem at the paper's size: a consortium, end to end (issue 20 part 5).

    python benchmarks/accuracy/consortium.py --work /scratch/cons                 # 30 + 60 subjects
    python benchmarks/accuracy/consortium.py --work /scratch/cons --print-slurm cons.sh
    python benchmarks/accuracy/consortium.py --work /scratch/cons --stages score   # re-score

Through the product's own commands, nothing in memory, each a separate stage that is
skipped when its outputs are there (rerun the same command to resume):

1. ``synth``: ``bids_harmonize-synth --consortium paper`` writes a **training cohort**
   (``--train-per-site`` subjects per site, seed 401) and a disjoint **test cohort**
   (``--test-per-site``, seed 402): the preset's 3 sites, each with its PET-CT, PET-MR,
   attenuation-correction setups, protocol timing and ``InstitutionName``, and a
   memory-clinic amyloid cohort (``bids_harmonize/data/consortia.yaml``);
2. ``participant-train``: ``participant --no-harmonization`` on the training cohort, one
   subject at a time (``--common-resolution 8`` by default, the README demo's
   ``--sloppy`` and ``MNI152NLin2009aSym``);
3. ``train``: the ``train`` level fits the consortium's own model on those outputs;
4. ``participant-test``: ``participant`` with that model on the test cohort;
5. ``group``: ``group`` on the test cohort (and on the training cohort, whose raw tables
   fit the ComBat baseline, one batch per site);
6. ``score``: the test cohort's group tables against the same subject's PET-CT, with the
   end-to-end benchmark's scoring (``end_to_end.score_output``, ``summarise_block``: one
   implementation), per site and overall: mean |dCL| raw, ComBat and harmonized with
   95 % bootstrap intervals over subjects, the signed mean, Bland-Altman bias and limits,
   Cohen's kappa of amyloid status at 20.1 CL (each method against PET-CT) with its
   bootstrap interval, harmonized - raw paired over the same subjects (its upper bound
   decides "no site worse than raw"), and regional SUVR as ``end_to_end.py`` scores it.
   Writes ``CONSORTIUM.md``, ``CONSORTIUM.json`` and ``CONSORTIUM_cases.tsv`` (``--results``).

Every stage prints progress lines (one per subject, with the time left) and adds its wall
time to ``WORK/timings.json`` (the cost model in benchmarks/README.md). ``--print-slurm``
writes a shell script that runs the same stages on a cluster: the two participant levels
as ``bids_harmonize-slurm`` job arrays, ``train`` as its training job, the group jobs and
the scoring chained with ``sbatch --dependency=afterok``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _end_to_end():
    """end_to_end.py beside this file (a script, not a package; sys.path is left alone)."""
    if "end_to_end" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "end_to_end", Path(__file__).resolve().with_name("end_to_end.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["end_to_end"] = module
        spec.loader.exec_module(module)
    return sys.modules["end_to_end"]


_e2e = _end_to_end()
CUTOFF_CL, METHODS = _e2e.CUTOFF_CL, _e2e.METHODS
_ci, apply_combat, fit_combat = _e2e._ci, _e2e.apply_combat, _e2e.fit_combat
training_cases = _e2e.training_cases
score_output, summarise_block = _e2e.score_output, _e2e.summarise_block

LOGGER = logging.getLogger("consortium")

CONSORTIUM = "paper"
SEEDS = {"train": 401, "test": 402}  #: never the demo model's (100) or end_to_end's (201-203)
STAGES = ("synth", "participant-train", "train", "participant-test", "group", "score")
#: issue 20, after harmonization (end-to-end, scenario B)
TARGETS = {"overall_abs_dcl": 4.1, "site_abs_dcl": 5.0, "kappa": 0.9}
OUTPUT_SPACES = ("MNI152NLin2009aSym", "T1w")


# ---------------------------------------------------------------------------- commands


def n_sites(consortium: str = CONSORTIUM) -> int:
    from bids_harmonize.synth.consortium import load_consortium

    return len(load_consortium(consortium).sites)


def preset_digest(consortium: str = CONSORTIUM) -> str:
    """16 hex digits of the consortium definition the simulator reads (its sites, protocols
    and cohort): a changed preset, e.g. a new ``protocol.session_sd``, is a changed cohort.

    >>> len(preset_digest()) == 16 and preset_digest() == preset_digest()
    True
    """
    import hashlib

    from bids_harmonize.synth.consortium import load_consortium

    return hashlib.sha256(repr(load_consortium(consortium)).encode()).hexdigest()[:16]


def synth_command(args, cohort: str) -> list[str]:
    per_site = args.train_per_site if cohort == "train" else args.test_per_site
    return ["bids_harmonize-synth", str(args.work / cohort / "bids"), "--consortium",
            args.consortium, "--subjects", str(per_site * n_sites(args.consortium)),
            "--tracers", args.tracers, "--seed", str(SEEDS[cohort]), "--jobs", str(args.jobs),
            "--overwrite", "-q"]


def participant_args(args, cohort: str) -> list[str]:
    """The participant level's options (besides the positionals, labels and resources)."""
    extra = ["--output-spaces", *OUTPUT_SPACES, "--skip-bids-validation", "--omp-nthreads", "1"]
    if args.sloppy:
        extra.append("--sloppy")
    if args.common_resolution:
        extra += ["--common-resolution", f"{args.common_resolution:g}"]
    if cohort == "train":
        extra.append("--no-harmonization")
    else:
        extra += ["--model-dir", str(args.work / "model")]
    return extra


def participant_command(args, cohort: str, label: str) -> list[str]:
    root = args.work / cohort
    return ["bids_harmonize", str(root / "bids"), str(root / "out"), "participant",
            "--participant-label", label, "-w", str(root / "work"), "--nprocs", str(args.nprocs),
            *participant_args(args, cohort)]


def train_args(args) -> list[str]:
    extra = ["--model-dir", str(args.work / "model"), "--overwrite-model",
             "--ensemble-members", str(args.ensemble_members),
             "--calibration-subjects", str(args.calibration_subjects),
             "--seed", str(SEEDS["train"]), "--train-batch-size", str(args.batch_size)]
    if args.train_steps_scale != 1:
        extra += ["--train-steps-scale", f"{args.train_steps_scale:g}"]
    return extra


def train_command(args) -> list[str]:
    root = args.work / "train"
    return ["bids_harmonize", str(root / "bids"), str(root / "out"), "train", *train_args(args),
            "--omp-nthreads", str(args.nprocs), "--device", args.device]


def group_command(args, cohort: str) -> list[str]:
    root = args.work / cohort
    return ["bids_harmonize", str(root / "bids"), str(root / "out"), "group"]


# ---------------------------------------------------------------------------- running


def participants(bids: Path) -> pd.DataFrame:
    """``participants.tsv`` with ``label`` (no ``sub-``) and ``site``."""
    table = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    table["label"] = table["participant_id"].str.removeprefix("sub-")
    return table


def participant_done(out: Path, label: str) -> bool:
    """A participant that finished ``ok`` (its status record, no ``.incomplete`` marker)."""
    from bids_harmonize import runstatus

    record = runstatus.status_path(out, label)
    if not record.is_file() or not runstatus.is_complete(out, label):
        return False
    try:
        return json.loads(record.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def model_digest(model: Path) -> str | None:
    card = model / "model.json"
    return hashlib.sha256(card.read_bytes()).hexdigest()[:16] if card.is_file() else None


def model_recipe(model: Path) -> dict:
    """What the trained model's card says about its recipe and its guard: steps per epoch
    and epochs of the three stages, and the guard's strength ``k`` per attenuation setup
    (``inf`` = correction switched off)."""
    card = json.loads((model / "model.json").read_text())
    stages = [card["config"][f"stage{i}"] for i in (1, 2, 3)]
    guard = card.get("guard") or {}
    return {"steps_per_epoch": [st["steps_per_epoch"] for st in stages],
            "epochs": [st["epochs"] for st in stages],
            "guard_k": {setup: str(v["k"]) for setup, v in sorted(guard.get("by_setup", {}).items())}}


class Runner:
    """Runs commands with their output in a log file, and keeps ``timings.json``."""

    def __init__(self, work: Path):
        self.work = work
        self.env = {**os.environ, "TEMPLATEFLOW_HOME": str(work / "templateflow")}
        self.timings_path = work / "timings.json"
        self.timings = (json.loads(self.timings_path.read_text())
                        if self.timings_path.is_file() else {})

    def run(self, cmd: list[str], log: Path, *, ok_codes=(0,)) -> tuple[int, float]:
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log, "a") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n")
            fh.flush()
            rc = subprocess.run(["nice", "-n", str(NICE), *cmd], env=self.env, stdout=fh,
                                stderr=subprocess.STDOUT, check=False).returncode
        return rc, time.perf_counter() - t0

    def record(self, stage: str, seconds: float, subjects: dict[str, float] | None = None,
               **extra) -> None:
        """Adds to the stage's time (a resumed stage adds to what was spent before)."""
        entry = self.timings.setdefault(stage, {"seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + seconds, 1)
        if subjects:
            entry.setdefault("per_subject", {}).update(
                {k: round(v, 1) for k, v in subjects.items()})
        entry.update(extra)
        self.timings_path.write_text(json.dumps(self.timings, indent=1) + "\n")


NICE = 0  #: set from --nice


def fail(log: Path, what: str) -> None:
    tail = log.read_text().splitlines()[-15:] if log.is_file() else []
    raise SystemExit(f"{what} failed; last lines of {log}:\n" + "\n".join(tail))


def stage_synth(args, runner: Runner) -> None:
    for cohort in ("train", "test"):
        cmd = synth_command(args, cohort)
        mark = args.work / cohort / "synth.json"
        # what makes the files (not --jobs: the same files for any number of processes)
        key = {k: cmd[cmd.index(k) + 1] for k in ("--consortium", "--subjects", "--tracers", "--seed")}
        key["preset_sha256_16"] = preset_digest(args.consortium)
        if mark.is_file():
            if json.loads(mark.read_text()) != key:
                raise SystemExit(f"[synth] {args.work / cohort} was simulated with other settings "
                                 f"({mark.read_text().strip()}): use another --work")
            LOGGER.info("[synth] %s cohort: already simulated", cohort)
            continue
        n = int(key["--subjects"])
        LOGGER.info("[synth] %s cohort: %d subjects (seed %s) ...", cohort, n, key["--seed"])
        rc, seconds = runner.run(cmd, args.work / cohort / "logs" / "synth.log")
        if rc:
            fail(args.work / cohort / "logs" / "synth.log", f"[synth] {cohort}")
        mark.write_text(json.dumps(key) + "\n")
        runner.record(f"synth-{cohort}", seconds, subjects_n=n, jobs=args.jobs)
        LOGGER.info("[synth] %s cohort: %d subjects in %.0f s (%.1f s per subject, --jobs %d)",
                    cohort, n, seconds, seconds / n, args.jobs)


def stage_participant(args, runner: Runner, cohort: str) -> bool:
    """One subject at a time; returns whether anything ran (the group tables are then stale)."""
    root = args.work / cohort
    stage = f"participant-{cohort}"
    if not (root / "bids" / "participants.tsv").is_file():
        raise SystemExit(f"[{stage}] no {root / 'bids'}: run the synth stage first")
    if cohort == "test":
        digest = model_digest(args.work / "model")
        if digest is None:
            raise SystemExit(f"[{stage}] no model in {args.work / 'model'}: run the train stage first")
        mark = root / "model.txt"
        if mark.is_file() and mark.read_text().strip() != digest:
            raise SystemExit(f"[{stage}] {root / 'out'} was harmonized with another model "
                             f"({mark.read_text().strip()}, now {digest}): remove {root / 'out'} "
                             f"and {root / 'work'} to rerun it")
        mark.write_text(digest + "\n")
    labels = participants(root / "bids")["label"].tolist()
    todo = [lab for lab in labels if not participant_done(root / "out", lab)]
    LOGGER.info("[%s] %d of %d subjects done, %d to run", stage, len(labels) - len(todo),
                len(labels), len(todo))
    spent: dict[str, float] = {}
    for i, label in enumerate(todo, 1):
        log = root / "logs" / f"participant-sub-{label}.log"
        rc, seconds = runner.run(participant_command(args, cohort, label), log)
        spent[label] = seconds
        runner.record(stage, seconds, {label: seconds})
        if not participant_done(root / "out", label):
            fail(log, f"[{stage}] sub-{label} (exit {rc})")
        mean = sum(spent.values()) / len(spent)
        left = (f"about {mean * (len(todo) - i) / 60:.0f} min left" if i < len(todo)
                else f"all done, {mean:.0f} s per subject")
        LOGGER.info("[%s] sub-%s (%d/%d): %.0f s; %s", stage, label, i, len(todo), seconds, left)
    return bool(todo)


def stage_train(args, runner: Runner) -> bool:
    mark = args.work / "train.json"
    key = train_args(args)
    if mark.is_file() and model_digest(args.work / "model"):
        if json.loads(mark.read_text()) != key:
            raise SystemExit(f"[train] {args.work / 'model'} was trained with other settings "
                             f"({mark.read_text().strip()}): remove it (and test/out) to retrain")
        LOGGER.info("[train] model already trained: %s", args.work / "model")
        return False
    LOGGER.info("[train] training the consortium's model on the training cohort "
                "(progress in %s) ...", args.work / "train" / "logs" / "train.log")
    log = args.work / "train" / "logs" / "train.log"
    rc, seconds = runner.run(train_command(args), log)
    if rc or model_digest(args.work / "model") is None:
        fail(log, f"[train] (exit {rc})")
    mark.write_text(json.dumps(key) + "\n")
    runner.record("train", seconds, subjects_n=len(participants(args.work / "train" / "bids")),
                  steps_scale=args.train_steps_scale)
    LOGGER.info("[train] done in %.0f s", seconds)
    return True


def stage_group(args, runner: Runner, stale: set[str]) -> None:
    for cohort in ("train", "test"):
        root = args.work / cohort
        mark = root / "group.done"
        if cohort in stale:
            mark.unlink(missing_ok=True)
        if mark.is_file() and (root / "out" / "group" / "regions_suvr.tsv").is_file():
            LOGGER.info("[group] %s cohort: already done", cohort)
            continue
        if not (root / "out").is_dir():
            LOGGER.warning("[group] %s cohort: no participant outputs yet", cohort)
            continue
        log = root / "logs" / "group.log"
        rc, seconds = runner.run(group_command(args, cohort), log)
        if rc:
            fail(log, f"[group] {cohort} (exit {rc})")
        mark.write_text("ok\n")
        runner.record(f"group-{cohort}", seconds)
        LOGGER.info("[group] %s cohort: %.0f s", cohort, seconds)


# ---------------------------------------------------------------------------- ComBat per site


def site_combat(training_out: Path, sites: dict[str, str], min_cases: int = 3):
    """ComBat with one batch per site: a function from the raw PET-MR wide table to its
    adjusted twin, fitted on the training cohort's raw group tables (``fit_combat`` of
    end_to_end.py, PET-CT as the reference batch). A site with fewer than ``min_cases``
    training cases gets the model fitted on all sites together. ``None`` without tables.
    ``sites``: subject label -> site, of the cohort the function will be applied to;
    the training cohort's own labels are read from its participants.tsv."""
    cases = training_cases(training_out)
    if cases is None:
        return None, {}
    ct, mr = cases
    keys = ct.index
    train_sites = participants(training_out.parent / "bids").set_index("label")["site"]
    if len(keys) < min_cases:
        LOGGER.warning("ComBat left out: %d training cases (needs %d)", len(keys), min_cases)
        return None, {}
    pooled = fit_combat(ct, mr)
    models, fitted_on = {}, {}
    for site in sorted(set(sites.values())):
        k = keys[[train_sites.get(_label(s)) == site for s, _ in keys]]
        if len(k) >= min_cases:
            models[site], fitted_on[site] = fit_combat(ct.loc[k], mr.loc[k]), f"site {site}"
        else:
            models[site], fitted_on[site] = pooled, "all sites (too few cases at the site)"
        LOGGER.info("ComBat for site %s: fitted on %s (%d cases at the site)", site,
                    fitted_on[site], len(k))

    def adjust(raw: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for site, model in models.items():
            rows = raw[[sites.get(_label(s)) == site for s, _ in raw.index]]
            if len(rows):
                parts.append(apply_combat(model, rows))
        return pd.concat(parts).sort_index() if parts else raw.iloc[0:0]

    return adjust, fitted_on


def _label(subject: str) -> str:
    return str(subject).removeprefix("sub-")


# ---------------------------------------------------------------------------- scoring


def no_worse(block: dict, margin: float = 0.0) -> dict:
    """Harmonized - raw mean |dCL|, paired over the same subjects: the site is "not worse
    than raw" when the upper end of the 95 % bootstrap interval is at most ``margin`` CL.

    >>> no_worse({"paired": {"harmonized - raw": {"abs_dcl": (-2.0, -3.0, -0.5)}}})
    {'difference': -2.0, 'upper': -0.5, 'not_worse': True}
    >>> no_worse({"paired": {"harmonized - raw": {"abs_dcl": (0.5, -1.0, 2.0)}}})["not_worse"]
    False
    """
    d = block.get("paired", {}).get("harmonized - raw", {}).get("abs_dcl")
    if d is None or not np.isfinite(d[2]):
        return {"difference": np.nan, "upper": np.nan, "not_worse": None}
    return {"difference": float(d[0]), "upper": float(d[2]), "not_worse": bool(d[2] <= margin)}


def summarise_sites(cases: pd.DataFrame, margin: float = 0.0) -> dict:
    """``{"all": block, site: block, ...}`` of :func:`end_to_end.summarise_block`, each
    with its :func:`no_worse` verdict."""
    blocks = {"all": summarise_block(cases)}
    for site in sorted(cases["site"].dropna().unique()):
        blocks[str(site)] = summarise_block(cases[cases["site"] == site])
    for block in blocks.values():
        block["no_worse_than_raw"] = no_worse(block, margin)
    return blocks


def targets(blocks: dict) -> list[dict]:
    """Issue 20's targets after harmonization, each with the measured value and whether met."""

    def get(block, method, key):
        return block["methods"].get(method, {}).get(key)

    rows = []
    overall = get(blocks["all"], "harmonized", "abs_dcl")
    rows.append({"target": f"mean |dCL| overall <= {TARGETS['overall_abs_dcl']} CL",
                 "measured": f"{overall[0]:.1f} CL" if overall else "n/a",
                 "met": bool(overall and overall[0] <= TARGETS["overall_abs_dcl"])})
    sites = {k: b for k, b in blocks.items() if k != "all"}
    per_site = {k: get(b, "harmonized", "abs_dcl") for k, b in sites.items()}
    rows.append({"target": f"mean |dCL| <= {TARGETS['site_abs_dcl']:g} CL at every site",
                 "measured": ", ".join(f"{k} {v[0]:.1f}" for k, v in per_site.items() if v),
                 "met": bool(per_site) and all(v and v[0] <= TARGETS["site_abs_dcl"]
                                               for v in per_site.values())})
    kappa = get(blocks["all"], "harmonized", "kappa")
    ci = get(blocks["all"], "harmonized", "kappa_ci") or (np.nan, np.nan)
    rows.append({"target": f"amyloid status kappa (harmonized vs PET-CT) >= {TARGETS['kappa']}",
                 "measured": (f"{kappa:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
                              if kappa is not None and np.isfinite(kappa) else "n/a"),
                 "met": bool(kappa is not None and np.isfinite(kappa) and kappa >= TARGETS["kappa"])})
    verdicts = {k: b["no_worse_than_raw"] for k, b in sites.items()}
    rows.append({"target": "no site worse than raw (paired harmonized - raw |dCL|, upper 95 % "
                           "bound <= 0)",
                 "measured": ", ".join(f"{k} {v['upper']:+.1f}" for k, v in verdicts.items()
                                       if np.isfinite(v["upper"])) or "n/a",
                 "met": bool(verdicts) and all(v["not_worse"] for v in verdicts.values())})
    return rows


def _num(x, fmt="{:+.1f}") -> str:
    return fmt.format(x) if x is not None and np.isfinite(x) else "n/a"


def markdown(blocks: dict, target_rows: list[dict], meta: dict) -> str:
    lines = [f"Consortium benchmark ({meta['date']}, preset `{meta['consortium']}`, training "
             f"{meta['train_subjects']} subjects (seed {SEEDS['train']}), test "
             f"{meta['test_subjects']} subjects (seed {SEEDS['test']}), tracers {meta['tracers']}, "
             f"common resolution {meta['common_resolution']}, train steps scale "
             f"{meta['train_steps_scale']:g}; {meta['machine']})", "",
             *([f"Model: stages ct/mri/residual {'/'.join(map(str, m['epochs']))} epochs of "
                f"{'/'.join(map(str, m['steps_per_epoch']))} steps; do-no-harm guard k per "
                "setup (0 = full correction, inf = off): "
                + (", ".join(f"{s} {k}" for s, k in m["guard_k"].items()) or "none"), ""]
               if (m := meta.get("model")) else []),
             *([f"**Machinery check at a tiny size ({meta['test_subjects']} test subjects, train "
                f"steps scale {meta['train_steps_scale']:g}): it shows that every stage runs and "
                "the tables come out; it is not an accuracy result.**", ""]
               if meta["test_subjects"] < 60 or meta["train_steps_scale"] < 1 else []),
             f"Centiloid, PET-MR against the same subject's PET-CT (mean |dCL| with 95 % "
             f"bootstrap CI over subjects; signed mean = Bland-Altman bias; limits of agreement; "
             f"Cohen's kappa of amyloid status at {CUTOFF_CL} CL against PET-CT's status, with "
             f"its bootstrap CI; class changes):", "",
             "| site | n | method | mean abs dCL | mean dCL (bias) | LoA | kappa | class changes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, b in blocks.items():
        for k in METHODS:
            e = b["methods"].get(k, {})
            if "abs_dcl" not in e:
                continue
            kci = e.get("kappa_ci", (np.nan, np.nan))
            kappa = (f"{e['kappa']:.2f} [{kci[0]:.2f}, {kci[1]:.2f}]" if np.isfinite(kci[0])
                     else _num(e["kappa"], "{:.2f}"))
            lines.append(f"| {name} | {b['n_subjects']} | {k} | {_ci(e['abs_dcl'], 1)} | "
                         f"{_num(e['bias'])} | {_num(e['loa'][0])} / {_num(e['loa'][1])} | "
                         f"{kappa} | {e['class_changes']} of {e['n_amyloid_cases']} |")
        p = b["paired"].get("harmonized - raw", {})
        if "abs_dcl" in p:
            verdict = {True: "not worse", False: "worse not excluded", None: "n/a"}[
                b["no_worse_than_raw"]["not_worse"]]
            lines.append(f"| {name} | | paired harmonized - raw | {_ci(p['abs_dcl'], 1)} | | | | "
                         f"{verdict} |")
    lines += ["", "Regional SUVR, mean absolute difference to PET-CT over the synth atlas' "
              "regions outside the reference region, % (95 % bootstrap CI):", "",
              "| site | raw | ComBat | harmonized | harmonized - raw (paired) |",
              "|---|---|---|---|---|"]
    for name, b in blocks.items():
        m, p = b["methods"], b["paired"]
        lines.append(f"| {name} | " + " | ".join(
            _ci(m[k]["mean_abs_pct"]) if k in m else "n/a" for k in METHODS) + " | "
            + (_ci(p["harmonized - raw"]["mean_abs_pct"]) if "harmonized - raw" in p else "n/a")
            + " |")
    lines += ["", "Per PET-MR setup (regional SUVR %, all sites):", "",
              "| setup | raw | ComBat | harmonized |", "|---|---|---|---|"]
    for setup, e in blocks["all"]["per_setup"].items():
        lines.append(f"| {setup} | " + " | ".join(_ci(e[k]) if k in e else "n/a"
                                                  for k in METHODS) + " |")
    lines += ["", "Issue 20's targets after harmonization:", "",
              "| target | measured | met |", "|---|---|---|"]
    for row in target_rows:
        cell = row["target"].replace("|", "\\|")  # |dCL| inside a table cell
        lines.append(f"| {cell} | {row['measured']} | {'yes' if row['met'] else '**no**'} |")
    total = sum(t["seconds"] for t in meta["timings"].values())
    lines += ["", f"Wall time per stage (s; this run's machine; per subject where the stage "
              f"runs per subject; {total / 60:.0f} min in all):", "",
              "| stage | seconds | per subject |", "|---|---|---|"]
    for stage, t in meta["timings"].items():
        per = t.get("per_subject")
        n = len(per) if per else t.get("subjects_n")
        lines.append(f"| {stage} | {t['seconds']:.0f} | "
                     + (f"{t['seconds'] / n:.0f} (n = {n})" if n else "") + " |")
    if meta.get("combat"):
        lines += ["", "ComBat: " + "; ".join(f"site {k} fitted on {v}"
                                             for k, v in meta["combat"].items()) + "."]
    return "\n".join(lines) + "\n"


def score(args, runner: Runner) -> int:
    test_out = args.work / "test" / "out"
    table = participants(args.work / "test" / "bids")
    sites = dict(zip(table["label"], table["site"], strict=True))
    combat, fitted_on = site_combat(args.work / "train" / "out", sites)
    rows = score_output(test_out, {"consortium": tuple(args.tracers.split(","))}, combat)
    if not rows:
        raise SystemExit(f"[score] nothing to score: no {test_out / 'group' / 'regions_suvr.tsv'}")
    cases = pd.DataFrame(rows)
    cases.insert(1, "site", cases["subject"].map(lambda s: sites.get(_label(s))))
    blocks = summarise_sites(cases, margin=0.0)
    target_rows = targets(blocks)
    train_n = len(participants(args.work / "train" / "bids"))
    meta = {"date": time.strftime("%Y-%m-%d"), "consortium": args.consortium,
            "train_subjects": train_n, "test_subjects": len(table), "tracers": args.tracers,
            "common_resolution": (f"{args.common_resolution:g} mm" if args.common_resolution
                                  else "off"),
            "train_steps_scale": args.train_steps_scale,
            "machine": f"{os.cpu_count()} CPU cores, participant --nprocs {args.nprocs}",
            "model_card_sha256_16": model_digest(args.work / "model"),
            "model": model_recipe(args.work / "model"),
            "command": "python benchmarks/accuracy/consortium.py " + shlex.join(sys.argv[1:]),
            "timings": runner.timings, "combat": fitted_on}
    text = markdown(blocks, target_rows, meta)
    print(text)
    stem = args.results
    cases.to_csv(f"{stem}_cases.tsv", sep="\t", index=False, float_format="%.5g")
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "summary": blocks, "targets": target_rows}, indent=1, default=float) + "\n")
    LOGGER.info("[score] wrote %s.{md,json} and %s_cases.tsv", stem, stem)
    return 0


# ---------------------------------------------------------------------------- SLURM


def slurm_script(args) -> str:
    """A bash script that runs the stages on a SLURM cluster (see the module docstring)."""
    q = shlex.quote
    work = args.work.absolute()
    me = Path(__file__).resolve()
    py = q(sys.executable)
    common = [f"--partition={args.partition}"] if args.partition else []
    if args.account:
        common.append(f"--account={args.account}")
    hs_train = " ".join(q(a) for a in (["--partition", args.partition] if args.partition else []) + (
        ["--account", args.account] if args.account else []) + (
        ["--image", str(args.image)] if args.image else []))
    hs_array = hs_train + (f" --max-parallel {args.max_parallel}" if args.max_parallel else "")
    here = [f"--work {q(str(work))}", f"--consortium {q(args.consortium)}",
            f"--train-per-site {args.train_per_site}", f"--test-per-site {args.test_per_site}",
            f"--tracers {q(args.tracers)}", f"--common-resolution {args.common_resolution:g}",
            f"--train-steps-scale {args.train_steps_scale:g}",
            f"--ensemble-members {args.ensemble_members}",
            f"--calibration-subjects {args.calibration_subjects}",
            f"--batch-size {args.batch_size}", f"--results {q(str(args.results.absolute()))}"
            ] + ([] if args.sloppy else ["--no-sloppy"])
    bench = f"{py} {q(str(me))} " + " ".join(here)

    def slurm_args(cohort: str) -> str:
        # paths as the array tasks see them: bids_harmonize-slurm adds the positionals,
        # --participant-label, --nprocs, --mem and -w
        return " ".join(q(a) for a in participant_args(
            argparse.Namespace(**{**vars(args), "work": work}), cohort))

    train_extra = " ".join(q(a) for a in train_args(argparse.Namespace(**{**vars(args), "work": work})))
    cpus, mem = args.slurm_cpus, args.slurm_mem
    sb = " ".join(common)
    return f"""#!/bin/bash
# Consortium benchmark (issue 20 part 5) on SLURM, written by
#   python benchmarks/accuracy/consortium.py ... --print-slurm
# Run it on a login node of a cluster whose compute nodes see {work} and this checkout.
# Stages: simulate (one job, waited for: the arrays need the participant lists), then
# participant (training cohort, array) -> train -> participant (test cohort, array)
# -> group (test cohort; the training cohort's group runs after its array) -> score.
# Resubmitting after a failure: rerun the failed array with
#   bids_harmonize-slurm <bids> <out> --script-dir <dir> --resubmit-failed
# then submit the jobs after it by hand (the sbatch lines below).
set -euo pipefail
WORK={q(str(work))}
mkdir -p "$WORK/slurm"
export TEMPLATEFLOW_HOME="$WORK/templateflow"
[ -d "$TEMPLATEFLOW_HOME/tpl-MNI152NLin2009aSym" ] || bids_harmonize-templates "$TEMPLATEFLOW_HOME"

# 1. both cohorts, {args.jobs} subjects at a time (about 7 CPU-s and 1.3 GB each)
sbatch --wait {sb} --job-name=bh-cons-synth --cpus-per-task={args.jobs} --mem={max(4, 2 * args.jobs)}G \\
    --time=02:00:00 --output="$WORK/slurm/synth-%j.out" \\
    --wrap "{bench} --stages synth --jobs {args.jobs}"

# 2. the recipes (bids_harmonize-slurm checks every field and writes the scripts)
bids_harmonize-slurm "$WORK/train/bids" "$WORK/train/out" --script-dir "$WORK/slurm/train" \\
    --cpus {cpus} --mem {mem} --time {args.slurm_time} {hs_array} \\
    --templateflow-home "$TEMPLATEFLOW_HOME" -- {slurm_args("train")}
bids_harmonize-slurm "$WORK/train/bids" "$WORK/train/out" --level train --script-dir "$WORK/slurm/model" \\
    --cpus {args.train_cpus} --mem {args.train_mem} --gpus {args.train_gpus} --time {args.train_time} \\
    {hs_train} --templateflow-home "$TEMPLATEFLOW_HOME" -- {train_extra}
bids_harmonize-slurm "$WORK/test/bids" "$WORK/test/out" --script-dir "$WORK/slurm/test" \\
    --cpus {cpus} --mem {mem} --time {args.slurm_time} {hs_array} \\
    --templateflow-home "$TEMPLATEFLOW_HOME" -- {slurm_args("test")}

# 3. submit, chained by dependencies
train_array=$(sbatch --parsable {sb} "$WORK/slurm/train/participant.sbatch")
train_group=$(sbatch --parsable {sb} --dependency=afterok:$train_array "$WORK/slurm/train/group.sbatch")
model=$(sbatch --parsable {sb} --dependency=afterok:$train_array "$WORK/slurm/model/train.sbatch")
test_array=$(sbatch --parsable {sb} --dependency=afterok:$model "$WORK/slurm/test/participant.sbatch")
test_group=$(sbatch --parsable {sb} --dependency=afterok:$test_array "$WORK/slurm/test/group.sbatch")
scoring=$(sbatch --parsable {sb} --dependency=afterok:$test_group:$train_group --job-name=bh-cons-score \\
    --cpus-per-task=1 --mem=4G --time=00:30:00 --output="$WORK/slurm/score-%j.out" \\
    --wrap "{bench} --stages score")
echo "training array $train_array, its group $train_group, train $model"
echo "test array $test_array, its group $test_group, scoring $scoring"
echo "results: benchmarks/accuracy/CONSORTIUM.md (from the scoring job's checkout: {me.parent})"
"""


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for cohorts, outputs, model")
    p.add_argument("--consortium", default=CONSORTIUM, help="bids_harmonize-synth --consortium")
    p.add_argument("--train-per-site", type=int, default=10, help="training subjects per site")
    p.add_argument("--test-per-site", type=int, default=20,
                   help="test subjects per site (the issue asks for >= 60 in all)")
    p.add_argument("--tracers", default="PiB", help="comma-separated; amyloid for Centiloid")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="comma-separated stages to run, of: " + ", ".join(STAGES))
    p.add_argument("--common-resolution", type=float, default=8.0,
                   help="participant --common-resolution MM (0: off)")
    p.add_argument("--no-sloppy", dest="sloppy", action="store_false",
                   help="full registration settings (default: --sloppy, as the README demo)")
    p.add_argument("--train-steps-scale", type=float, default=1.0,
                   help="train --train-steps-scale (a tiny value only to check the machinery)")
    p.add_argument("--ensemble-members", type=int, default=2, help="train --ensemble-members")
    p.add_argument("--calibration-subjects", type=int, default=3,
                   help="train --calibration-subjects")
    p.add_argument("--batch-size", type=int, default=8, help="train --train-batch-size")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--nprocs", type=int, default=os.cpu_count() or 1,
                   help="participant --nprocs (one subject at a time) and train threads")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="simulation processes")
    p.add_argument("--nice", type=int, default=0, help="run every command under nice -n N")
    p.add_argument("--results", type=Path, default=Path(__file__).with_name("CONSORTIUM"),
                   help="write <stem>.md, <stem>.json and <stem>_cases.tsv")
    s = p.add_argument_group("SLURM (--print-slurm)")
    s.add_argument("--print-slurm", type=Path, metavar="FILE",
                   help="write the SLURM script for these settings to FILE ('-': stdout) and exit")
    s.add_argument("--partition")
    s.add_argument("--account")
    s.add_argument("--image", type=Path, help="bids_harmonize-slurm --image SIF (default: this venv)")
    s.add_argument("--max-parallel", type=int, help="array tasks at once")
    s.add_argument("--slurm-cpus", type=int, default=2, help="CPUs per participant task")
    s.add_argument("--slurm-mem", type=int, default=8, help="GB per participant task")
    s.add_argument("--slurm-time", default="01:00:00", help="time limit per participant task")
    s.add_argument("--train-cpus", type=int, default=8)
    s.add_argument("--train-mem", type=int, default=32)
    s.add_argument("--train-gpus", type=int, default=0)
    s.add_argument("--train-time", default="08:00:00")
    return p


def main(argv=None) -> int:
    global NICE
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.print_slurm is not None:
        text = slurm_script(args)
        if str(args.print_slurm) == "-":
            sys.stdout.write(text)
        else:
            args.print_slurm.write_text(text)
            args.print_slurm.chmod(0o755)
            LOGGER.info("wrote %s", args.print_slurm)
        return 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)}")
    NICE = args.nice
    args.work = args.work.absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work)
    if set(stages) & {"participant-train", "participant-test"} and not (
            args.work / "templateflow" / "tpl-MNI152NLin2009aSym").is_dir():
        subprocess.run(["bids_harmonize-templates", str(args.work / "templateflow")],
                       check=True, env=runner.env)
    stale: set[str] = set()
    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "synth":
            stage_synth(args, runner)
        elif stage == "participant-train":
            if stage_participant(args, runner, "train"):
                stale.add("train")
        elif stage == "train":
            if stage_train(args, runner):
                stale.add("test")
        elif stage == "participant-test":
            if stage_participant(args, runner, "test"):
                stale.add("test")
        elif stage == "group":
            stage_group(args, runner, stale)
        elif stage == "score":
            return score(args, runner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
