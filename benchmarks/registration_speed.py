"""Speed and accuracy of the participant level's rigid registrations, against the simulator's truth.

    python benchmarks/registration_speed.py [--subjects 3] [--seed 7] [--profiles precise,rigid]

The participant level registers each PET (PET-CT and PET-MR sessions) and each CT to the
subject's T1w rigidly (``bids_harmonize.registration.register_rigid``). The simulator knows
where every image really is (``to_ref_affines`` in ``*_desc-truth_params.json``), so the error
of an estimated transform is measurable: the distance, over the T1w's brain voxels, between
where the transform sends each voxel and where it truly is (mm; mean and maximum).

For each subject (simulated here, PiB, seeds ``--seed``, ``--seed``+1, ...) the script builds
the inputs as the participant level does (N4-corrected T1w; the PET uptake-window mean,
50-70 min; the CT as written) and times every settings profile of
``bids_harmonize.registration.SETTINGS`` named in ``--profiles`` on one ITK thread (wall and
CPU seconds). The brain mask is the simulator's true brain mask brought to the T1w grid (the
participant level uses the template-derived one; both are dilated by 3 voxels before use).
Prints a Markdown table (one row per profile and registration, mean and worst over subjects).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # before ANTs starts its thread pool

LPS = np.diag([-1.0, -1.0, 1.0])


def _to_ref(params: dict) -> dict[str, np.ndarray]:
    """Every simulated file's voxel -> reference-space affine, by file name."""
    return {name: np.asarray(a) for s in params["sessions"].values()
            for name, a in s["to_ref_affines"].items()}


def _truth_mapping(to_ref: dict, fixed: str, moving: str, fixed_affine, moving_affine):
    """4x4 matrix: fixed world (RAS, mm) -> where that point truly is in the moving world."""
    # fixed world -> fixed voxel -> reference -> moving voxel -> moving world
    return (moving_affine @ np.linalg.inv(to_ref[moving]) @ to_ref[fixed]
            @ np.linalg.inv(fixed_affine))


def registration_error(transform_file: str, truth: np.ndarray, points_ras: np.ndarray):
    """Mean and maximum distance (mm) between the estimated and true mapping of the points."""
    import ants

    tx = ants.read_transform(transform_file)
    est = np.array([tx.apply_to_point(tuple(LPS @ p)) for p in points_ras]) @ LPS
    true = (truth[:3, :3] @ points_ras.T).T + truth[:3, 3]
    d = np.linalg.norm(est - true, axis=1)
    return float(d.mean()), float(d.max())


def _brain_points(mask_ref: Path, t1w_to_ref: np.ndarray, t1w_img, step: int = 3):
    """World (RAS) coordinates of the true brain mask's voxels (every ``step``-th), and the
    mask on the T1w grid (nearest neighbour) for the registrations' fixed mask."""
    import nibabel as nb
    from scipy import ndimage

    ref = nb.load(mask_ref)
    # T1w voxel -> reference voxel, then sample the reference mask there
    vox_map = np.linalg.inv(ref.affine) @ t1w_to_ref
    grid = np.indices(t1w_img.shape[:3]).reshape(3, -1)
    coords = vox_map[:3, :3] @ grid + vox_map[:3, 3:4]
    mask = ndimage.map_coordinates(np.asarray(ref.dataobj, np.float32), coords, order=0)
    mask = mask.reshape(t1w_img.shape[:3]) > 0.5
    idx = np.argwhere(mask)[::step]
    points = (t1w_img.affine[:3, :3] @ idx.T).T + t1w_img.affine[:3, 3]
    return points, mask


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profiles", default="precise,rigid")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temporary)")
    args = parser.parse_args()

    import nibabel as nb

    from bids_harmonize.registration import SETTINGS, n4_bias_correct, register_rigid

    profiles = args.profiles.split(",")
    unknown = [p for p in profiles if p not in SETTINGS]
    if unknown:
        parser.error(f"unknown profile(s) {unknown}; known: {', '.join(SETTINGS)}")
    root = args.work or Path(tempfile.mkdtemp(prefix="bh-regbench-"))
    bids = root / "bids"
    if not bids.exists():
        print(f"simulating {args.subjects} subjects in {bids} ...", file=sys.stderr, flush=True)
        subprocess.run([Path(sys.executable).parent / "bids_harmonize-synth", str(bids),
                        "--subjects", str(args.subjects), "--tracers", "PiB", "--seed",
                        str(args.seed)], check=True, capture_output=True)
    rows: dict[tuple[str, str], list] = {}
    for sub in sorted(p.name for p in bids.glob("sub-*")):
        to_ref = _to_ref(json.loads((bids / "derivatives/synth-truth" / sub
                                     / f"{sub}_desc-truth_params.json").read_text()))
        work = root / "work" / sub
        work.mkdir(parents=True, exist_ok=True)
        t1w_name = f"{sub}_ses-petmr_T1w.nii.gz"
        t1w_file = bids / sub / "ses-petmr/anat" / t1w_name
        n4 = work / "t1w_n4.nii.gz"
        if not n4.exists():
            n4_bias_correct(str(t1w_file), str(n4))
        t1w_img = nb.load(t1w_file)
        points, mask = _brain_points(
            bids / "derivatives/synth-truth" / sub / "anat" / f"{sub}_space-ref_desc-brain_mask.nii.gz",
            to_ref[t1w_name], t1w_img)
        mask_file = work / "brain_mask.nii.gz"
        nb.save(nb.Nifti1Image(mask.astype(np.uint8), t1w_img.affine), mask_file)
        # registration -> (moving image, the simulated file whose pose it has, fixed mask)
        ct_name = f"{sub}_ses-petct_CT.nii.gz"
        movings = {"CT -> T1w": (bids / sub / "ses-petct/anat" / ct_name, ct_name, None)}
        for ses in ("petct", "petmr"):
            pet_name = f"{sub}_ses-{ses}_trc-PiB_pet.nii.gz"
            pet = nb.load(bids / sub / f"ses-{ses}/pet" / pet_name)
            sidecar = bids / sub / f"ses-{ses}/pet" / pet_name.replace(".nii.gz", ".json")
            meta = json.loads(sidecar.read_text())
            starts = np.asarray(meta["FrameTimesStart"]) / 60.0
            use = (starts >= 50) & (starts < 70)
            static = np.asarray(pet.dataobj, np.float32)[..., use].mean(-1)
            static_file = work / f"{ses}_static.nii.gz"
            nb.save(nb.Nifti1Image(static, pet.affine), static_file)
            movings[f"PET ({'PET-CT' if ses == 'petct' else 'PET-MR'}) -> T1w"] = (
                static_file, pet_name, mask_file)
        for what, (moving, moving_name, fixed_mask) in movings.items():
            truth = _truth_mapping(to_ref, t1w_name, moving_name, t1w_img.affine,
                                   nb.load(moving).affine)
            for profile in profiles:
                out = work / f"{profile}_{Path(moving_name).name.split('.')[0]}"
                out.mkdir(exist_ok=True)
                t0, c0 = time.perf_counter(), time.process_time()
                reg = register_rigid(str(moving), str(n4), out,
                                     fixed_mask=str(fixed_mask) if fixed_mask else None,
                                     profile=profile, seed=0)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                mean_err, max_err = registration_error(reg["forward"][0], truth, points)
                rows.setdefault((what, profile), []).append((wall, cpu, mean_err, max_err))
                print(f"{sub} {what:22s} {profile:8s} {wall:5.1f} s  error {mean_err:.2f} "
                      f"(max {max_err:.2f}) mm", file=sys.stderr, flush=True)
    print(f"\n{args.subjects} simulated subjects (PiB, seed {args.seed}), one ITK thread\n")
    print("| registration | profile | wall (s), mean [max] | CPU (s), mean | error, mean over "
          "subjects (mm) | error, worst subject's mean (mm) | worst voxel (mm) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (what, profile), vals in rows.items():
        v = np.asarray(vals)
        print(f"| {what} | {profile} | {v[:, 0].mean():.1f} [{v[:, 0].max():.1f}] | "
              f"{v[:, 1].mean():.1f} | {v[:, 2].mean():.2f} | {v[:, 2].max():.2f} | "
              f"{v[:, 3].max():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
