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
