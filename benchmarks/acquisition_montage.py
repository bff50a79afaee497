"""One OOD subject as each acquisition shows it, with its reference lesions (yellow) and ventricles (cyan) and,
when given, a model's (`shmn predict` output folders: red / blue).

    python benchmarks/acquisition_montage.py --case ood003 --cohort box=ood67 --cohort clinical=clinical-67 \
        --cohort 3d=3d-67 [--predictions box=pred/box ...] -o montage.png

The axial slice (anterior up, the patient's right on the left) with the most reference lesion of the first cohort,
on a 1 mm grid over its field of view, is taken from every image (linear; labels nearest) with the overview's own
slicing (shmn.reporting.overview), so that the panels show the same anatomy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmn.reporting.overview import _physical_bounds, _sample, _slice_reference


def _slice_grid(first_label: sitk.Image) -> sitk.Image:
    """The 1 mm axial slice (LPS-aligned, over ``first_label``'s field of view) where that label has most voxels."""
    low, high = _physical_bounds(first_label)
    grid = sitk.Image([int(np.ceil(h - l)) + 1 for l, h in zip(low, high)], sitk.sitkUInt8)
    grid.SetOrigin(low.tolist())
    counts = sitk.GetArrayFromImage(sitk.Resample(first_label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)).sum(axis=(1, 2))
    z = int(np.argmax(counts)) if counts.any() else len(counts) // 2
    return _slice_reference(low, high, 1.0, 2, low + np.array([0.0, 0.0, float(z)]))


def _on(grid: sitk.Image, image: sitk.Image, label: bool) -> np.ndarray:
    return _sample(image, grid, sitk.sitkNearestNeighbor if label else sitk.sitkLinear, 2)


def _pairs(values: list[str], option: str) -> dict[str, Path]:
    pairs = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"{option} {value!r}: expected NAME=FOLDER")
        pairs[name] = Path(path)
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="case id, e.g. ood003")
    parser.add_argument("--cohort", action="append", required=True, help="NAME=FOLDER of an OOD cohort (generate.py's output)")
    parser.add_argument("--predictions", action="append", help="NAME=FOLDER of shmn predict's output for that cohort's case")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohorts, predictions = _pairs(args.cohort, "--cohort"), _pairs(args.predictions, "--predictions")
    files = {name: {"image": folder / "images" / f"{args.case}.nii.gz", "pvl": folder / "labels" / "pvl" / f"{args.case}.nii.gz",
                    "ventricles": folder / "labels" / "ventricles" / f"{args.case}.nii.gz"} for name, folder in cohorts.items()}
    for name, group in files.items():
        for path in group.values():
            if not path.is_file():
                raise SystemExit(f"--cohort {name}: {path} not found (expected generate.py's layout)")
    grid = _slice_grid(sitk.ReadImage(str(next(iter(files.values()))["pvl"])))
    fig, axes = plt.subplots(1, len(files), figsize=(4.2 * len(files), 4.8), squeeze=False)
    for ax, (name, group) in zip(axes[0], files.items()):
        source = sitk.ReadImage(str(group["image"]))
        image = _on(grid, source, False)
        ax.imshow(image, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99.5)), origin="upper")
        for key, colour in (("pvl", "yellow"), ("ventricles", "cyan")):
            ax.contour(_on(grid, sitk.ReadImage(str(group[key])), True) > 0, [0.5], colors=colour, linewidths=0.8)
        if name in predictions:
            for key, colour in (("pvl", "red"), ("ventricles", "blue")):
                ax.contour(_on(grid, sitk.ReadImage(str(predictions[name] / f"{key}.nii.gz")), True) > 0, [0.5], colors=colour,
                           linewidths=0.8, linestyles="dashed")
        spacing = "x".join(f"{s:.2g}" for s in source.GetSpacing())
        ax.set_title(f"{name}: {spacing} mm", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{args.case}: reference lesions yellow, ventricles cyan" + ("; predicted red / blue, dashed" if predictions else "")
                 + " (synthetic)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
