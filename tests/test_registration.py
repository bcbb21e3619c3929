"""ANTs registration through antspyx: seeded, hence repeatable."""

from __future__ import annotations

import time

import numpy as np

from bids_harmonize.registration import register_rigid, set_threads


def test_rigid_registration_is_repeatable_for_a_seed(synth_bids, tmp_path):
    """Same seed, same threads: the same transform, even when the clock has moved on.

    ANTs reads ``--random-seed 0`` as "seed from the clock"; a seed of 0 must not reach it.
    """
    import ants

    set_threads(1)
    ct = str(next(synth_bids.glob("sub-01/ses-petct/anat/*_CT.nii.gz")))
    t1w = str(next(synth_bids.glob("sub-01/ses-petmr/anat/*_T1w.nii.gz")))
    params = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        out.mkdir()
        result = register_rigid(ct, t1w, out, sloppy=True, seed=0)
        params.append(ants.read_transform(result["forward"][0]).parameters)
        time.sleep(1.1)  # a clock-seeded run would now draw other samples
    np.testing.assert_array_equal(params[0], params[1])
