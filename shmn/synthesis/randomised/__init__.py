"""On-the-fly, domain-randomised training images (issue 12; after SynthSeg, Billot et al. 2023, and
WMH-SynthSeg, Laso et al. 2024).

Every training sample is drawn fresh from label maps on the model grid (MNI space, the grid the network
sees after preprocessing): an anatomy (two independent sources), a random deformation and
mis-registration, enlarged ventricles, PVL lesions of every clinical shape, normal FLAIR
hyperintensities left unlabelled, random per-label intensities, then scanner effects (thick slices,
bias, noise, ghosts) and the same skull strip and normalisation as `shmn predict`.

One job per file:

- ``labels``: the tissue label scheme shared by every step.
- ``anatomies``: label maps of the two anatomy sources on a model grid (MNI152 + aparc+aseg; ICBM 2009a).
- ``spatial``: deformation (affine, elastic, residual mis-registration, child proportions) of a label map.
- ``pathology``: ventricular enlargement and the lesion shapes (punctate, irregular, confluent, cystic).
- ``findings``: normal FLAIR findings that are not lesions (caps, rim, terminal zones, choroid plexus,
  perivascular spaces, flow artefacts).
- ``intensities``: Gaussian-mixture intensities, FLAIR-ordered or fully random; partial volume.
- ``artefacts``: resolution (thick slices with a profile and gaps), bias, Rician noise, Gibbs, ghosts.
- ``sampler``: one training sample from a seed (the whole chain).
- ``dataset``: the torch Dataset the trainer's DataLoader workers draw from.
"""
