"""Train on a lent GPU machine: from a crop cache, within a time limit, measured.

The GPU machine has PyTorch, numpy and safetensors but no SimpleITK, and each command there
may run 10 minutes. So the CTs are cropped here first (``lungdeepreg train --config C
--export-crops CROPS.npz``), the cache travels with the working tree, and this script

1. times the making of a few training pairs (the CPU side of a step), so that the report
   says whether pairs or the GPU bound the training;
2. makes the pairs in ``--pair-workers`` processes ahead of the GPU (train.pair_workers)
   and trains with :func:`LungDeepRegLib.training.run.train_model` until the run ends or
   ``--stop-after`` seconds pass (then the trainer checkpoints; ``--resume`` continues);
3. times the network's inference at the config's input size (fp32 and bf16 autocast on a
   GPU) and reads the peak GPU memory of training and of inference;
4. copies the report (``device_report.json``), the learning curve and log, and the model
   and its card (or the checkpoint, when stopped early) into ``--out`` (the device's
   ``$OUT``).

It runs on a CPU as well (the test suite runs it at a tiny size), only slower.

Example (README, "Training where SimpleITK is missing"), on the device::

    python Testing/benchmark/train_on_device.py \\
        --config Testing/benchmark/configs/allct192_affine_free.toml \\
        --crops Testing/benchmark/crops/allct192.npz --stop-after 420 --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "LungDeepReg"))  # the engine, where it is not pip-installed

import torch  # noqa: E402

from LungDeepRegLib.device import resolve_device  # noqa: E402
from LungDeepRegLib.optional import MissingModule, optional_module  # noqa: E402
from LungDeepRegLib.spatial import Grid  # noqa: E402
from LungDeepRegLib.training.config import Config, load_config  # noqa: E402
from LungDeepRegLib.training.run import train_model  # noqa: E402
from LungDeepRegLib.training.sources import build_sources  # noqa: E402
from LungDeepRegLib.training.trainer import TrainingResult, build_model  # noqa: E402

TIMED_PAIRS = 3
WARM_UP, TIMED_RUNS = 2, 5


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="training TOML")
    parser.add_argument("--crops", type=Path,
                        help="crop cache to train from instead of the config's CTs (whose "
                             "atlas exclusions it carries)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--stop-after", type=float, default=480.0, metavar="SECONDS",
                        help="checkpoint and stop after this long (default 480)")
    parser.add_argument("--pair-workers", type=int,
                        help="processes making pairs ahead (train.pair_workers; default: all "
                             "CPUs but two on a GPU machine, none on a CPU)")
    parser.add_argument("--out", type=Path, required=True, help="folder for what comes back")
    return parser.parse_args(argv)


def default_pair_workers() -> int:
    if not torch.cuda.is_available():
        return 0  # the CPU trains: workers would only compete with it
    return max(0, (os.cpu_count() or 1) - 2)


def training_config(args: argparse.Namespace) -> Config:
    workers = default_pair_workers() if args.pair_workers is None else args.pair_workers
    overrides = [*args.overrides, f"train.pair_workers={workers}"]
    if args.crops is not None:
        overrides += [f"data.synthetic_cts={json.dumps([str(args.crops.resolve())])}",
                      "data.atlas_exclude=[]"]
    return load_config(args.config, overrides)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pairs(config: Config) -> float:
    """Mean seconds to make one training pair (on the CPU, as the trainer does)."""
    source, _ = build_sources(config)
    source.pair(0)  # first-use costs (distance maps, allocations)
    start = time.perf_counter()
    for index in range(1, TIMED_PAIRS + 1):
        source.pair(index)
    return (time.perf_counter() - start) / TIMED_PAIRS


def time_inference(config: Config, device: torch.device) -> dict[str, dict[str, float]]:
    """Median forward time and peak memory of the network at the input size."""
    model = build_model(config).to(device).eval()
    x, y, z = config.model.input_size
    grid = Grid((x, y, z), (1.5, 1.5, 1.5))
    fixed = torch.rand(1, 1, z, y, x, device=device)
    moving = torch.rand(1, 1, z, y, x, device=device)
    variants = {"fp32": torch.float32}
    if device.type == "cuda":
        variants["bf16 autocast"] = torch.bfloat16
    timings = {}
    for name, dtype in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype,
                                             enabled=dtype != torch.float32):
            for run in range(WARM_UP + TIMED_RUNS):
                synchronise(device)
                start = time.perf_counter()
                model(fixed, moving, grid)
                synchronise(device)
                if run >= WARM_UP:
                    seconds.append(time.perf_counter() - start)
        timings[name] = {"median_s": statistics.median(seconds), "runs": TIMED_RUNS,
                         **peak_memory(device)}
    return timings


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}


def steps_logged(log: Path) -> int:
    if not log.is_file():
        return 0
    return sum(1 for line in log.read_text().splitlines() if '"step"' in line
               and '"event"' not in line)


def environment(device: torch.device) -> dict[str, object]:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "device": str(device), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    found["simpleitk"] = not isinstance(optional_module("SimpleITK"), MissingModule)
    return found


def copy_back(output_dir: Path, model_name: str, finished: bool, out: Path) -> list[str]:
    """What comes back from the device: at most 8 files, 16 MiB each."""
    names = [f"{model_name}.learning_curve.csv", "train_log.jsonl"]
    if finished:
        names += [f"{model_name}{suffix}" for suffix in (".safetensors", ".json", ".md")]
    else:
        names.append("checkpoint.pt")
    copied = []
    for name in names:
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, out / name)
            copied.append(name)
    return copied


def train_with_fallback(config: Config, resume: bool, report: dict,
                        should_stop: Callable[[], bool]) -> TrainingResult:
    """Train; if the pair workers fail (a machine with too little shared memory for them),
    go on from the last checkpoint with the trainer making the pairs itself."""
    try:
        return train_model(config, resume=resume, command=report["command"],
                           should_stop=should_stop)
    except RuntimeError as error:
        if config.train.pair_workers == 0:
            raise
        print(f"pair workers failed ({error}); going on without them", flush=True)
        report["pair_workers_failed"] = str(error)[:500]
        config.train.pair_workers = 0
        return train_model(config, resume=True, command=report["command"],
                           should_stop=should_stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = training_config(args)
    device = resolve_device(config.train.device)
    report: dict[str, object] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                 "environment": environment(device),
                                 "input_size": list(config.model.input_size),
                                 "pair_workers": config.train.pair_workers}
    report["pair_seconds"] = time_pairs(config)
    print(f"one training pair: {report['pair_seconds']:.2f} s", flush=True)
    log = Path(config.train.output_dir) / "train_log.jsonl"
    steps_before = steps_logged(log) if args.resume else 0
    started = time.monotonic()
    deadline = started + args.stop_after
    result = train_with_fallback(config, args.resume, report, lambda: time.monotonic() > deadline)
    seconds = time.monotonic() - started
    steps = steps_logged(log) - steps_before
    report["training"] = {"status": result.status, "this_run_s": seconds,
                          "all_runs_s": result.wall_time_s, "steps_this_run": steps,
                          "validation": result.validation, **peak_memory(device)}
    if steps:  # validation and export included
        report["training"]["seconds_per_step"] = seconds / steps
    report["inference"] = time_inference(config, device)
    report["returned"] = copy_back(Path(config.train.output_dir), config.train.model_name,
                                   result.status == "finished", args.out)
    (args.out / "device_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
