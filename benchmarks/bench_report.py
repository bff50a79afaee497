"""Time report.html + report.pdf for one finished `shmn predict` case folder.

    python benchmarks/bench_report.py OUT/<case> [--repeat 3]

Prints the seconds of each repeat (after one warm-up that loads the anatomy cache) and the file sizes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shmn.reporting.case_report import REPORT_HTML, REPORT_PDF, write_case_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report = json.loads((args.case_dir / "report.json").read_text(encoding="utf-8"))
    write_case_report(args.case_dir, report)  # warm-up: anatomy cache, fonts, templates
    seconds = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        write_case_report(args.case_dir, report)
        seconds.append(time.perf_counter() - start)
    sizes = {name: (args.case_dir / name).stat().st_size // 1024 for name in (REPORT_HTML, REPORT_PDF)}
    print(f"report.html + report.pdf: {', '.join(f'{s:.2f}' for s in seconds)} s; sizes {sizes} KB")


if __name__ == "__main__":
    main()
