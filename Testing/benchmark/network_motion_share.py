"""How much of the motion does a network find? Its share of the motion beyond the affine
alignment, on the real tuning pairs and on synthetic validation pairs.

Usage: ``python Testing/benchmark/network_motion_share.py --model NAME_OR_PATH [--model ...]
[--config TRAINING.toml ...] [--synthetic-pairs 8] [--threads 2]``

A network whose TRE is close to the affine's can be wrong in direction or right in direction
but too small. This tells which. On each declared *tuning* breathing pair
(``Testing/benchmark/data_split.toml``) it registers the pair with the affine alignment
alone, with optimisation alone (no network) and with each network alone
(``--refine-iterations 0``), and compares the fields in the fixed lung: the optimisation's
motion beyond the affine, ``r``, stands for the truth (it halves the affine's TRE there);
the network's, ``n``, is measured against it by its **share** ``<n, r> / <r, r>`` (1: all
of it, 0: none, the least-squares gain of ``n`` on ``r``), its mean magnitude against
``r``'s, and the cosine of the two. On synthetic validation pairs of ``--config`` (the
pairs a training run validates on, never trained on) the true field takes ``r``'s place and
the network's output on the pair is ``n`` (models trained at another input size are left
out). Writes ``results/network_motion_share.md`` with
this command.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import SimpleITK as sitk
import torch
from provenance import header
from tune_self_checks import tuning_breathing_pairs

import LungDeepRegLib.pipeline.register as register_module
from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register
from LungDeepRegLib.training.config import load_config
from LungDeepRegLib.training.sources import build_sources

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DEFAULT_CONFIG = BENCH / "configs" / "allct128_affine_free.toml"


def agreement(network: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Share, magnitude ratio and cosine of ``network`` against ``reference`` ((N, 3) mm)."""
    dot = float((network * reference).sum())
    reference_norm = float((reference * reference).sum())
    network_norm = float((network * network).sum())
    return {"share": dot / reference_norm,
            "magnitude": float(network.norm(dim=1).mean() / reference.norm(dim=1).mean()),
            "cosine": dot / max((reference_norm * network_norm) ** 0.5, 1e-12),
            "reference_mm": float(reference.norm(dim=1).mean()),
            "error_mm": float((network - reference).norm(dim=1).mean())}


@contextmanager
def adapted_models(adapt: Callable[[torch.nn.Module, dict], tuple[torch.nn.Module, dict]]
                   ) -> Iterator[None]:
    """Within the block, every model ``register`` loads passes through ``adapt(network,
    card)`` (e.g. a wrapper module, or a card asking for another crop size); the pipeline's
    own loader comes back afterwards. For ablations only: nothing is written."""
    load = register_module._load

    def adapted(name: str, device: torch.device):
        network, card = load(name, device)
        return (network, card) if network is None else adapt(network, card)
    register_module._load = adapted
    try:
        yield
    finally:
        register_module._load = load


def registered(pair: dict, out: Path, threads: int, model: str,
               iterations: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(field (z, y, x, 3) mm, fixed lung mask, metrics) of one ``register`` run."""
    inputs = RegistrationInputs(fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
                                fixed_landmarks=Path(pair["fixed_landmarks"]),
                                moving_landmarks=Path(pair["moving_landmarks"]),
                                landmark_format=pair["landmark_format"])
    options = RegistrationOptions(model=model, refine_iterations=iterations, threads=threads,
                                  report=False)
    metrics = register(inputs, out, options).metrics
    field = torch.from_numpy(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "field.nrrd"))))
    lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "fixed_lungs.nrrd"))) > 0
    return field.double(), torch.from_numpy(lungs), metrics


def real_rows(models: list[str], threads: int, work: Path) -> list[list[str]]:
    rows = []
    for pair in tuning_breathing_pairs():
        affine, lungs, affine_metrics = registered(pair, work / pair["id"] / "affine", threads,
                                                   "none", 0)
        optimised, _, opt_metrics = registered(pair, work / pair["id"] / "opt", threads,
                                               "none", None)
        reference = (optimised - affine)[lungs]
        for model in models:
            out = work / pair["id"] / Path(model).stem
            field, _, metrics = registered(pair, out, threads, model, 0)
            found = agreement((field - affine)[lungs], reference)
            start = metrics["run"]["network_start"]
            rows.append([pair["id"], Path(model).stem, f"{found['reference_mm']:.2f}",
                         f"{found['share']:.2f}", f"{found['magnitude']:.2f}",
                         f"{found['cosine']:.2f}", f"{found['error_mm']:.2f}",
                         start.get("start", ""),
                         f"{affine_metrics['landmarks']['after']['mean']:.2f} / "
                         f"{opt_metrics['landmarks']['after']['mean']:.2f} / "
                         f"{metrics['landmarks']['after']['mean']:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    return rows


@torch.no_grad()
def synthetic_rows(models: list[str], config_path: Path, count: int) -> list[list[str]]:
    config = load_config(config_path)
    _, validation = build_sources(config)
    pairs = [validation.pair(index) for index in range(count)]
    rows = []
    for model_name in models:
        model, card = load_model(model_name)
        if tuple(card["input"]["size_xyz"]) != tuple(config.model.input_size):
            print(f"{model_name}: trained at {card['input']['size_xyz']}, the pairs are "
                  f"{list(config.model.input_size)}: left out", flush=True)
            continue
        found = []
        for pair in pairs:
            lungs = pair.fixed_mask[0, 0] > 0
            truth = pair.field[0].permute(1, 2, 3, 0)[lungs].double()
            output = model(pair.fixed, pair.moving, pair.grid)[0].permute(1, 2, 3, 0)[lungs]
            found.append(agreement(output.double(), truth))
        mean = {key: sum(f[key] for f in found) / len(found) for key in found[0]}
        rows.append([Path(model_name).stem, str(count), f"{mean['reference_mm']:.2f}",
                     f"{mean['share']:.2f}", f"{mean['magnitude']:.2f}",
                     f"{mean['cosine']:.2f}", f"{mean['error_mm']:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(row) + " |" for row in rows]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name or path")
    parser.add_argument("--config", type=Path, action="append",
                        help="training config whose validation pairs are measured "
                             f"(repeatable; default {DEFAULT_CONFIG.name})")
    parser.add_argument("--synthetic-pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "network_motion_share.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    work = Path(tempfile.mkdtemp(prefix="motion_share_"))
    real = real_rows(args.model, args.threads, work)
    configs = args.config or [DEFAULT_CONFIG]
    synthetic = {path: synthetic_rows(args.model, path, args.synthetic_pairs) for path in configs}
    lines = ["# How much of the motion a network finds (tuning pairs and validation pairs)",
             "", f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             "Share: least-squares gain of the network's motion on the reference motion in "
             "the fixed lung (1 all of it, 0 none); magnitude: mean length ratio; cosine: "
             "their agreement in direction; error: mean distance between them (mm).", "",
             "## Real tuning pairs: reference = optimisation alone minus affine", "",
             *table(["pair", "model", "reference (mm)", "share", "magnitude", "cosine",
                     "error (mm)", "network start", "TRE affine / opt / network (mm)"], real),
             ""]
    for path, rows in synthetic.items():
        lines += [f"## Synthetic validation pairs of `{path.name}`: reference = the true field",
                  "", *table(["model", "pairs", "true motion (mm)", "share", "magnitude",
                              "cosine", "error (mm)"], rows), ""]
    args.output.write_text("\n".join(lines))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
