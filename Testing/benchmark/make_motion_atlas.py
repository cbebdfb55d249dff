"""Build the real-motion atlas that synthetic training pairs draw from.

Usage: ``python Testing/benchmark/make_motion_atlas.py [--threads 2] [--work DIR]``

Registers the declared *tuning* breathing pairs of ``Testing/benchmark/data_split.toml``
(POPI light 00->50 and 00->60: inhale to exhale, landmarks checked) by instance
optimisation alone (``--model none``, so no network is involved in making its own training
data), and stores their fields on their lung boxes in
``LungDeepReg/LungDeepRegLib/data/motion_atlas.npz`` (:mod:`LungDeepRegLib.data.motion`).
Evaluation pairs are never registered here. Prints each pair's landmark TRE so that the
atlas' own error is on record.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.data.motion import DEFAULT_ATLAS, atlas_from_fields
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.io.transforms import read_field
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register
from LungDeepRegLib.spatial import image_to_tensor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_ATLAS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="motion_atlas_"))
    pairs = tuning_breathing_pairs()
    fields = []
    for pair in pairs:
        inputs = RegistrationInputs(
            fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
            fixed_landmarks=Path(pair["fixed_landmarks"]),
            moving_landmarks=Path(pair["moving_landmarks"]),
            landmark_format=pair["landmark_format"])
        options = RegistrationOptions(model="none", threads=args.threads, report=False,
                                      output_spacing_mm=None)  # the fixed grid
        result = register(inputs, work / pair["id"], options)
        tre = result.metrics.get("landmarks", {})
        print(f"{pair['id']}: TRE {json.dumps(_summary(tre))}", flush=True)
        field, grid = read_field(result.files["field_nrrd"])
        lungs, lung_grid = image_to_tensor(read_image(result.files["fixed_lungs"], "label"))
        if lung_grid != grid:
            raise RuntimeError("the field and the fixed lungs are not on one grid")
        fields.append((f"{pair['id']} (tuning pair, instance optimisation)", field, grid,
                       lungs))
    atlas = atlas_from_fields(fields)
    atlas.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB); command: "
          f"python {' '.join(sys.argv)}")
    return 0


def _summary(landmarks: dict) -> dict:
    return {stage: {key: round(landmarks[stage][key], 2) for key in ("mean", "p95", "max")}
            for stage in ("before", "after") if stage in landmarks}


if __name__ == "__main__":
    raise SystemExit(main())
