"""Command-line interface: ``lungdeepreg <command>``, ``python -m LungDeepRegLib <command>``.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
Bad input raises :class:`InputError`, printed as ``error: <file>: <problem>`` with exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import InputError
from ..version import __version__
from . import batch, bench, demo, evaluate, info, qa_landmarks, register, train

COMMANDS = (info, register, batch, demo, evaluate, qa_landmarks, train, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungdeepreg",
        description="Inhale/exhale lung CT registration with a multilevel deep network, "
                    "instance optimisation and QA.")
    parser.add_argument("--version", action="version", version=f"lungdeepreg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
