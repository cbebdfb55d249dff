"""Command-line interface: ``lungdeepreg <command>``, ``python -m LungDeepRegLib <command>``.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
Bad input raises :class:`InputError`, printed as ``error: <file or option>: <problem>`` with
exit 2 (the pipeline checks its inputs before any work, see ``pipeline/validate.py``); an
operating-system error while writing is printed the same way with exit 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ..errors import InputError
from ..version import __version__
from . import batch, bench, demo, evaluate, info, lung_mask, qa_landmarks, register, train

COMMANDS = (info, register, batch, demo, evaluate, qa_landmarks, train, bench, lung_mask)


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


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
    """Warnings as the user reads them: ``warning: <message>``, without Python's source
    location (the failed self-checks of a registration come this way)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    warnings.formatwarning = warning_line
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return InputError.exit_code
    except OSError as error:  # not bad input (a full disk, a folder gone): still no traceback
        print(f"error: {error.filename or 'output'}: {error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
