"""``rmt-compare RUN [RUN ...]``: :func:`rmt_callbacks.compare` from the command line.

    rmt-compare lr-0.1 lr-0.05 --experiment scaling --tracking-uri sqlite:///mlflow.db --out comparison/

Prints the comparison run's id, where its figures are, and the table; exits 2 on an unknown run (with the runs
there are) or when nothing can be compared.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence

from . import UnknownRun, compare

__all__ = ["main"]

COLUMNS: tuple[str, ...] = ("matrix", "run", "run_id", "step", "n_levels", "lambda_max", "mp_sigma2", "surmise_beta")
COLUMNS += ("noise_temperature", "dyson_width", "dyson_width_normalized")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmt-compare",
        description="Overlay the spectra, spacings and Dyson fluctuations of several MLflow runs, logged as a new run.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids or run names (two or more)")
    parser.add_argument("--experiment", help="look run names up in this experiment")
    parser.add_argument("--matrix", action="append", metavar="PATTERN", help="fnmatch pattern on matrix names")
    parser.add_argument("--step", default="last", help="'last' (each run's last analysed step) or a step number")
    parser.add_argument("--tracking-uri", help="the MLflow store (default: MLflow's current one)")
    parser.add_argument("--out", help="also write the figures and the table into this folder")
    parser.add_argument("--no-log", action="store_true", help="do not log the comparison as an MLflow run")
    return parser


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    step: int | str = args.step
    if step != "last":
        if not str(step).isdigit():
            print(f"rmt-compare: --step must be 'last' or a step number, got {step!r}", file=sys.stderr)
            return 2
        step = int(step)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            result = compare(
                args.runs, tracking_uri=args.tracking_uri, experiment=args.experiment, matrices=args.matrix,
                step=step, out=args.out, log=not args.no_log,  # type: ignore[arg-type]
            )  # fmt: skip
    except (UnknownRun, ValueError) as exc:
        print(f"rmt-compare: {str(exc).removeprefix('compare: ')}", file=sys.stderr)
        return 2
    for warning in said:  # compare's own; other libraries' warnings are not this command's to repeat
        text = str(warning.message)
        if text.startswith("compare: "):
            print(f"rmt-compare: warning: {text.removeprefix('compare: ')}", file=sys.stderr)
    if result.run_id is not None:
        from mlflow import MlflowClient

        where = MlflowClient(args.tracking_uri).get_run(result.run_id).info.artifact_uri
        print(f"comparison run {result.run_id} (tag rmt.compare_of={','.join(result.steps)})")
        print(f"its figures and table: {where}/compare/")
    if args.out:
        print(f"figures and table written to {args.out}")
    rows = [[_cell(row.get(c, "")) for c in COLUMNS] for row in result.table]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    for line in [list(COLUMNS), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
