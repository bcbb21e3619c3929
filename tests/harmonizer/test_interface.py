import nibabel as nb
import numpy as np

from bids_harmonize.harmonizer.phantom import phantom_pair
from bids_harmonize.interfaces.harmonize import Harmonize


def _write(path, data, affine):
    nb.Nifti1Image(np.asarray(data, dtype=np.float32), affine).to_filename(path)
    return str(path)


def test_harmonize_interface_with_demo_model(tmp_path, monkeypatch):
    s = phantom_pair(5, shape=(30, 34, 30), tracer="FDG")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    pet = _write(tmp_path / "pet.nii.gz", s.pet_mr, affine)
    t1w = _write(tmp_path / "t1w.nii.gz", s.t1w, affine)
    mask = _write(tmp_path / "mask.nii.gz", s.brain_mask, affine)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    node = Harmonize(in_pet=pet, in_t1w=t1w, in_mask=mask, tracer="FPCIT", device="cpu", omp_nthreads=2)
    result = node.run()
    out = result.outputs
    harmonized = nb.load(out.out_file)
    assert harmonized.shape == s.pet_mr.shape
    assert np.allclose(harmonized.affine, affine)
    assert nb.load(out.out_pseudoct).shape == s.pet_mr.shape
    assert out.out_file.startswith(str(work))
    info = out.model_info
    assert info["name"] == "demo" and len(info["sha256"]) == 64
    assert any("FPCIT" in n for n in info["notes"])
    ratio = np.asarray(nb.load(out.out_logratio).dataobj)
    np.testing.assert_allclose(np.asarray(harmonized.dataobj), s.pet_mr * np.exp(ratio), rtol=1e-4, atol=1e-3)


def test_device_and_threads_do_not_change_the_hash():
    a = Harmonize(device="cpu", omp_nthreads=1, tracer="PiB")
    b = Harmonize(device="auto", omp_nthreads=4, tracer="PiB")
    assert a.inputs.get_hashval()[1] == b.inputs.get_hashval()[1]
