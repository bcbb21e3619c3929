"""What each fix of issue 19 was worth, on the participant level's own images.

    python benchmarks/accuracy/root_causes.py --out /tmp/e2e/main/out \\
        --variant old-no-grid=/tmp/oldmodel:nogrid --variant old=/tmp/oldmodel \\
        --variant new=bids_harmonize/data/models/demo

Every PET-MR series of a participant-level output folder (run with or without
harmonization) that has a PET-CT of the same tracer is harmonized again here, in
process, with each model variant, exactly as the harmonize node does it (same inputs from
the derivatives, ``harmonize_volume``), and scored on the T1w grid with the synth atlas
brought there (:func:`bids_harmonize.harmonizer.dataset.atlas_on_t1w`): regional SUVR
with the tracer's reference region against the same subject's PET-CT, and the median
harmonized/raw ratio outside the brain mask. A variant ``NAME=DIR:nogrid`` applies the
model the way the app did before the model grid existed (voxel size only, no
reorientation: the T1w grid's PSR axes went to the nets as if they were RAS).

This is a component measurement on T1w-grid regions, not the headline: the headline
(``end_to_end.py``) scores the group level's template-space tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

LOGGER = logging.getLogger("root_causes")


def suvr_errors(image, petct, labels, reference_labels) -> np.ndarray:
    """Percent SUVR difference to PET-CT of every label outside the reference.

    >>> lab = np.array([1, 1, 2, 2, 3, 3]); ct = np.ones(6); mr = np.array([1, 1, 1.1, 1.1, 1, 1])
    >>> suvr_errors(mr, ct, lab, [1]).round(1).tolist()
    [10.0, 0.0]
    """
    ref = np.isin(labels, list(reference_labels))
    present = [k for k in np.unique(labels) if k > 0 and k not in set(reference_labels)]
    s_img = image[ref].mean()
    s_ct = petct[ref].mean()
    return np.array([100.0 * ((image[labels == k].mean() / s_img)
                              / (petct[labels == k].mean() / s_ct) - 1.0) for k in present])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="participant-level output folder")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=DIR[:nogrid]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tsv", type=Path, default=None, help="write the per-case table here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from bids_harmonize.atlas import COMPOSITES
    from bids_harmonize.harmonizer.dataset import load_pairs_from_derivatives
    from bids_harmonize.harmonizer.infer import harmonize_volume
    from bids_harmonize.harmonizer.weights import load_model
    from bids_harmonize.quant.atlases import load_atlas
    from bids_harmonize.tracers import get_tracer

    torch.set_num_threads(args.threads)
    table = load_atlas("synth").labels
    index = {n: int(i) for i, n in zip(table["index"], table["name"], strict=True)}
    variants = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        path, _, flag = rest.partition(":")
        variants.append((name, load_model(path), flag == "nogrid"))
    pairs, _ = load_pairs_from_derivatives(args.out)
    rows = []
    t0 = time.perf_counter()
    for pair in pairs:
        a = pair.load()
        tracer = get_tracer(pair.tracer)
        ref = [index[r] for r in COMPOSITES.get(tracer.reference, (tracer.reference,))]
        brain = a["brain_mask"] > 0.5
        head = (a["pet_mr"] > 0.05 * a["pet_mr"][brain].mean()) & ~brain
        raw = suvr_errors(a["pet_mr"], a["pet_ct"], a["labels"], ref)
        rows.append({"case": pair.key, "tracer": pair.tracer, "ac_setup": pair.ac_setup,
                     "variant": "raw", "mean_abs_pct": np.abs(raw).mean(),
                     "worst_pct": np.abs(raw).max(), "outside_ratio": 1.0})
        for name, model, nogrid in variants:
            if nogrid:  # what the app did: voxel sizes of the array axes, no reorientation
                import nibabel as nb

                kw = {"spacing": nb.affines.voxel_sizes(pair.affine)}
            else:
                kw = {"affine": pair.affine}
            res = harmonize_volume(a["pet_mr"], a["t1w"], a["brain_mask"], model,
                                   ac_setup=pair.ac_setup, tracer=pair.tracer, device="cpu", **kw)
            err = suvr_errors(res.harmonized, a["pet_ct"], a["labels"], ref)
            ratio = np.exp(res.log_ratio[head])
            rows.append({"case": pair.key, "tracer": pair.tracer, "ac_setup": pair.ac_setup,
                         "variant": name, "mean_abs_pct": np.abs(err).mean(),
                         "worst_pct": np.abs(err).max(),
                         "outside_ratio": float(np.median(ratio)) if ratio.size else np.nan})
        LOGGER.warning("%s done (%.0f s)", pair.key, time.perf_counter() - t0)
    table = pd.DataFrame(rows)
    if args.tsv:
        table.to_csv(args.tsv, sep="\t", index=False, float_format="%.4g")
    summary = table.groupby(["variant", "ac_setup"])[["mean_abs_pct", "worst_pct",
                                                      "outside_ratio"]].mean().round(3)
    print(summary.to_string())
    print()
    print(table.groupby("variant")[["mean_abs_pct", "worst_pct", "outside_ratio"]].mean().round(3)
          .to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
