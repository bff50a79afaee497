"""Lesion geometry (components, centres, density maps) and the metrics that score segmentations and MACS predictions."""
