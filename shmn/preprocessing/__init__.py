"""Preprocessing shared by training and prediction: registration to MNI152, brain mask, N4, normalisation, model grids."""
