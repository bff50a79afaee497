"""Write the out-of-distribution cohort: `python benchmarks/ood_cohort/generate.py -o DIR [--n 24] [--seed 0] [--acquisition box|clinical|3d] [--normal-findings]`.

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
    parser.add_argument("--acquisition", choices=("box", "clinical", "3d"), default="box",
                        help="box: box slice profile, labels by the share of each voxel covered (default); clinical: the same "
                             "subjects with a Gaussian slice profile, gaps of 0-30%% of the thickness, in-plane blur, labels at voxel centres; "
                             "3d: the same subjects as a 3D FLAIR (isotropic 0.9-1.2 mm, Gaussian point spread, labels at voxel centres)")
    parser.add_argument("--normal-findings", action="store_true",
                        help="add normal FLAIR findings that are not lesions and are not labelled (frontal caps, a periventricular "
                             "rim, peritrigonal terminal zones) to the same subjects")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    generate(Path(args.output), args.n, args.seed, log=(lambda *_: None) if args.quiet else print, acquisition=args.acquisition, normal_findings=args.normal_findings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
