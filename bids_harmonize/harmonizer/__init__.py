"""The three-stage PET-MR -> PET-CT harmonizer.

- :mod:`.nets` — CT anatomy autoencoder and MRI encoder (MONAI ViT blocks), residual
  log-ratio correction net (MONAI ``UnetResBlock``);
- :mod:`.losses` — reconstruction, patch-wise InfoNCE, log-domain voxel and regional losses;
- :mod:`.train` — :func:`~.train.train_model`, stage by stage with checkpoints;
- :mod:`.dataset` — :class:`~.dataset.TrainingPair`, :func:`~.dataset.load_pairs_from_derivatives`;
- :mod:`.weights` — model directories (safetensors + ``model.json``), :func:`~.weights.load_model`;
- :mod:`.infer` — :func:`~.infer.harmonize_volume`;
- :mod:`.demo` — ``python -m bids_harmonize.harmonizer.demo`` trains the shipped demo model.

Heavy dependencies (torch, MONAI) are imported by the submodules that need them, not here.
"""
