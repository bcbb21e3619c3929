"""Issue 22's closing table, measured: each hostile input or fault, what the app does now,
its exit status, wall time and peak memory.

Every case runs the real command line (``python -m bids_harmonize.cli.run`` or
``bids_harmonize-slurm``) in a fresh interpreter on a copy of a simulated 2-subject PiB
dataset, with sub-01 damaged and only sub-01 selected, so a run ends at pre-flight
(seconds) with the app's one line. Peak memory is the child's own high-water mark
(``VmHWM`` from ``/proc/self/status``, read at exit; Linux only): the whole process,
imports included, so compare it with the ``baseline`` row. Cases that need a full
participant run (a disk filling up mid-run, a kill while outputs are written) are the
slow tests in ``tests/fuzz/test_fuzz_diskfull.py``; the table cites them.

Usage::

    python benchmarks/robustness/measure.py [--json results.json] [--only CASE ...]

About 2 minutes on 2 cores. The ``disk-full-at-lock`` case mounts a tmpfs and runs only
as root; elsewhere it is reported as skipped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PET_MR = "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet"
T1W = "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"
FAST = ["participant", "--skip-bids-validation", "--no-harmonization",
        "--output-spaces", "MNI152NLin2009aSym", "T1w", "--participant-label", "01"]

#: The child: run one entry point, then report its own peak memory on stderr.
WRAPPER = """
import atexit, runpy, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            sys.stderr.write("\\nPEAK_KB " + line.split()[1] + "\\n")
atexit.register(_peak)
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__")
"""


def _replace(path: Path, data: bytes | str) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _sidecar(bids: Path, **changes) -> None:
    meta = json.loads((bids / f"{PET_MR}.json").read_text())
    meta.update(changes)
    _replace(bids / f"{PET_MR}.json", json.dumps(meta, indent=2))


def _raw_sidecar(bids: Path, old: str, new: str) -> None:
    text = (bids / f"{PET_MR}.json").read_text()
    assert old in text, old
    _replace(bids / f"{PET_MR}.json", text.replace(old, new, 1))


def _rewrite(path: Path, make) -> None:
    import nibabel as nb
    import numpy as np

    img = nb.load(path)
    data = np.asanyarray(img.dataobj)
    new = make(data, img)
    path.unlink()
    nb.save(new, path)


# ------------------------------------------------------------------ the cases


def c_baseline(bids, tmp):
    """A healthy dataset, a participant that is not there: imports and discovery only."""
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST[:-1], "03"]


def c_fifo_sidecar(bids, tmp):
    (bids / f"{PET_MR}.json").unlink()
    os.mkfifo(bids / f"{PET_MR}.json")
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_fifo_participants(bids, tmp):
    (bids / "participants.tsv").unlink(missing_ok=True)
    os.mkfifo(bids / "participants.tsv")
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_devzero_sidecar(bids, tmp):
    (bids / f"{PET_MR}.json").unlink()
    os.symlink("/dev/zero", bids / f"{PET_MR}.json")
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_header_4gb(bids, tmp):
    import nibabel as nb
    import numpy as np

    path = bids / f"{PET_MR}.nii.gz"
    header = nb.load(path).header.copy()
    header.set_data_shape((100, 100, 100, 1000))
    header.set_data_dtype(np.float32)
    _replace(path, gzip.compress(header.binaryblock + b"\0" * 4 + os.urandom(1 << 20)))
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_yaml_bomb(bids, tmp):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghij"):
        lines.append(f"{name}: &{name} [{','.join(['*' + 'abcdefghij'[i]] * 9)}]")
    bomb = tmp / "tracers.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST, "--tracer-file", bomb]


def c_frameduration_1e400(bids, tmp):
    _raw_sidecar(bids, '"FrameDuration": [\n    300.0', '"FrameDuration": [1e400')
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_nested_json(bids, tmp):
    _raw_sidecar(bids, '"FrameDuration": [\n    300.0',
                 '"X": ' + "[" * 100_000 + "]" * 100_000 + ', "FrameDuration": [300.0')
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_rgb_t1w(bids, tmp):
    import nibabel as nb
    import numpy as np

    def rgb(data, img):
        grey = (data / data.max() * 255).astype(np.uint8)
        out = np.zeros(grey.shape, np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]))
        for channel in "RGB":
            out[channel] = grey
        return nb.Nifti1Image(out, img.affine)

    _rewrite(bids / T1W, rgb)
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_complex_pet(bids, tmp):
    import nibabel as nb
    import numpy as np

    _rewrite(bids / f"{PET_MR}.nii.gz", lambda d, img: nb.Nifti1Image(
        d.astype(np.complex64) * (1 + 1j), img.affine))
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_negative_pet(bids, tmp):
    import nibabel as nb
    import numpy as np

    _rewrite(bids / f"{PET_MR}.nii.gz", lambda d, img: nb.Nifti1Image(
        -np.abs(d.astype(np.float32)) - 1, img.affine))
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def c_injection_start(bids, tmp):
    _sidecar(bids, ScanStart=0, InjectionStart=1200,
             FrameTimesStart=[3000 + 200 * i for i in range(6)], FrameDuration=[200] * 6)
    return ["bids_harmonize.cli.run", bids, tmp / "out", *FAST]


def _model(tmp):
    from bids_harmonize.harmonizer.weights import default_model_dir

    model = tmp / "model"
    shutil.copytree(default_model_dir(), model)
    return model


def _with_model(bids, tmp, model):
    args = [a for a in FAST if a != "--no-harmonization"]
    return ["bids_harmonize.cli.run", bids, tmp / "out", *args, "--model-dir", model]


def c_model_member_missing(bids, tmp):
    model = _model(tmp)
    (model / "ensemble" / "correction-member2.safetensors").unlink()
    return _with_model(bids, tmp, model)


def c_model_member_outside(bids, tmp):
    model = _model(tmp)
    card = json.loads((model / "model.json").read_text())
    card["uncertainty"]["members"][0]["file"] = "../../outside.safetensors"
    (model / "model.json").write_text(json.dumps(card))
    return _with_model(bids, tmp, model)


def c_nested_config(bids, tmp):
    config = tmp / "c.toml"
    config.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    return ["bids_harmonize.cli.run", bids, tmp / "out", "participant", "--config-file", config]


def c_slurm_labels_not_utf8(bids, tmp):
    labels = tmp / "labels.txt"
    labels.write_bytes(b"01\n\xff\xfe\n")
    return ["bids_harmonize.slurm.cli", bids, tmp / "out", "--participants-file", labels]


def c_slurm_scratch_substitution(bids, tmp):
    return ["bids_harmonize.slurm.cli", bids, tmp / "out", "--scratch", "$(touch /tmp/pwned)"]


def c_non_ascii_label(bids, tmp):
    args = [a for a in FAST[:-1]]
    return ["bids_harmonize.cli.run", bids, tmp / "out", *args, "\u0660\u0661"]


def c_disk_full_at_lock(bids, tmp):
    """The output folder on a full 256 kB tmpfs (root only)."""
    disk = tmp / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
            capture_output=True, check=False).returncode:
        raise Skip("mounting a tmpfs needs root")
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    CLEANUP.append(["umount", "-l", str(disk)])
    return ["bids_harmonize.cli.run", bids, disk / "out", *FAST]


class Skip(Exception):
    pass


CLEANUP: list[list[str]] = []

#: case -> (what was tried, before (from issue 22's text), the maker)
CASES = {
    "baseline": ("healthy dataset, absent participant (imports + discovery)", "-", c_baseline),
    "fifo-sidecar": ("PET sidecar is a FIFO", "run hangs", c_fifo_sidecar),
    "fifo-participants": ("participants.tsv is a FIFO", "run hangs", c_fifo_participants),
    "devzero-sidecar": ("PET sidecar is a link to /dev/zero", "3.4 GB, no end",
                        c_devzero_sidecar),
    "header-4gb": ("1 MB PET whose header declares 100x100x100x1000 float32",
                   "refused after 3.9 GB", c_header_4gb),
    "yaml-bomb": ("~700-byte --tracer-file with nested YAML aliases",
                  "3 GB, then 'unexpected MemoryError'", c_yaml_bomb),
    "frameduration-1e400": ("FrameDuration [1e400, ...]",
                            "'unexpected ... (this is a bug)', no one else runs",
                            c_frameduration_1e400),
    "nested-json": ("sidecar with a JSON array nested 100 000 deep",
                    "'unexpected ... (this is a bug)', no one else runs", c_nested_json),
    "rgb-t1w": ("RGB T1w", "'unexpected ... (this is a bug)', no one else runs", c_rgb_t1w),
    "complex-pet": ("complex-valued PET", "runs; imaginary part dropped, NaN check skipped",
                    c_complex_pet),
    "negative-pet": ("all-negative PET-MR",
                     "passes pre-flight; SUVR 1.08-1.15, Centiloid 10.1; group exit 0 with it",
                     c_negative_pet),
    "injection-start": ("InjectionStart 20 min after ScanStart, frames 50-70 min after it",
                        "frames used as 50-70 min after injection", c_injection_start),
    "model-member-missing": ("model folder without one ensemble member",
                             "passes pre-flight; every PET-MR participant fails ~2 min later",
                             c_model_member_missing),
    "model-member-outside": ("card names ../../outside.safetensors",
                             "path not contained in the model folder", c_model_member_outside),
    "nested-config": ("--config-file nested 5000 deep", "exit 1", c_nested_config),
    "slurm-labels-not-utf8": ("bids_harmonize-slurm --participants-file not UTF-8",
                              "raw Python traceback", c_slurm_labels_not_utf8),
    "slurm-scratch": ("bids_harmonize-slurm --scratch '$(cmd)'", "accepted",
                      c_slurm_scratch_substitution),
    "non-ascii-label": ("--participant-label with Arabic-Indic digits", "accepted",
                        c_non_ascii_label),
    "disk-full-at-lock": ("output folder on a full disk (tmpfs) at lock time",
                          "0-byte lock that refuses the participant forever",
                          c_disk_full_at_lock),
}


def _prepare(root: Path) -> tuple[Path, dict]:
    from bids_harmonize.synth import write_dataset
    from bids_harmonize.templates import build_nilearn_template

    bids = root / "bids"
    write_dataset(bids, n_subjects=2, tracers=["PiB"], seed=0)
    build_nilearn_template(root / "templateflow")
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(root / "templateflow"), NIPYPE_NO_ET="1",
               MPLBACKEND="Agg")
    return bids, env


def run_case(name: str, bids: Path, env: dict, root: Path, timeout: float) -> dict:
    what, before, make = CASES[name]
    tmp = root / name
    tmp.mkdir()
    copy = tmp / "bids"
    shutil.copytree(bids, copy, copy_function=os.link)  # hard links: replace, never edit
    row = {"case": name, "what": what, "before": before}
    try:
        argv = [str(a) for a in make(copy, tmp)]
    except Skip as exc:
        return {**row, "status": None, "line": f"skipped: {exc}", "peak_mb": None, "wall_s": None}
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True,
                              text=True, env=env, timeout=timeout, check=False)
        status, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, err = "timeout", (exc.stderr or b"").decode(errors="replace")
    wall = time.monotonic() - started
    peak = [line.split()[1] for line in err.splitlines() if line.startswith("PEAK_KB ")]
    own = [line for line in err.splitlines() if line.startswith(("bids_harmonize:", "usage:",
                                                                 "bids_harmonize-slurm:"))]
    warnings = [line for line in err.splitlines() if " WARNING: " in line]
    line = own[-1] if own else "(no line)"
    line = line.replace(str(copy), "<bids>").replace(str(tmp), "<tmp>")
    return {**row, "status": status, "line": line, "lines": len(own),
            "warnings": warnings[:3], "traceback": "Traceback" in err,
            "peak_mb": round(int(peak[0]) / 1024) if peak else None, "wall_s": round(wall, 1)}


def markdown(rows: list[dict]) -> str:
    out = ["| case | before (issue 22) | after: exit, one line | peak MB | s |",
           "|---|---|---|---:|---:|"]
    for r in rows:
        line = r["line"].replace("|", "\\|")
        if len(line) > 260:
            line = line[:257] + "..."
        status = "-" if r["status"] is None else r["status"]
        out.append(f"| {r['what']} | {r['before']} | {status}: `{line}` | "
                   f"{r['peak_mb'] if r['peak_mb'] is not None else '-'} | "
                   f"{r['wall_s'] if r['wall_s'] is not None else '-'} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="these cases only")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per case")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        parser.error("peak memory is read from /proc/self/status: Linux only")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bh-robustness-") as tmp:
        root = Path(tmp)
        bids, env = _prepare(root)
        try:
            for name in args.only or list(CASES):
                rows.append(run_case(name, bids, env, root, args.timeout))
                print(f"{name}: exit {rows[-1]['status']}, {rows[-1]['peak_mb']} MB, "
                      f"{rows[-1]['wall_s']} s", file=sys.stderr)
        finally:
            for command in CLEANUP:
                subprocess.run(command, capture_output=True, check=False)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
