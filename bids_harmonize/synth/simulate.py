"""Assemble one simulated subject: anatomy, uptake, and both sessions' acquisitions.

Random streams are keyed by ``(seed, index, purpose[, tracer, session])`` so a
subject's anatomy and disease do not depend on the tracers asked for, and a tracer's
data do not depend on the other tracers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from bids_harmonize.__about__ import __version__
from bids_harmonize.acsetups import get_setup
from bids_harmonize.atlas import synth_label_table
from bids_harmonize.physics import tomography
from bids_harmonize.synth import anatomy as anat_mod
from bids_harmonize.synth import mrac, uptake
from bids_harmonize.synth import physics as phy
from bids_harmonize.synth.api import SessionTruth, SimulatedSubject, SynthConfig
from bids_harmonize.tracers import get_tracer

LOGGER = logging.getLogger(__name__)

#: Subject-space point put at the scanner's isocentre (before the session's motion).
HEAD_CENTRE = np.array([0.0, -12.0, -4.0])

#: Native grids of the anatomical images: orientation codes, voxel size at 2 mm
#: resolution, field of view (mm) per array axis.
CT_GRID = {"codes": ("L", "P", "S"), "voxel": (1.6, 1.6, 2.5), "fov": (250.0, 250.0, 230.0)}
T1W_GRID = {"codes": ("P", "S", "R"), "voxel": (2.0, 2.0, 2.2), "fov": (256.0, 240.0, 180.0)}
PET_CODES = ("L", "A", "S")
SESSIONS = ("petct", "petmr")


@dataclass
class NativeSession:
    """A session as the scanner writes it (what the BIDS writer needs)."""

    anat: np.ndarray  # CT (HU) or T1w, on its native grid
    anat_affine: np.ndarray
    pet: dict[str, np.ndarray] = field(default_factory=dict)  # tracer -> 4-D frames (Bq/mL)
    pet_affine: np.ndarray | None = None
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # min
    dose_mbq: dict[str, float] = field(default_factory=dict)
    injection_clock: dict[str, str] = field(default_factory=dict)
    scanner: phy.ScannerModel | None = None
    mumap: np.ndarray | None = None  # the μ-map the scanner used, on the PET grid (1/cm)
    scatter_fraction: dict[str, list[float]] = field(default_factory=dict)  # per frame


def _rng(seed: int, index: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), *(int(k) for k in keys)])


def native_affine(codes, voxel, shape) -> np.ndarray:
    """Affine (scanner RAS mm) of a grid with orientation ``codes``, centred on the isocentre.

    >>> native_affine(("L", "A", "S"), (2, 2, 2), (3, 3, 3))[:3, 0].tolist()
    [-2.0, 0.0, 0.0]
    """
    direction = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    for j, code in enumerate(codes):
        axis, sign = direction[code]
        aff[axis, j] = sign * voxel[j]
    centre = aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    aff[:3, 3] = -centre
    return aff


def frame_protocol(tracer, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frame starts and durations (minutes after injection).

    >>> from bids_harmonize.tracers import get_tracer
    >>> s, d = frame_protocol(get_tracer("PiB"), SynthConfig())
    >>> s.tolist(), d.tolist()
    ([40.0, 45.0, 50.0, 55.0, 60.0, 65.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    """
    t0, t1 = tracer.window_min
    if config.dynamic:
        durations = [1.0] * 6 + [2.0] * 4
        while sum(durations) < t1 - 1e-6:
            durations.append(config.frame_duration_min)
        starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
        return starts.astype(float), np.asarray(durations, float)
    dur = config.frame_duration_min
    if config.n_frames:  # a forced frame count ends at the window's end
        n = config.n_frames
        start = max(t1 - n * dur, 0.0)
    else:
        start = max(t0 - config.pre_window_min, 0.0)
        n = int(np.ceil((t1 - start) / dur - 1e-6))
    starts = start + dur * np.arange(n)
    return starts.astype(float), np.full(n, dur)


def window_frames(tracer, starts, durations) -> np.ndarray:
    """Boolean mask of the frames inside the tracer's standard window."""
    t0, t1 = tracer.window_min
    ends = starts + durations
    inside = (starts >= t0 - 1e-6) & (ends <= t1 + 1e-6)
    if not inside.any():  # window shorter than a frame: take overlapping frames
        inside = (ends > t0) & (starts < t1)
    if not inside.any():
        raise ValueError(f"no frame overlaps the {tracer.name} window {t0:g}-{t1:g} min")
    return inside


def _session_pose(rng, motion: bool) -> tuple[np.ndarray, tuple, tuple]:
    if motion:
        rot = tuple(round(float(v), 3) for v in rng.uniform(-4.0, 4.0, size=3))
        trans = tuple(round(float(v), 3) for v in rng.uniform(-5.0, 5.0, size=3))
    else:
        rot, trans = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    centre = np.eye(4)
    centre[:3, 3] = -HEAD_CENTRE
    return phy.rigid(rot, trans) @ centre, rot, trans


def _grid_shape(grid, resolution_mm):
    f = resolution_mm / 2.0
    voxel = tuple(v * f for v in grid["voxel"])
    shape = tuple(int(round(fov / v)) for fov, v in zip(grid["fov"], voxel, strict=True))
    return voxel, shape


def _acquire(*, anat, pose, scanner, mu_true, mu_ac, mu_ac_affine, tracer_data, config,
             rng_for, frame_poses=None, coil_missing: float = 0.0):
    """Simulate one session's PET for all tracers.

    Returns the PET grid affine (scanner RAS, axes x, y, z), ``{tracer: frames}``
    with frames shaped ``(n, n, n_slices, n_frames)`` in Bq/mL, decay corrected, the
    expected true counts per frame and the attenuation map used, on the PET grid.
    Projections of mu and of the noiseless activity are shared by all frames; each
    frame gets its own Poisson noise and FBP (all frames in one back-projection).

    PET-MR scanners have the MR head coil and table in the field of view; the true
    attenuation includes them, the scanner's correction only ``1 - coil_missing`` of
    them.  Scatter (:func:`~bids_harmonize.synth.physics.scatter_projection`) is added to
    the measured projections with the true attenuation, and the scanner subtracts its
    own estimate: the same model with its μ-map, from its measured data, scaled to the
    measured scatter tails outside the head (tail fitting).  Time of flight multiplies
    the counts by its noise-equivalent gain (noise only: the 2-D model has no TOF
    kernel).  PSF reconstructions partly deconvolve the PSF (edge overshoot included).
    """
    n = scanner.matrix
    pet_shape = (n, n, scanner.n_slices)
    pet_aff = phy.centred_grid(pet_shape, scanner.voxel_mm)
    subj_to_scanner = pose @ anat.affine
    n_ang = config.n_angles
    vx, _, vz = scanner.voxel_mm
    step_cm = vx / 10.0
    psf = scanner.psf_fwhm_mm / 2.3548
    post = scanner.postfilter_fwhm_mm / 2.3548
    voxel_ml = float(np.prod(scanner.voxel_mm)) / 1000.0
    mu_ac_pet = phy.resample(mu_ac, mu_ac_affine, pet_shape, pet_aff)
    ac_line = tomography.project(mu_ac_pet, n_ang) * step_cm
    tails = ac_line < 1e-3  # lines of response outside the head (scanner's own map)
    hw_line = np.float32(0.0)
    if scanner.platform == "PET-MR":
        hw_line = tomography.project(phy.hardware_mu(pet_shape, scanner.voxel_mm), n_ang) * step_cm
    af_ac = np.exp(-(ac_line + np.float32(1.0 - coil_missing) * hw_line))
    af_hw = np.exp(-hw_line)
    # 3-D acquisition: the correction error of oblique lines (scanner map differs from
    # the truth only on PET-MR; PET-CT's CT map matches it up to CT noise and grid)
    af_ac_used = af_ac
    if scanner.platform == "PET-MR" and config.oblique:
        dmu = phy.resample(mu_true, subj_to_scanner, pet_shape, pet_aff) - mu_ac_pet
        if scanner.platform == "PET-MR":
            dmu = dmu + np.float32(coil_missing) * phy.hardware_mu(pet_shape, scanner.voxel_mm)
        af_ac_used = af_ac / phy.oblique_ratio(dmu, scanner.voxel_mm, n_ang)
    names = list(tracer_data)
    sig_b = phy.SCATTER_SIGMA_MM / vx
    sig_z = phy.SCATTER_SIGMA_MM / vz
    tof = phy.tof_gain(scanner.tof_ps)
    recover = (0.0, 0.0)
    if scanner.psf_recon:
        r = psf * np.sqrt(phy.PSF_RECOVERY_FRACTION)
        recover = (r / vx, r / vz)

    def scatter_pair(e, af_true):
        """True scatter of emission ``e`` and the scanner's estimate from the data."""
        s_true = phy.scatter_projection(e, af_true, sig_b, sig_z)
        measured = e * af_true + s_true
        s_est = phy.scatter_projection(measured / af_ac, af_ac, sig_b, sig_z)
        return s_true, s_est

    def blur(p):
        p = ndimage.gaussian_filter1d(p, psf / vx, axis=1, truncate=3.0)
        return ndimage.gaussian_filter1d(p, psf / vz, axis=2, truncate=3.0)

    def project_at(aff_subj, which):
        srcs = [mu_true] + [tracer_data[nm][k] for nm in which for k in ("window", "flow")]
        vols = phy.resample_many(srcs, aff_subj, pet_shape, pet_aff)
        proj = tomography.project(np.stack(vols, axis=-1), n_ang)  # (n_ang, n, nz, 1 + 2 k)
        af = np.exp(-proj[..., 0] * step_cm) * af_hw
        out = {}
        for i, nm in enumerate(which):
            pw, pf = blur(proj[..., 1 + 2 * i]), blur(proj[..., 2 + 2 * i])
            out[nm] = (pw, pf, *scatter_pair(pw, af), *scatter_pair(pf, af))
        return af, out

    if frame_poses is None:
        af_true, expected = project_at(subj_to_scanner, names)
    out = {}
    total_counts: dict[str, list[float]] = {}
    scatter_fraction: dict[str, list[float]] = {}
    for name in names:
        td = tracer_data[name]
        tracer, starts, durs = td["tracer"], td["starts"], td["durations"]
        w_win, w_flow = uptake.frame_weights(tracer, starts, durs)
        decay = phy.decay_factor(starts, durs, tracer.half_life_min)
        rng = rng_for(name)
        n_frames = len(starts)
        sino = np.empty((n_ang, n, n_frames, pet_shape[2]), dtype=np.float32)
        for f in range(n_frames):
            if frame_poses is not None:
                af_true, expected = project_at(frame_poses[name][f] @ anat.affine, [name])
            pw, pf, sw_true, sw_est, sf_true, sf_est = expected[name]
            emission = np.clip(w_win[f] * pw + w_flow[f] * pf, 0, None)
            scat = np.clip(w_win[f] * sw_true + w_flow[f] * sf_true, 0, None)
            scat_est = np.clip(w_win[f] * sw_est + w_flow[f] * sf_est, 0, None)
            # tail fitting: the estimate's scale from the scatter measured outside the head
            est_tails = float(scat_est[tails].sum())
            if est_tails > 0:
                scat_est = scat_est * np.float32(float(scat[tails].sum()) / est_tails)
            k = np.float32(scanner.sensitivity_cps_per_kbq * phy.CENTRE_SENSITIVITY_GAIN * 1e-3
                           * voxel_ml * durs[f] * 60.0 * decay[f] * config.count_scale * tof
                           / n_ang)
            lam = (emission * af_true + scat) * k
            counts = rng.poisson(lam).astype(np.float32) if config.noise else lam
            total_counts.setdefault(name, []).append(float((emission * af_true * k).sum()))
            scatter_fraction.setdefault(name, []).append(
                float(scat.sum() / max(float((emission * af_true + scat).sum()), 1e-12)))
            sino[:, :, f, :] = (counts - scat_est * k) / (af_ac_used * k)
        frames = tomography.fbp(sino, scanner.hann_cutoff, post_sigma=(post / vx, post / vz),
                         recover_sigma=recover)
        out[name] = np.ascontiguousarray(np.moveaxis(frames, 2, 3), dtype=np.float32)
    LOGGER.debug("%s scatter fractions: %s", scanner.model,
                 {k: round(float(np.mean(v)), 3) for k, v in scatter_fraction.items()})
    return pet_aff, out, total_counts, mu_ac_pet, scatter_fraction


def _simulate(index: int, *, seed: int, tracers: Sequence[str], config: SynthConfig | None,
              keep_native: bool = False):
    config = config or SynthConfig()
    if index < 1:
        raise ValueError("subject index starts at 1")
    tracer_objs = [get_tracer(t) for t in tracers]
    names = [t.name for t in tracer_objs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tracers in {list(tracers)}")
    site = config.consortium.site_for(index) if config.consortium else None

    def petmr_delay(tracer) -> float:
        """Minutes the PET-MR scan of ``tracer`` starts later than the PET-CT's."""
        return site.petmr_delay_for(tracer.window_min) if site else config.petmr_delay_min

    # between-session variability of the brain-to-reference ratio (off without noise)
    session_sd = (site.session_sd if site else config.session_sd) if config.noise else 0.0

    for tr in tracer_objs:
        if petmr_delay(tr) > 0:
            uptake.kinetic_model(tr)  # raises for a tracer without a kinetic model
    timer, cpu = {}, {}
    t_start, c_start = time.perf_counter(), time.process_time()
    res = float(config.resolution_mm)
    rd = _rng(seed, index, 0)
    age = float(np.round(rd.uniform(55, 85), 1))
    sex = "F" if rd.random() < 0.5 else "M"
    weight = float(np.round(np.clip(rd.normal(76 if sex == "M" else 66, 10), 45, 120), 1))
    anat = anat_mod.make_anatomy(_rng(seed, index, 1), res, age=age)
    cohort = config.consortium.cohort if config.consortium else None
    disease = uptake.draw_disease(
        _rng(seed, index, 2), age,
        amyloid=cohort.draw_amyloid(_rng(seed, index, 2, 1)) if cohort else None)
    t1w = anat_mod.t1w_image(anat, _rng(seed, index, 3))
    ct = anat_mod.ct_image(anat, _rng(seed, index, 4))
    mu_true = phy.hu_to_mu(anat.hu)
    setup = get_setup(config.consortium.setup_for(index) if site else
                      config.petmr_setups[(index - 1) % len(config.petmr_setups)])
    mu_mr, mr_info = mrac.setup_mu_map(anat, setup, _rng(seed, index, 5), mu_true)
    timer["anatomy"] = time.perf_counter() - t_start
    cpu["anatomy"] = time.process_time() - c_start

    rs = _rng(seed, index, 6)
    petct_model = str(rs.choice(list(config.petct_models)))
    if site:
        petct_model = site.petct_model
    petmr_model = setup.model
    scanners = {"petct": phy.get_scanner(petct_model, res), "petmr": phy.get_scanner(
        petmr_model, res)}
    for ses, platform in (("petct", "PET-CT"), ("petmr", "PET-MR")):
        if scanners[ses].platform != platform:
            raise ValueError(f"{scanners[ses].model!r} is not a {platform} scanner")

    # ---- uptake per tracer (same true distribution in both sessions)
    t0, c0 = time.perf_counter(), time.process_time()
    tracer_data = {}
    per_tracer = {}
    for tracer in tracer_objs:
        key = uptake.tracer_seed(tracer.name)
        suv_w, suv_f, info = uptake.window_suv(anat, tracer, disease, _rng(seed, index, 7, key))
        starts, durs = frame_protocol(tracer, config)
        win = window_frames(tracer, starts, durs)
        w_win, w_flow = uptake.frame_weights(tracer, starts, durs)
        rdose = _rng(seed, index, 8, key)
        doses = {s: float(np.round(uptake.DOSE_MBQ[tracer.name] * rdose.uniform(0.9, 1.1), 2))
                 for s in SESSIONS}
        tracer_data[tracer.name] = {"tracer": tracer, "suv_window": suv_w, "suv_flow": suv_f,
                                    "starts": starts, "durations": durs, "window_mask": win,
                                    "doses": doses}
        wwin = float(np.sum(w_win[win] * durs[win]) / np.sum(durs[win]))
        wflow = float(np.sum(w_flow[win] * durs[win]) / np.sum(durs[win]))
        tracer_data[tracer.name]["window_weights"] = (wwin, wflow)
        per_tracer[tracer.name] = {**info, "family": tracer.family,
                                   "window_min": list(tracer.window_min),
                                   "injected_mbq": doses}
    timer["uptake"] = time.perf_counter() - t0
    cpu["uptake"] = time.process_time() - c0

    # ---- sessions
    sessions, native = {}, {}
    recon = {"petct": {}, "petmr": {}}
    truth_activity = {}
    for s_i, ses in enumerate(SESSIONS):
        t0, c0 = time.perf_counter(), time.process_time()
        scanner = scanners[ses]
        pose, rot, trans = _session_pose(_rng(seed, index, 9, s_i), config.motion)
        if ses == "petct":
            grid = CT_GRID
            voxel, shape = _grid_shape(grid, res)
            aff_n = native_affine(grid["codes"], voxel, shape)
            anat_native = phy.resample(anat.hu, pose @ anat.affine, shape, aff_n, cval=-1000.0)
            rn = _rng(seed, index, 10, s_i)
            anat_native += ndimage.gaussian_filter(
                rn.normal(0, 8.0, shape).astype(np.float32), 0.6)
            anat_native = np.clip(np.round(anat_native), -1024, 3071).astype(np.int16)
            mu_ac = phy.hu_to_mu(anat_native.astype(np.float32))
            mu_ac_affine = aff_n
            ses_setup = get_setup("ct")
            software = f"bids_harmonize.synth {__version__}"
        else:
            grid = T1W_GRID
            voxel, shape = _grid_shape(grid, res)
            aff_n = native_affine(grid["codes"], voxel, shape)
            t1_clean = sum(anat.fractions[c] * np.float32(anat_mod.T1[c])
                           for c in anat_mod.CLASSES)
            t1n = phy.resample(t1_clean, pose @ anat.affine, shape, aff_n)
            rn = _rng(seed, index, 10, s_i)
            bias = 1.0 + 0.12 * anat_mod._smooth_field(rn, shape, n_waves=3, scale_mm=250.0,
                                                        affine=np.diag([*voxel, 1.0]))
            t1n = t1n * bias
            n1 = rn.normal(0, 0.02, shape)
            n2 = rn.normal(0, 0.02, shape)
            anat_native = (np.sqrt((t1n + n1) ** 2 + n2**2) * 1000.0).astype(np.float32)
            mu_ac = mu_mr
            ac_pose = pose
            if config.motion:  # the head moved between the MR-AC acquisition and the PET
                ra = _rng(seed, index, 14)
                ac_rot = ra.normal(0.0, setup.get("ac_motion_deg"), 3)
                ac_trans = ra.normal(0.0, setup.get("ac_motion_mm"), 3)
                ac_pose = phy.rigid(tuple(ac_rot), tuple(ac_trans)) @ pose
                mr_info["ac_motion_rotation_deg"] = [round(float(v), 3) for v in ac_rot]
                mr_info["ac_motion_translation_mm"] = [round(float(v), 3) for v in ac_trans]
            mu_ac_affine = ac_pose @ anat.affine
            ses_setup = setup
            software = setup.software_versions[-1]
        # activity concentration (Bq/mL) images: SUV * dose / weight
        tdata = {}
        for name, td in tracer_data.items():
            delay = petmr_delay(td["tracer"]) if ses == "petmr" else 0.0
            conc = td["doses"][ses] * 1e6 / (weight * 1000.0)
            suv_window, wweights = td["suv_window"], td["window_weights"]
            if delay > 0:  # later scan: frames shifted, uptake drifted (kinetic model)
                suv_window = uptake.later_window_image(suv_window, anat.labels, td["tracer"],
                                                       delay)
                w_win, w_flow = uptake.frame_weights(td["tracer"], td["starts"] + delay,
                                                     td["durations"])
                win, durs = td["window_mask"], td["durations"]
                wweights = (float(np.sum(w_win[win] * durs[win]) / np.sum(durs[win])),
                            float(np.sum(w_flow[win] * durs[win]) / np.sum(durs[win])))
            if session_sd > 0:  # this session's physiology (test-retest), own stream
                factor = float(np.exp(_rng(seed, index, 15, s_i, uptake.tracer_seed(
                    name)).normal(0.0, session_sd)))
                suv_window = uptake.session_window_image(suv_window, anat.labels,
                                                         td["tracer"], factor)
                per_tracer[name].setdefault("session_ratio_factor", {})[ses] = round(
                    factor, 5)
            tdata[name] = {"tracer": td["tracer"], "starts": td["starts"] + delay,
                           "durations": td["durations"], "suv_window": suv_window,
                           "window_weights": wweights,
                           "window": suv_window * np.float32(conc),
                           "flow": td["suv_flow"] * np.float32(conc)}
        frame_poses = None
        if config.dynamic and config.motion:
            rm = _rng(seed, index, 11, s_i)
            drift_r, drift_t = rm.uniform(-1.0, 1.0, 3), rm.uniform(-1.5, 1.5, 3)
            frame_poses = {}
            for name, td in tdata.items():
                t_end = td["starts"][-1] + td["durations"][-1]
                frame_poses[name] = [
                    phy.rigid(tuple(drift_r * st / t_end), tuple(drift_t * st / t_end)) @ pose
                    for st in td["starts"]]
        pet_aff, frames_all, counts, mu_ac_pet, scatter_fr = _acquire(
            anat=anat, pose=pose, scanner=scanner, mu_true=mu_true, mu_ac=mu_ac,
            mu_ac_affine=mu_ac_affine, tracer_data=tdata,
            config=replace(config, count_scale=config.count_scale * (
                site.count_scale_petct if ses == "petct" else site.count_scale_petmr))
            if site else config,
            rng_for=lambda nm, s_i=s_i: _rng(seed, index, 12, s_i, uptake.tracer_seed(nm)),
            frame_poses=frame_poses,
            coil_missing=setup.get("coil_missing_fraction") if ses == "petmr" else 0.0)
        for name, sf in scatter_fr.items():
            per_tracer[name].setdefault("scatter_fraction", {})[ses] = round(
                float(np.mean(sf)), 4)
        for name, c in counts.items():
            per_tracer[name].setdefault("expected_true_counts_per_frame", {})[ses] = [
                float(f"{v:.4g}") for v in c]
        # static window image back on the reference grid (duration-weighted window mean)
        statics = []
        for name, td in tracer_data.items():
            win, durs = td["window_mask"], td["durations"]
            statics.append(np.tensordot(frames_all[name][..., win], durs[win] / durs[win].sum(),
                                        axes=([3], [0])).astype(np.float32))
        backs = phy.resample_many(statics, np.linalg.inv(pose) @ pet_aff, anat.shape,
                                  anat.affine)
        for (name, td), back in zip(tracer_data.items(), backs, strict=True):
            recon[ses][name] = back
            conc = td["doses"][ses] * 1e6 / (weight * 1000.0)
            wwin, wflow = tdata[name]["window_weights"]
            truth = (tdata[name]["suv_window"] * wwin + td["suv_flow"] * wflow) * np.float32(
                conc)
            truth_activity.setdefault(name, {})[ses] = truth.astype(np.float32)
        sessions[ses] = SessionTruth(
            session=ses, platform=scanner.platform, manufacturer=scanner.manufacturer,
            model=scanner.model, attenuation_correction=ses_setup.ac_text,
            ac_setup=ses_setup.name, software_versions=software,
            psf_fwhm_mm=scanner.psf_fwhm_mm, pose=pose, rotation_deg=rot, translation_mm=trans)
        if keep_native:
            hh = _rng(seed, index, 13, s_i)
            native[ses] = NativeSession(
                anat=anat_native, anat_affine=aff_n,
                pet={k: v for k, v in frames_all.items()}, pet_affine=pet_aff,
                frames={k: (v["starts"], v["durations"]) for k, v in tdata.items()},
                dose_mbq={k: v["doses"][ses] for k, v in tracer_data.items()},
                injection_clock={k: f"{8 + 5 * s_i + 2 * i:02d}:{int(hh.integers(0, 59)):02d}:00"
                                 for i, k in enumerate(tracer_data)},
                scanner=scanner, mumap=mu_ac_pet, scatter_fraction=scatter_fr)
        timer[f"session_{ses}"] = time.perf_counter() - t0
        cpu[f"session_{ses}"] = time.process_time() - c0
    cpu[f"session_{ses}"] = time.process_time() - c0

    # The true activity is expressed for the PET-CT dose; regional tables per session use
    # each session's own true image (doses differ slightly between sessions).
    activity = {name: truth_activity[name]["petct"] for name in truth_activity}
    for name, img in activity.items():
        per_tracer[name]["true_measures"] = uptake.true_measures(
            img, anat.labels, tracer_data[name]["tracer"])
    t0, c0 = time.perf_counter(), time.process_time()
    regional = regional_table(anat.labels, truth_activity, recon)
    timer["regional"] = time.perf_counter() - t0
    cpu["regional"] = time.process_time() - c0
    params = {
        "subject": f"{index:02d}", "age": age, "sex": sex, "weight_kg": weight,
        **disease, "anatomy": anat.params, "mr_attenuation": mr_info,
        "ac_setups": {"petct": "ct", "petmr": setup.name},
        "petmr_delay_min": ({t.name: petmr_delay(t) for t in tracer_objs} if site
                            else float(config.petmr_delay_min)),
        "scanners": {s: sessions[s].model for s in SESSIONS}, "tracers": per_tracer,
    }
    if site:
        from bids_harmonize.resolution import scanner_resolution

        params["site"] = {
            "consortium": config.consortium.name, "name": site.name,
            "institution": site.institution,
            "petct_count_scale": site.count_scale_petct,
            "petmr_count_scale": site.count_scale_petmr,
            "session_sd": session_sd,
            "effective_resolution_mm": {
                s: (scanner_resolution(sessions[s].model).fwhm_mm
                    if scanner_resolution(sessions[s].model) else None) for s in SESSIONS},
        }
    subject = SimulatedSubject(
        subject=f"{index:02d}", index=index, seed=seed, affine=anat.affine.copy(), t1w=t1w,
        ct_hu=ct, mu_true=mu_true, mu_mr=mu_mr, labels=anat.labels.astype(np.int16),
        brain_mask=anat.labels > 0,
        tissue={"GM": anat.fractions["GM"], "WM": anat.fractions["WM"],
                "CSF": anat.fractions["CSF"]},
        activity=activity, pet_ct=recon["petct"], pet_mr=recon["petmr"], params=params,
        sessions=sessions, regional=regional)
    timer["total"] = time.perf_counter() - t_start
    cpu["total"] = time.process_time() - c_start
    subject.params["timing_s"] = {k: round(v, 3) for k, v in timer.items()}
    subject.params["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
    LOGGER.info("sub-%02d simulated in %.1f s (%s)", index, timer["total"],
                ", ".join(f"{k} {v:.1f}" for k, v in timer.items() if k != "total"))
    return subject, native, tracer_data


def regional_table(labels, truth_activity, recon) -> list[dict]:
    """Per tracer and region: true means per session, PET-CT/PET-MR means and their ratio."""
    table = synth_label_table()
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=25)
    rows = []

    def means(img):
        return np.bincount(flat, weights=img.ravel().astype(np.float64), minlength=25) / \
            np.maximum(counts, 1)

    for name in recon["petct"]:
        true_ct = means(truth_activity[name]["petct"])
        true_mr = means(truth_activity[name]["petmr"])
        ct = means(recon["petct"][name])
        mr = means(recon["petmr"][name])
        for idx, region in zip(table["index"], table["name"], strict=True):
            i = int(idx)
            rows.append({
                "tracer": name, "index": i, "region": region, "voxels": int(counts[i]),
                "true_petct": float(true_ct[i]), "true_petmr": float(true_mr[i]),
                "petct": float(ct[i]), "petmr": float(mr[i]),
                "petct_recovery": float(ct[i] / true_ct[i]) if true_ct[i] else float("nan"),
                "petmr_recovery": float(mr[i] / true_mr[i]) if true_mr[i] else float("nan"),
                "ratio_petmr_petct": float((mr[i] / true_mr[i]) / (ct[i] / true_ct[i]))
                if ct[i] and true_mr[i] else float("nan"),
            })
    return rows


def simulate_subject(
    index: int,
    *,
    seed: int = 0,
    tracers: Sequence[str] = ("PiB",),
    config: SynthConfig | None = None,
) -> SimulatedSubject:
    """Simulate subject ``index`` (1-based; BIDS label ``f"{index:02d}"``).

    Deterministic in ``(index, seed, config)``; a subject's anatomy and latent disease
    parameters do not depend on which tracers are asked for.  ``tracers`` are names or
    aliases of ``tracers.yaml`` (returned keys are the canonical names).  See
    :class:`~bids_harmonize.synth.api.SimulatedSubject` for what comes back; the
    ``activity`` truth is scaled to the PET-CT session's injected dose, and
    ``pet_mr`` is rescaled to the PET-CT dose too (``pet_mr * dose_ct / dose_mr``) so
    that PET-MR/PET-CT ratios on the arrays are pure platform effects.
    """
    subject, _, tracer_data = _simulate(index, seed=seed, tracers=tracers, config=config)
    for name, td in tracer_data.items():
        f = td["doses"]["petct"] / td["doses"]["petmr"]
        subject.pet_mr[name] = (subject.pet_mr[name] * np.float32(f)).astype(np.float32)
    return subject
