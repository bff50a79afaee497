"""Inference: the network on a preprocessed volume (device, precision, windows), one case end to end (`shmn predict`), batches."""
