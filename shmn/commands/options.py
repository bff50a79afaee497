"""Options several `shmn` subcommands share, defined once so that they read and behave alike."""

from __future__ import annotations

import argparse

from shmn.contract import DEVICES

DEVICE_METAVAR = "|".join(DEVICES) + "|cuda:N"  # the one device policy (shmn/devices.py): cuda:N everywhere


def add_data_option(parser: argparse.ArgumentParser, help: str = "dataset folders or manifest.json files") -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help=help)


def add_device_option(parser: argparse.ArgumentParser, help: str = "auto (CUDA when present), cpu, cuda or cuda:N",
                      default: str | None = "auto") -> None:
    parser.add_argument("--device", default=default, metavar=DEVICE_METAVAR, help=help)


def add_boundary_option(parser: argparse.ArgumentParser) -> None:
    """`--boundary native|model` (shmn.inference.native_boundary): where lesion and ventricle boundaries come from."""
    parser.add_argument("--boundary", choices=("native", "model"), default="native",
                        help="native (the default): lesion and ventricle boundaries read from each input's own intensities "
                             "around the model's, on the input's grid (its finer voxels); model: the model's 2 mm "
                             "boundaries resampled as they are")


def add_tta_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--tta` / `--no-tta` (shmn.inference.flips): the left-right mirrored pass averaged in, on by default."""
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help=f"test-time mirroring (on by default): {what} (one more forward pass); --no-tta: one pass")
