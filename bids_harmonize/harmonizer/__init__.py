"""The three-stage PET-MR -> PET-CT harmonizer.

- :mod:`.nets` — CT anatomy autoencoder and MRI encoder (MONAI ``PatchEmbeddingBlock`` +
  ``TransformerBlock``), residual log-ratio correction net (MONAI ``UnetResBlock``);
- :mod:`.losses` — reconstruction, patch-wise InfoNCE, log-domain voxel and regional losses;
- :mod:`.config` — dataclasses, and the stage-3 input channel layout declared once
  (:data:`~.config.INPUT_CHANNELS`, :func:`~.config.stage3_channels`);
- :mod:`.train` — :func:`~.train.train_model`, stage by stage with checkpoints, wiring
  :mod:`.data` (patches), :mod:`.stages` (per-stage losses), :mod:`.engine` (epoch loop),
  :mod:`.runtime` (device, torchrun/DDP), :mod:`.checkpoints` and :mod:`.card` (the
  model card's generated parts);
- :mod:`.physics` — expected attenuation-correction error of the scanner's mu-map (the
  ``ac_error`` channel of physics-guided models);
- :mod:`.dataset` — :class:`~.dataset.TrainingPair`,
  :func:`~.dataset.load_pairs_from_derivatives`;
- :mod:`.weights` — model directories (safetensors + ``model.json``),
  :func:`~.weights.load_model`;
- :mod:`.infer` — :func:`~.infer.harmonize_volume`;
- :mod:`.demo` — ``python -m bids_harmonize.harmonizer.demo`` trains the shipped demo model.

Design choices
--------------
- Everything works on ``roi_size``^3 patches of 2 mm voxels (32^3 = 64 mm by default);
  whole volumes go through MONAI's sliding-window inference with Gaussian blending.
- Stage 1 reconstructs CT as 511 keV attenuation divided by the attenuation of water
  (bilinear HU conversion, :mod:`.intensity`), with bone weighted 5x in the L1 loss.
- Stage 2 aligns T1w tokens to the frozen CT tokens with a symmetric patch-wise InfoNCE
  (temperature ``loss.temperature``), a cosine term and an L1 on the pseudo attenuation
  decoded by the frozen CT decoder; the pseudo-CT output comes from that decoder.
- Stage 3 predicts ``r`` with ``harmonized = PET-MR * exp(r)``: multiplicative, so the
  tracer's uptake level does not matter, and the subject's uptake pattern is kept. The net
  never sees the tracer. Training multiplies PET-MR and PET-CT patches by the same smooth
  random field (``uptake_augment``) so that ``r`` cannot rely on a tracer's uptake pattern.
- Resolution (PSF) differences: ``r`` is predicted at half resolution and upsampled
  (``correction.downsample = 2``) with a smoothness prior, i.e. ``r`` is deliberately
  low-frequency: it corrects the smooth attenuation/scatter-type error and only the coarse
  part of the PSF difference; it does not sharpen or blur the image. Regional means are
  matched (regional loss), voxel-level PSF differences remain (``downsample = 1`` allows
  full-resolution ``r``).
- Version 2 (physics-guided, ``correction.inputs`` with ``"ac_error"``): stage 3 also gets
  the expected attenuation-correction error of the scanner's mu-map against the stage-2
  pseudo-CT (:mod:`.physics`: ratio of attenuation-correction factors along lines of
  response, back in the image), and ``r = ac_error + learned residual``. Without the
  scanner's mu-map the map its setup would make from the pseudo-CT is used; a setup with
  bone gives ~0 by construction. Models without the channel (v1) ignore a given mu-map.
- Losses of stage 3: L1 between log images inside the dilated brain mask, ``|log|`` ratio of
  regional means over the labels present in the patch (the brain mask when there are no
  labels), squared gradient of ``r``.

Heavy dependencies (torch, MONAI) are imported by the submodules that need them, not here.
"""
