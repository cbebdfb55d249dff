"""``lungdeepreg info``: versions, compute device and available models."""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata

from ..models import available_models
from ..version import __version__


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print versions, compute device and models")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(run=run)


def collect() -> dict:
    """Everything ``info`` reports, as a dictionary."""
    import torch

    versions = {"lungdeepreg": __version__, "python": platform.python_version()}
    for package in ("torch", "SimpleITK", "numpy", "nibabel", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "versions": versions,
        "device": {"default": "cuda" if cuda else "cpu", "cuda_available": cuda,
                   "cuda_devices": devices, "cpu_threads": torch.get_num_threads()},
        "models": [card.get("name") for card in available_models()],
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("LungDeepReg " + report["versions"]["lungdeepreg"])
    for name, version in report["versions"].items():
        print(f"  {name:12s} {version or 'not installed'}")
    device = report["device"]
    gpus = ", ".join(device["cuda_devices"]) or "none"
    print(f"device: {device['default']} (CUDA GPUs: {gpus}; CPU threads: {device['cpu_threads']})")
    models = report["models"]
    print("models: " + (", ".join(models) if models else "none installed (use --model none)"))
    return 0
