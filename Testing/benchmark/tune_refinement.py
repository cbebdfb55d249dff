"""Re-tune the refinement's weights and schedule after a change of what it compares.

The loss weights (``tune_loss_weights.py``) were chosen while NGF was measured in the lung
mask only; since 2026-12-04 it is measured over the whole lung crop. This script registers
the same synthetic tuning pairs (bundled 2 mm POPI phase 00, seeds ``pair_seed(31337, i)``)
by optimisation alone with the current defaults and with one setting changed at a time
(``RefineConfig`` fields or loss weights), and prints the mean lung EPE.

    python Testing/benchmark/tune_refinement.py [--pairs 4] [--threads 1]

Results: ``Testing/benchmark/results/refinement_tuning.json`` with the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provenance import header
from tune_loss_weights import TUNING_SEED, run_setting, summarise, tuning_pairs

from LungDeepRegLib.device import configure_threads

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS: list[dict] = [
    {}, {"curvature": 10.0}, {"curvature": 100.0}, {"volume": 0.3},
    {"iterations": (100, 60, 60)}, {"tolerance": 0.0}, {"learning_rate": 0.25},
    {"update_sigma": 0.5},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    pairs = tuning_pairs(args.pairs)
    rows = []
    for setting in SETTINGS:
        measured = [run_setting(setting, pair) for pair in pairs]
        rows.append({"setting": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in setting.items()} or "defaults",
                     "pairs": measured, "mean": summarise(measured)})
        epes = ", ".join(f"{p['epe_mm']:.3f}" for p in measured)
        print(f"{setting or 'defaults'}: EPE {rows[-1]['mean']['epe_mm']:.3f} mm ({epes}), "
              f"folding {rows[-1]['mean']['folding_fraction']:.5f}, "
              f"{rows[-1]['mean']['seconds']:.1f} s", flush=True)
    result = {
        **header(__file__, args.threads),
        "protocol": (f"{args.pairs} synthetic breathing pairs (15-30 mm) of the bundled POPI "
                     f"2 mm sample, seeds pair_seed({TUNING_SEED}, i): tuning data; "
                     "optimisation alone from the affine pre-alignment, NGF over the crop; "
                     "lung EPE on the 2 mm output grid."),
        "settings": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "refinement_tuning.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
