"""The `shmn` command: one subcommand per job, one clear line and a non-zero exit on bad input."""

from __future__ import annotations

import argparse
import importlib
import sys

from shmn import __version__
from shmn.contract import ERROR_PREFIX
from shmn.errors import ShmnError

# Subcommand name -> module under shmn.commands. Imported lazily so `shmn phantom` never pays for torch.
COMMANDS = {
    "fetch-anatomy": "fetch_anatomy",
    "phantom": "phantom",
    "train": "train",
    "evaluate": "evaluate",
    "calibrate": "calibrate",
    "predict": "predict",
    "benchmark": "benchmark",
    "dataset": "dataset",
    "register": "register",
    "suggest": "suggest",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmn",
        description="SHMN: PVL lesions, ventricles, lesion centres and MACS group from a T2 FLAIR MRI. "
        "Research software; the shipped model is trained on synthetic data only.",
    )
    parser.add_argument("--version", action="version", version=f"shmn {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"shmn.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"shmn.commands.{module_name}":
                continue  # subcommand not built yet
            raise
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
        sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or chatter")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ShmnError as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shmn: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("shmn: error: out of memory; use a smaller preset, --device cuda, or close other programs", file=sys.stderr)
        return 3
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
