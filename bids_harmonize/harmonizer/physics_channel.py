"""The physics input channel of stage 3 (``ac_error``) for training volumes.

Training (:mod:`.train`) and the ensemble (:mod:`.uncertainty`) add it to their prepared
volumes exactly as inference (:mod:`.infer`) makes it: from the pseudo-CT of the anatomy
stages (or the CT) and the scanner's or the setup's mu-map
(:func:`.physics.ac_error_for`). Its own module so that neither of them imports the other.
"""

from __future__ import annotations


def add_physics_channel(volumes, pairs, net, config, device) -> None:
    """Add ``ac_error`` to every prepared volume (in place), as inference will make it."""
    from .infer import pseudo_mu_volume
    from .intensity import MU_WATER
    from .physics import ac_error_for

    pseudo = {}  # one pseudo-CT per subject (its pairs share the T1w)
    for vol, pair in zip(volumes, pairs, strict=True):
        if config.physics.mu_source == "ct":
            mu_est = vol["mu"] * MU_WATER
        else:
            if pair.subject not in pseudo:
                pseudo[pair.subject] = pseudo_mu_volume(net, vol["t1w"], config, device) * MU_WATER
            mu_est = pseudo[pair.subject]
        vol["ac_error"], _ = ac_error_for(
            mu_est, vol.get("scanner_mu"), getattr(pair, "ac_setup", "unknown"), config.physics, vol["pet"]
        )
