"""`shmn dataset init FOLDER` and `shmn dataset status FOLDER`: the annotator's dataset, from the command line.

SHMN Training calls the same functions (shmn.io.dataset) when it opens a folder.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dataset",
        help="make a dataset (manifest.json) from a folder of images, or show which case has which label",
        description="The annotator's dataset: a folder with manifest.json naming each case's image, masks "
                    "(labels/<kind>/<id>.nii.gz) and MACS group; the format `shmn train` and `shmn evaluate` read.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="write manifest.json for a plain folder of images (nothing is moved)",
        description="Write FOLDER/manifest.json for the images in FOLDER/images/ (or FOLDER itself): one case per "
                    "image, masks already at labels/pvl/<id>.nii.gz or labels/ventricles/<id>.nii.gz picked up, "
                    "seeded 70/10/20 train/val/test splits. An existing manifest is never replaced.",
    )
    init.add_argument("folder", metavar="FOLDER", help="folder of NIfTI, NRRD or MHA images")
    init.add_argument("--name", default="", help="dataset name (default: the folder's name)")
    status = actions.add_parser("status", help="which case has which label",
                                description="One row per case: split, PVL mask, ventricle mask, MACS group; "
                                            "a mask the manifest names but the folder lacks shows as MISSING FILE.")
    status.add_argument("folder", metavar="FOLDER", help="dataset folder (or its manifest.json)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    for action in (init, status):  # `-q` after the action too, as every other command takes it
        action.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no chatter")
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.io.dataset import init_dataset, status_record, status_summary, status_table
    from shmn.io.manifest import load_manifest

    if args.action == "init":
        manifest = init_dataset(args.folder, name=args.name)
        if not getattr(args, "quiet", False):
            splits = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
            print(f"wrote {manifest.path}: {status_summary(manifest)}; splits train {splits['train']}, "
                  f"val {splits['val']}, test {splits['test']}")
        return 0
    manifest = load_manifest(args.folder, check_files=False)
    print(json.dumps(status_record(manifest), indent=2) if args.json else status_table(manifest))
    return 0
