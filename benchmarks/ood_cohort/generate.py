"""Write the out-of-distribution cohort: `python benchmarks/ood_cohort/generate.py -o DIR [--n 24] [--seed 0]`.

Then `shmn evaluate MODEL --data DIR` scores a model on it (every case is in the test split).
See ood_phantom.py for what the generator does and why it shares no code with shmn.synthesis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ood_phantom import generate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="folder for the cohort (must not hold one)")
    parser.add_argument("--n", type=int, default=24, help="number of cases (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    generate(Path(args.output), args.n, args.seed, log=(lambda *_: None) if args.quiet else print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
