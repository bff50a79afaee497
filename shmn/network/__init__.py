"""The network: SHMN (shared encoder, task decoders, MACS classifier), the paper's losses, safetensors model files."""
