"""Out-of-distribution score: metadata support, feature distance, disagreement, policies."""

from __future__ import annotations

import numpy as np
import pytest

from bids_harmonize.harmonizer import ood

CARD = {"training_data": {"ac_setups": ["dixon-nobone", "zte"],
                          "petmr_models": ["Biograph mMR", "SIGNA PET/MR"],
                          "tracer_families": ["amyloid", "fdg"]}}


@pytest.mark.parametrize(("setup", "scanner", "family", "expected"), [
    ("dixon-nobone", "Biograph mMR", "amyloid", 0.0),
    ("atlas", "Biograph mMR", "amyloid", 1.0),
    (None, "Biograph mMR", "amyloid", ood.UNKNOWN_SETUP),
    ("zte", "uPMR 790", "amyloid", ood.UNSEEN_SCANNER),
    ("zte", "SIGNA PET/MR", "tau", ood.UNSEEN_FAMILY),
])
def test_metadata_support(setup, scanner, family, expected):
    part, reasons = ood.metadata_support(CARD, setup=setup, scanner=scanner, tracer_family=family)
    assert part == pytest.approx(expected)
    assert bool(reasons) == (expected > 0)


def test_unknown_setup_alone_is_ood_at_default_threshold():
    part, _ = ood.metadata_support(CARD, setup="atlas", scanner="Biograph mMR",
                                   tracer_family="amyloid")
    assert ood.assess({"metadata": part}).is_ood
    part, _ = ood.metadata_support(CARD, setup="zte", scanner="SIGNA PET/MR",
                                   tracer_family="tau")
    assert not ood.assess({"metadata": part}).is_ood  # an unseen family alone only warns less


def test_feature_distance_grows_with_shift():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(10, 4))
    stats = ood.feature_statistics(train)
    near = ood.feature_part(stats, train[0])
    far = ood.feature_part(stats, train.mean(0) + 4 * stats["reference_distance"] * np.asarray(stats["std"]))
    assert near == 0.0
    assert far == 1.0
    with pytest.raises(ValueError, match="feature vector of length"):
        ood.feature_part(stats, np.zeros(3))


def test_image_features_see_a_global_intensity_change():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    rng = np.random.default_rng(2)
    imgs = [np.exp(rng.normal(0, 0.1, (8, 8, 8))) for _ in range(5)]
    stats = ood.feature_statistics([ood.image_features([im], mask) for im in imgs])
    assert ood.feature_part(stats, ood.image_features([imgs[0]], mask)) == 0.0
    assert ood.feature_part(stats, ood.image_features([imgs[0] * 3.0], mask)) == 1.0


def test_image_features_ignore_a_rim_of_the_brain_mask():
    """A brain mask one voxel larger (a registration that differs between runs) is not OOD:
    the demo once flipped from feature part 0.0 to 1.0 between two identical runs."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    shape = (48, 48, 48)
    mask = np.zeros(shape, bool)
    mask[6:42, 6:42, 6:42] = True  # a one-voxel rim adds 17 %, as between two demo runs
    rim = ndimage.binary_dilation(mask, iterations=1) & ~mask

    def image(k):
        img = np.exp(rng.normal(0, 0.2, shape)) * (1.0 + 0.01 * k)
        img[~mask] *= 0.15  # outside the brain: CSF and skull, much darker
        return img

    stats = ood.feature_statistics([ood.image_features([image(k)], mask) for k in range(8)])
    test = image(3)
    assert ood.feature_part(stats, ood.image_features([test], mask | rim)) == 0.0
    assert ood.feature_part(stats, ood.image_features([test * 3.0], mask)) == 1.0


@pytest.mark.parametrize("policy", ood.POLICIES)
def test_policies(policy):
    inside = ood.assess({"metadata": 0.0, "feature": 0.1, "disagreement": 0.2}, policy=policy)
    assert inside.decision == "apply"
    ood.enforce(inside, "sub-01")
    outside = ood.assess({"metadata": 1.0}, policy=policy, reasons=["setup 'atlas' unseen"])
    assert outside.decision == policy
    side = outside.sidecar()
    assert side["OODDecision"] == policy and side["OODScore"] == 1.0
    assert set(side["OODComponents"]) == set(ood.COMPONENTS)
    if policy == "fail":
        with pytest.raises(ood.OODFailure, match="sub-01: out of distribution.*setup 'atlas'"):
            ood.enforce(outside, "sub-01")
    else:
        ood.enforce(outside, "sub-01")


def test_weak_parts_add_up():
    assert not ood.assess({"feature": 0.3}).is_ood
    assert ood.assess({"metadata": 0.3, "feature": 0.3, "disagreement": 0.3}).is_ood
