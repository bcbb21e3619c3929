"""Reliability of the v2 ensemble's uncertainty: observed vs nominal interval coverage.

    python benchmarks/accuracy/calibration.py benchmarks/accuracy/RESULTS-gpu.json [--png FILE]

Reads the rows of an accuracy-benchmark run (``run.py`` stores, per v2 case, the regional log
errors against PET-CT ``reg_err``, the ensemble's raw regional SDs ``reg_sd`` and the card's
calibration ``cal_scale``) and prints, per test set, the fraction of regional errors inside
the central interval ``+- z(level) * scale * sd`` for several nominal levels, with a 95 %
bootstrap interval over subjects at 90 %, as a Markdown table; ``--png`` draws the
reliability diagram (observed against nominal coverage; the diagonal is perfect
calibration).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95)
BOOTSTRAP = 2000


def z_value(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def cases(rows):
    """(group, subject, |err| array, scaled sd array) of every v2 row with regional data."""
    out = []
    for r in rows:
        if r.get("method") != "v2" or not r.get("reg_err"):
            continue
        err = np.abs(np.asarray(r["reg_err"], dtype=float))
        sd = float(r.get("cal_scale", 1.0)) * np.asarray(r["reg_sd"], dtype=float)
        out.append((r["group"], r["subject"], err, sd))
    return out


def coverage(items, level):
    z = z_value(level)
    inside = np.concatenate([e <= z * s for _, _, e, s in items])
    return float(inside.mean()), int(inside.size)


def subject_ci(items, level, seed=0):
    """95 % bootstrap interval over subjects of the pooled coverage at ``level``."""
    z = z_value(level)
    by_subject = {}
    for _, subject, e, s in items:
        n_in, n = by_subject.get(subject, (0, 0))
        by_subject[subject] = (n_in + int((e <= z * s).sum()), n + e.size)
    counts = np.array(list(by_subject.values()), dtype=float)
    if len(counts) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(BOOTSTRAP, len(counts)))
    boots = counts[draws, 0].sum(1) / counts[draws, 1].sum(1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def table(rows) -> tuple[str, dict]:
    items = cases(rows)
    groups = list(dict.fromkeys(g for g, *_ in items))
    curves = {}
    lines = ["| test set | regional errors | " + " | ".join(f"{100 * lv:.0f} %" for lv in LEVELS)
             + " | 90 % [95 % CI over subjects] |",
             "|---|---|" + "---|" * len(LEVELS) + "---|"]
    for g in groups:
        sub = [c for c in items if c[0] == g]
        cov = [coverage(sub, lv)[0] for lv in LEVELS]
        curves[g] = cov
        lo, hi = subject_ci(sub, 0.9)
        ci = "—" if lo is None else f"{100 * cov[LEVELS.index(0.9)]:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
        lines.append(f"| {g} | {coverage(sub, 0.9)[1]} | " + " | ".join(f"{100 * c:.0f} %" for c in cov)
                     + f" | {ci} |")
    return "\n".join(lines), curves


def plot(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    ax.axhspan(0.85, 0.95, xmin=0.85, xmax=0.95, color="green", alpha=0.15)
    for group, cov in curves.items():
        ax.plot(LEVELS, cov, marker="o", label=group)
    ax.set_xlabel("nominal coverage of the interval")
    ax.set_ylabel("observed coverage (regional errors vs PET-CT)")
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("v2 ensemble, calibrated", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="RESULTS*.json of benchmarks/accuracy/run.py")
    parser.add_argument("--png", type=Path, default=None, help="write the reliability diagram here")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    text, curves = table(data["rows"])
    if not curves:
        print(f"{args.results}: no v2 rows with regional errors and SDs (run without an ensemble, "
              "or before the rows carried them)", file=sys.stderr)
        return 1
    print(text)
    if args.png:
        plot(curves, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
