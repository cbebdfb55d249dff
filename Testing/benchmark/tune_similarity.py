"""Which similarity the instance optimisation compares (issue 14), chosen on tuning data.

NGF (Haber & Modersitzki 2006, the loss of Hering et al. 2021), local NCC, and the mean
squared difference of MIND-SSC descriptors (Heinrich et al. 2013; ConvexAdam's choice), each
at a few weights against the tuned curvature and volume weights, register the synthetic
tuning pairs of ``tune_loss_weights.py`` (bundled 2 mm POPI phase 00, seeds
``pair_seed(31337, i)``) by optimisation alone, from the affine pre-alignment. The real
tuning pairs (POPI light 00->50 and 00->60) are measured by ``bench pairs`` with the same
settings side by side (``--methods lungdeepreg-opt,lungdeepreg-opt@mind=1,...``); this script
prints and keeps the synthetic half.

    python Testing/benchmark/tune_similarity.py [--pairs 4] [--threads 1]

Each setting also names the similarity's domain: the fixed lung mask (the paper's) or the
whole lung crop (lungs + 10 mm, the default since 2026-12-04).

Results: ``Testing/benchmark/results/NAME.json`` (default ``similarity_tuning``) with the
command line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from provenance import header
from tune_loss_weights import TUNING_SEED, run_config, summarise, tuning_pairs

from LungDeepRegLib.device import configure_threads
from LungDeepRegLib.pipeline.refine_config import RefineConfig, with_similarity

RESULTS = Path(__file__).resolve().parent / "results"
#: similarity, weight, domain ("lung": the fixed lung mask, "crop": the whole lung crop)
SETTINGS = "ngf:1:lung,ncc:1:lung,ncc:3:lung,mind:0.3:lung,mind:1:lung,mind:3:lung"


def parse_settings(text: str) -> list[tuple[str, float, str]]:
    settings = []
    for item in text.split(","):
        name, weight, domain = item.split(":")
        if domain not in ("lung", "crop"):
            raise SystemExit(f"domain must be lung or crop, got {domain!r}")
        settings.append((name, float(weight), domain))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default=SETTINGS,
                        help="comma list of SIMILARITY:WEIGHT:DOMAIN (default: %(default)s)")
    parser.add_argument("--name", default="similarity_tuning", help="results file stem")
    args = parser.parse_args()
    configure_threads(args.threads)
    pairs = tuning_pairs(args.pairs)
    rows = []
    for name, weight, domain in parse_settings(args.settings):
        config = replace(with_similarity(RefineConfig(), name, weight),
                         use_mask=domain == "lung")
        measured = [run_config(config, pair) for pair in pairs]
        rows.append({"similarity": name, "weight": weight, "domain": domain,
                     "pairs": measured, "mean": summarise(measured)})
        epes = ", ".join(f"{p['epe_mm']:.3f}" for p in measured)
        print(f"{name} {weight:g} {domain}: EPE {rows[-1]['mean']['epe_mm']:.3f} mm ({epes}), "
              f"{rows[-1]['mean']['seconds']:.1f} s", flush=True)
    result = {
        **header(__file__, torch.get_num_threads()),
        "protocol": (f"{args.pairs} synthetic breathing pairs (15-30 mm) of the bundled POPI "
                     f"2 mm sample, seeds pair_seed({TUNING_SEED}, i): tuning data; "
                     "optimisation alone from the affine pre-alignment; lung EPE on the 2 mm "
                     "output grid."),
        "settings": rows,
        "best": min(rows, key=lambda row: row["mean"]["epe_mm"]),
        "spread_mm": float(np.ptp([row["mean"]["epe_mm"] for row in rows])),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
