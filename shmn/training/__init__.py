"""Training and its measurement: typed configs and presets, data, the train loop, checkpoints, distributed, validation, evaluation, the ablation benchmark."""
