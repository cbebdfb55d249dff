"""``lungdeepreg train``: progressive training, headless (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..logic import LungDeepRegLogic
from ..training.config import load_config
from .register import print_progress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a multilevel registration model (progressive, resumable)",
        description="Train the multilevel network level by level. Start several processes "
                    "with torchrun for data-parallel training; no option changes.")
    parser.add_argument("--config", type=Path, help="TOML file (defaults: training/default.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--output", type=Path, help="output folder (train.output_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in the output folder")
    parser.add_argument("--export-crops", type=Path, metavar="CROPS.npz",
                        help="do not train: write data.synthetic_cts, cropped to the lungs at "
                             "model.input_size, as a crop cache; list it in data.synthetic_cts "
                             "to train where SimpleITK is not installed (a GPU machine)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.output is not None:
        overrides.append(f"train.output_dir={json.dumps(str(args.output.resolve()))}")
    config = load_config(args.config, overrides)
    if args.export_crops is not None:
        path = LungDeepRegLogic().export_crops(config, args.export_crops)
        print(f"crop cache written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    command = shlex.join(["lungdeepreg", *sys.argv[1:]])
    result = LungDeepRegLogic().train(config, resume=args.resume, command=command,
                                      progress=print_progress)
    if result.status == "cancelled":
        print(f"training stopped; resume with --resume (checkpoint in {result.output_dir})")
        return 1
    if result.model_path is not None:
        print(f"model written to {result.model_path}")
    return 0
