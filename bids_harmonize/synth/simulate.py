"""Assemble one simulated subject (anatomy, uptake, both sessions) on its reference grid."""

from __future__ import annotations

from collections.abc import Sequence

from bids_harmonize.synth.api import SimulatedSubject, SynthConfig


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
    aliases of ``tracers.yaml`` (returned keys are the canonical names).
    """
    raise NotImplementedError("physics in progress")
