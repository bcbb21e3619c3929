"""Physics shared by the simulator and the harmonizer.

- :mod:`bids_harmonize.physics.tomography`: the 2-D parallel-beam projector (system
  matrix, line integrals) and filtered back-projection.
"""
