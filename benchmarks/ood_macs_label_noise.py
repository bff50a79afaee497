"""The MACS figures of an OOD cohort against its observed groups and against its noise-free ones.

The OOD generator (benchmarks/ood_cohort) flips about 15 % of its MACS groups, as the issue asked ("some label
noise on MACS"), and records which (cases.json: macs_flipped). So no estimate can reach accuracy 1 or AUC 1
against the observed groups: this script prints that ceiling (an oracle that knows every noise-free group),
and each MACS estimate of a `shmn evaluate` output against both the observed and the noise-free groups.

    python benchmarks/ood_macs_label_noise.py --cohort /work/runs/ood13 --metrics ood-seed13.json [--cohort ... --metrics ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shmn.measures.burden_macs import ESTIMATE_KEYS  # noqa: E402
from shmn.measures.metrics import macs_metrics  # noqa: E402


def cohort_groups(cohort: Path) -> dict[str, tuple[float, float]]:
    """case id -> (observed, noise-free) group, 1 severe / 0 mild, from the generator's cases.json."""
    records = json.loads((cohort / "cases.json").read_text())
    records = records.get("cases", records)
    groups = {}
    for case_id, record in records.items():
        observed = 1.0 if record["macs"] == "severe" else 0.0
        groups[case_id] = (observed, 1.0 - observed if record["macs_flipped"] else observed)
    return groups


def label_noise_table(cohort: Path, metrics: Path) -> dict:
    groups = cohort_groups(cohort)
    cases = [c for c in json.loads(metrics.read_text())["cases"] if c["id"] in groups]
    rows = {"oracle (knows the noise-free group)": [groups[c["id"]][1] for c in cases]}
    rows.update({estimate: [c[key] for c in cases] for estimate, key in ESTIMATE_KEYS.items()})
    out = {"cohort": str(cohort), "metrics": str(metrics), "n": len(cases),
           "flipped": sum(groups[c["id"]][0] != groups[c["id"]][1] for c in cases), "estimates": {}}
    for name, probabilities in rows.items():
        out["estimates"][name] = {
            label: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in
                    macs_metrics(probabilities, [groups[c["id"]][which] for c in cases]).items()}
            for label, which in (("observed", 0), ("noise_free", 1))
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, action="append", required=True, help="an OOD cohort folder (cases.json)")
    parser.add_argument("--metrics", type=Path, action="append", required=True, help="shmn evaluate's JSON on that cohort")
    parser.add_argument("-o", "--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if len(args.cohort) != len(args.metrics):
        parser.error("give one --metrics per --cohort")
    tables = [label_noise_table(c, m) for c, m in zip(args.cohort, args.metrics)]
    print("| cohort | flipped / n | estimate | AUC observed | AUC noise-free | accuracy observed | accuracy noise-free | ECE noise-free |")
    print("|---|---|---|---|---|---|---|---|")
    for table in tables:
        for name, figures in table["estimates"].items():
            o, t = figures["observed"], figures["noise_free"]
            print(f"| {Path(table['cohort']).name} | {table['flipped']} / {table['n']} | {name} | {o['auc']:.3f} | {t['auc']:.3f} "
                  f"| {o['accuracy']:.3f} | {t['accuracy']:.3f} | {t['ece']:.3f} |")
    if args.output:
        args.output.write_text(json.dumps(tables, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
