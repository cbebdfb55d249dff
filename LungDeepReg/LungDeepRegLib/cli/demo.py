"""``lungdeepreg demo``: register the bundled sample pair and write its QA report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..pipeline.demo import build_demo_pair
from ..pipeline.register import register
from .register import add_option_arguments, options_from, print_progress, summarize


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="register the bundled sample (POPI) with a synthetic exhale",
        description="Builds a realistic breathing pair from the bundled POPI sample "
                    "(known motion, 100 landmarks), registers it and writes the QA report.")
    parser.add_argument("--out", type=Path, default=Path("lungdeepreg-demo"),
                        help="output folder (default: ./lungdeepreg-demo)")
    add_option_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"building the demo pair in {args.out / 'inputs'}")
    inputs = build_demo_pair(args.out / "inputs")
    result = register(inputs, args.out / "registration", options_from(args), print_progress)
    summarize(result.metrics)
    print(f"QA report: {result.files.get('report', result.out_dir / 'metrics.json')}")
    return 0
