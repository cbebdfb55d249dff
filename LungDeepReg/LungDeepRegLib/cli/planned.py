"""Commands whose engine parts are not built yet: they say so and exit with code 3.

Keeping them in the parser now fixes the CLI's shape (and ``--help``) for scripts.
"""

from __future__ import annotations

import argparse
import sys

PLANNED = {
    "bench": "run the synthetic, DIR-Lab, COPDgene or pairs benchmarks",
}
NOT_AVAILABLE = 3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, summary in PLANNED.items():
        parser = subparsers.add_parser(name, help=f"{summary} (not available yet)")
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.set_defaults(run=_not_available)


def _not_available(args: argparse.Namespace) -> int:
    print(f"error: 'lungdeepreg {args.command}' is not available in this version yet",
          file=sys.stderr)
    return NOT_AVAILABLE
