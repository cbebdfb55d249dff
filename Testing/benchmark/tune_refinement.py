"""Re-tune the refinement's weights and schedule after a change of what it compares.

The loss weights (``tune_loss_weights.py``) were chosen while NGF was measured in the lung
mask only; since 2026-12-04 it is measured over the whole lung crop. This script registers
the same synthetic tuning pairs (bundled 2 mm POPI phase 00, seeds ``pair_seed(31337, i)``)
by optimisation alone with the current defaults and with one setting changed at a time
(``RefineConfig`` fields or loss weights), and prints the mean lung EPE.

    python Testing/benchmark/tune_refinement.py [--pairs 4] [--threads 1]
    python Testing/benchmark/tune_refinement.py --slice-mm 5 \
        --settings '[{}, {"volume": 1.0}]' --name refinement_tuning_slices

``--slice-mm`` makes the pairs from the sample resampled to thick slices
(``ablate_crop_upsampling.thick_slices``: the case where the unseen CT A0001's 5 mm slices
put LungDeepReg behind elastix); ``--settings`` replaces the default list (a JSON list of
settings: loss weights or ``RefineConfig`` fields, ``{}`` the defaults).

Results: ``Testing/benchmark/results/<name>.json`` (default ``refinement_tuning``) with the
command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ablate_crop_upsampling import thick_slices
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
    parser.add_argument("--slice-mm", type=float, default=None,
                        help="make the pairs from the sample resampled to this slice spacing")
    parser.add_argument("--settings", type=json.loads, default=SETTINGS,
                        help="JSON list of settings (default: the one-at-a-time list)")
    parser.add_argument("--name", default="refinement_tuning", help="results file stem")
    args = parser.parse_args()
    configure_threads(args.threads)
    ct = None if args.slice_mm is None else thick_slices(args.slice_mm)
    pairs = tuning_pairs(args.pairs, ct)
    rows = []
    for setting in args.settings:
        setting = {k: tuple(v) if isinstance(v, list) else v for k, v in setting.items()}
        measured = [run_setting(setting, pair) for pair in pairs]
        rows.append({"setting": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in setting.items()} or "defaults",
                     "pairs": measured, "mean": summarise(measured)})
        epes = ", ".join(f"{p['epe_mm']:.3f}" for p in measured)
        print(f"{setting or 'defaults'}: EPE {rows[-1]['mean']['epe_mm']:.3f} mm ({epes}), "
              f"folding {rows[-1]['mean']['folding_fraction']:.5f}, "
              f"{rows[-1]['mean']['seconds']:.1f} s", flush=True)
    slices = "" if args.slice_mm is None else f" resampled to {args.slice_mm:g} mm slices"
    result = {
        **header(__file__, args.threads),
        "protocol": (f"{args.pairs} synthetic breathing pairs (15-30 mm) of the bundled POPI "
                     f"2 mm sample{slices}, seeds pair_seed({TUNING_SEED}, i): tuning data; "
                     "optimisation alone from the affine pre-alignment, NGF over the crop; "
                     "lung EPE on the 2 mm output grid."),
        "settings": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
