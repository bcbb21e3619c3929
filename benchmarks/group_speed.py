"""Speed of the group level on many simulated participant tables.

Writes participant outputs (the files ``run_group`` reads: per subject a PET-CT
session and a PET-MR session, raw and harmonized ``*_suvr.tsv`` / ``*_measures.tsv``
on the 24-label synth atlas plus composites, and the PET sidecars) into a temporary
folder, then times ``run_group`` (tables and statistics) and the HTML report.

    python benchmarks/group_speed.py                    # 1,667 and 10,000 subjects
    python benchmarks/group_speed.py --subjects 500 --keep /tmp/bench

Each subject has 3 images x 2 tables = 6 participant tables (+ 2 sidecars), so
1,667 subjects are ~10,000 tables and 10,000 subjects are 60,000 tables.

Columns: wall-clock seconds, and CPU seconds of this process and of the worker
processes that parse the tables (above 2,000 participants). On a shared machine the
wall time depends on the load (last column); the CPU seconds do much less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bids_harmonize.atlas import COMPOSITES, synth_label_table
from bids_harmonize.group.run import run_group
from bids_harmonize.quant.measures import MEASURE_COLUMNS
from bids_harmonize.quant.regional import REGION_COLUMNS
from bids_harmonize.reports.group import write_group_report

REGIONS = [str(n) for n in synth_label_table()["name"]]
INDEX = [int(i) for i in synth_label_table()["index"]]
COMPOSITE_NAMES = [c for c in COMPOSITES if c != "whole_brain"] + ["whole_brain"]


def _suvr_text(suvr: np.ndarray, comp: np.ndarray) -> str:
    lines = ["\t".join(REGION_COLUMNS)]
    for name, idx, v in zip(REGIONS, INDEX, suvr, strict=True):
        lines.append(f"{name}\tregion\t{idx}\t8000.0\t1000\t{v * 1.5:.6g}\t0.1\t"
                     f"whole_cerebellum\t1.5\t{v:.6g}")
    for name, v in zip(COMPOSITE_NAMES, comp, strict=True):
        lines.append(f"{name}\tcomposite\tn/a\t24000.0\t3000\t{v * 1.5:.6g}\t0.1\t"
                     f"whole_cerebellum\t1.5\t{v:.6g}")
    return "\n".join(lines) + "\n"


def _measures_text(cl: float) -> str:
    suvr = cl / 93.7207 + 1.009
    rows = [("suvr_cortical", suvr, "unitless"), ("centiloid", cl, "CL"),
            ("centiloid_standard_vois", 0.0, "boolean"), ("positive", float(cl >= 24.1),
                                                           "boolean")]
    lines = ["\t".join(MEASURE_COLUMNS)]
    lines += [f"{m}\t{v:.6g}\t{u}\twhole_cerebellum\tsimulated" for m, v, u in rows]
    return "\n".join(lines) + "\n"


def make_tables(root: Path, n_subjects: int, seed: int = 0) -> int:
    """Write simulated participant outputs; returns the number of tables written."""
    rng = np.random.default_rng(seed)
    base = 1.0 + rng.uniform(0.0, 0.8, len(REGIONS))
    mr_bias = 1.0 - rng.uniform(0.02, 0.2, len(REGIONS))
    n = 0
    for i in range(n_subjects):
        sub = f"{i + 1:05d}"
        amyloid = rng.gamma(1.2, 25.0)
        ct_suvr = base * (1 + amyloid / 200) * rng.normal(1, 0.03, len(REGIONS))
        ct_cl = amyloid - 10 + rng.normal(0, 3)
        images = {
            ("petct", "PET-CT", "preproc"): (ct_suvr, ct_cl),
            ("petmr", "PET-MR", "preproc"): (ct_suvr * mr_bias, 0.85 * ct_cl - 6
                                             + rng.normal(0, 4)),
            ("petmr", "PET-MR", "harmonized"): (ct_suvr * rng.normal(1, 0.01, len(REGIONS)),
                                                ct_cl + rng.normal(0, 2)),
        }
        for (ses, plat, desc), (suvr, cl) in images.items():
            pet = root / f"sub-{sub}" / f"ses-{ses}" / "pet"
            stem = f"sub-{sub}_ses-{ses}_trc-PiB"
            if desc == "preproc":
                pet.mkdir(parents=True, exist_ok=True)
                (pet / f"{stem}_space-T1w_desc-preproc_pet.json").write_text(json.dumps(
                    {"Platform": plat, "TracerName": "PiB", "ManufacturersModelName":
                     "Biograph mMR" if plat == "PET-MR" else "Biograph Vision"}))
            comp = np.full(len(COMPOSITE_NAMES), suvr.mean())
            (pet / f"{stem}_seg-synth_desc-{desc}_suvr.tsv").write_text(_suvr_text(suvr, comp))
            (pet / f"{stem}_seg-synth_desc-{desc}_measures.tsv").write_text(_measures_text(cl))
            n += 2
    return n


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1667, 10000])
    parser.add_argument("--keep", type=Path, help="write the tables here and keep them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    print(f"# group level speed: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, Python {platform.python_version()}")
    print("| subjects | participant tables | images | generate (s) | run_group wall (s) "
          "| run_group CPU main + workers (s) | report wall (s) | report CPU (s) "
          "| group total wall (s) | load avg (1 min) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n_sub in args.subjects:
        root = args.keep / f"n{n_sub}" if args.keep else Path(tempfile.mkdtemp(prefix="grp_"))
        if root.exists() and args.keep:
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.perf_counter()
            n_tables = make_tables(root, n_sub)
            t1 = time.perf_counter()
            c1, k1 = time.process_time(), _children_cpu()
            written = run_group(root, report=False)
            t2 = time.perf_counter()
            c2, k2 = time.process_time(), _children_cpu()
            write_group_report(root / "group")
            t3 = time.perf_counter()
            c3 = time.process_time()
            n_images = sum(1 for _ in open(written["measures"])) - 1
            print(f"| {n_sub} | {n_tables} | {n_images} | {t1 - t0:.1f} | {t2 - t1:.2f} "
                  f"| {c2 - c1:.2f} + {k2 - k1:.2f} | {t3 - t2:.2f} | {c3 - c2:.2f} "
                  f"| {t3 - t1:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
