"""`greenprobe report`: an HTML report from a study's results."""

from __future__ import annotations



def add_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML report with tables and plots from a study's results",
                       description="Reads RESULTS_DIR/summary.parquet (and the per-run data) and writes "
                                   "RESULTS_DIR/report.html (self-contained) and PNG plots next to it.")
    p.add_argument("results", nargs="?", default="results", help="the study's output folder (default results/)")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    from ..study.report import write_report

    print(f"wrote {write_report(args.results)}")
    return 0
