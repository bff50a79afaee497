"""The card of a model file, read from the safetensors header alone: no torch, no weights read.

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of JSON;
its ``__metadata__`` (string -> string) holds the card as JSON under ``shmn.contract.CARD_KEY``.
This is the one card reader: shmn.network.model_file uses it before loading weights, and the
model registry and SHMN Training (in Slicer's own process) use it to list and register models.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from shmn.contract import CARD_KEY
from shmn.errors import ShmnError

# A header larger than this is not one shmn wrote (cards are a few kB; tensor entries ~100 bytes each).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file; ShmnError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ShmnError(f"{path}: model file not found; check the path or the model registry")
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ValueError("file shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            raw = stream.read(length)
        if len(raw) < length:
            raise ValueError("header is truncated")
        header = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ShmnError(f"{path}: cannot read the model file ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShmnError(f"{path}: not a safetensors model file ({exc})") from None
    if not isinstance(header, dict):
        raise ShmnError(f"{path}: not a safetensors model file (its header is not a JSON object)")
    return header


def read_card(path: str | os.PathLike) -> dict:
    """The SHMN card of a model file (must hold "network": the file could not be loaded without it)."""
    metadata = read_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or CARD_KEY not in metadata:
        raise ShmnError(f"{path}: safetensors file without an SHMN model card; it was not written by shmn")
    try:
        card = json.loads(metadata[CARD_KEY])
    except (TypeError, ValueError) as exc:
        raise ShmnError(f"{path}: model card is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or "network" not in card:
        raise ShmnError(f"{path}: model card has no 'network' entry; the file is incomplete")
    return card
