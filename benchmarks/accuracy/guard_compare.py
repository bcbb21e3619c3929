"""The do-no-harm guard on the consortium benchmark: one model, with and without its guard.

    python benchmarks/accuracy/guard_compare.py --base /tmp/cons_guard --variant noguard=/tmp/cons_noguard \
        --variant guarded=/tmp/cons_final [--write benchmarks/accuracy/GUARD]

Each variant is a consortium work folder (``consortium.py --work``) that shares the base
run's training and test cohorts (symbolic links to ``BASE/train`` and ``BASE/test/bids``,
its ``train.json`` and ``test/synth.json``) and has its own ``model`` and test outputs,
scored by ``consortium.py --stages participant-test,group,score`` into its own results
stem. Variants are made by :func:`make_variant`:

* ``--variant NAME=DIR:none`` the base model without its card's ``guard`` block (the
  correction as trained);
* ``--variant NAME=DIR:MODEL`` MODEL (a trained model folder; default the base run's)
  calibrated on the base training cohort's held-out subjects (``--held-out``) with
  ``train --calibrate-model``.

With ``--run`` the variants missing their results are made and scored (about 12 min each
for 12 test subjects on 2 cores); without it, only the table is printed from the results
there. The table: per site, mean |dCL| and regional SUVR % (95 % bootstrap CI) and the
paired difference to raw, from each variant's ``<stem>.json`` (``consortium.score``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _fmt(ci, pct=False) -> str:
    if not ci:
        return "n/a"
    f = "{:.2f}" if pct else "{:.1f}"
    return f"{f.format(ci[0])} [{f.format(ci[1])}, {f.format(ci[2])}]"


def _signed(ci, pct=False) -> str:
    f = "{:+.2f}" if pct else "{:+.1f}"
    return f"{f.format(ci[0])} [{f.format(ci[1])}, {f.format(ci[2])}]"


def table(results: dict[str, Path]) -> str:
    """Markdown table from ``{variant: results json}``; the raw rows come from the first."""
    blocks = {name: json.loads(Path(path).read_text())["summary"] for name, path in results.items()}
    first = next(iter(blocks.values()))
    lines = ["| site | method | mean \\|dCL\\| | paired - raw (CL) | regional SUVR % | paired - raw (%) |",
             "|---|---|---|---|---|---|"]
    for site in first:
        raw = first[site]["methods"]["raw"]
        lines.append(f"| {site} | raw | {_fmt(raw['abs_dcl'])} | | {_fmt(raw['mean_abs_pct'], True)} | |")
        for name, summary in blocks.items():
            h = summary[site]["methods"]["harmonized"]
            p = summary[site]["paired"]["harmonized - raw"]
            lines.append(f"| {site} | {name} | {_fmt(h['abs_dcl'])} | {_signed(p['abs_dcl'])} | "
                         f"{_fmt(h['mean_abs_pct'], True)} | {_signed(p['mean_abs_pct'], True)} |")
    return "\n".join(lines) + "\n"


def make_variant(base: Path, work: Path, model: str, held_out: list[str]) -> None:
    """A variant folder sharing ``base``'s cohorts, with its own model (see module doc)."""
    if work.exists():
        shutil.rmtree(work)
    (work / "test").mkdir(parents=True)
    (work / "templateflow").symlink_to(base / "templateflow")
    (work / "train").symlink_to(base / "train")
    (work / "test" / "bids").symlink_to(base / "test" / "bids")
    for name in ("train.json", "test/synth.json", "timings.json"):
        shutil.copy(base / name, work / name)
    if model == "none":
        shutil.copytree(base / "model", work / "model")
        card_path = work / "model" / "model.json"
        card = json.loads(card_path.read_text())
        card.pop("guard", None)
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        return
    source = Path(model) if model else base / "model"
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(base / "templateflow")}
    subprocess.run(["bids_harmonize", str(base / "train" / "bids"), str(base / "train" / "out"),
                    "train", "--calibrate-model", str(source), "--model-dir", str(work / "model"),
                    "--participant-label", *held_out, "--device", "cpu"], check=True, env=env)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, help="the consortium run's --work (needed with --run)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR[:none|:MODEL]",
                   help="a variant folder (repeat); ':none' without guard, ':MODEL' calibrate "
                   "MODEL; or NAME=RESULTS.json, results already scored")
    p.add_argument("--held-out", default="", help="comma-separated training-cohort labels to "
                   "calibrate on (not in the model's training)")
    p.add_argument("--consortium-args", default="", help="the base run's consortium.py options "
                   "(--train-per-site ... --calibration-subjects ...), for the scoring stages")
    p.add_argument("--run", action="store_true", help="make and score missing variants")
    p.add_argument("--write", type=Path, help="also write the table to <stem>.md")
    args = p.parse_args(argv)
    results = {}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        if rest.endswith(".json"):  # results already scored (e.g. the committed ones)
            results[name] = Path(rest)
            continue
        folder, _, model = rest.partition(":")
        work = Path(folder).absolute()
        stem = work / f"CONSORTIUM_{name.upper()}"
        if args.run and not Path(f"{stem}.json").is_file():
            make_variant(args.base.absolute(), work, model,
                         [s for s in args.held_out.split(",") if s])
            subprocess.run([sys.executable, str(Path(__file__).with_name("consortium.py")),
                            "--work", str(work), *args.consortium_args.split(),
                            "--stages", "participant-test,group,score", "--results", str(stem)],
                           check=True)
        found = Path(f"{stem}.json")
        if not found.is_file():  # scored by hand into another stem
            found = next(iter(sorted(work.glob("CONSORTIUM*.json"))), found)
        results[name] = found
    text = table(results)
    print(text)
    if args.write:
        Path(f"{args.write}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
