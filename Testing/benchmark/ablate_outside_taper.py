"""Ablation: the deformable field's own 30 mm taper outside the lung crop, under the body blend.

Usage: ``python Testing/benchmark/ablate_outside_taper.py [--threads 2]``

Until session 10 the deformable field was tapered twice outside the lung crop: by its own
Gaussian of the distance to the crop (30 mm, the old ``fields.extend_field``) and, after
composition with the affine part, by the blend into the body's own rigid motion
(``fields.toward_body``: 10 mm from the crop and beyond 10 mm from the lungs). This runs the
whole ``register`` with and without the first taper on the declared *tuning* data only: the
two POPI tuning pairs (41 landmarks; 6 and 36 lie outside the lungs) and two
full-resolution synthetic pairs of POPI phase 00 with tuning seeds ``pair_seed(31337, i)``
(300 lung points, as ``bench_register_large.py`` builds them). Reported per run: TRE mean /
p95, landmarks 6 and 36 (POPI), folding and the smallest Jacobian determinant over the whole
written field, and the largest difference between the two fields. Writes
``Testing/benchmark/results/outside_taper.md`` with this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import bench_register_large as large
import numpy as np
import SimpleITK as sitk
import torch
from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.data.synthetic import pair_seed
from LungDeepRegLib.pipeline import register as register_module
from LungDeepRegLib.pipeline.fields import _outside_taper
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register
from LungDeepRegLib.spatial import resample_field

RESULTS = Path(__file__).resolve().parent / "results"
OLD_TAPER_MM = 30.0


def tapered(field: torch.Tensor, crop, target) -> torch.Tensor:
    """The old ``extend_field``: the border displacement times the 30 mm Gaussian."""
    taper = torch.as_tensor(_outside_taper(crop, target, OLD_TAPER_MM), dtype=field.dtype)
    return resample_field(field, crop, target) * taper.to(field.device)


def cases(work: Path) -> list[tuple[str, RegistrationInputs]]:
    found = []
    for pair in tuning_breathing_pairs():
        found.append((pair["id"], RegistrationInputs(
            fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
            fixed_landmarks=Path(pair["fixed_landmarks"]),
            moving_landmarks=Path(pair["moving_landmarks"]),
            landmark_format=pair["landmark_format"])))
    for index in (0, 1):
        large.SEED = pair_seed(31337, index)
        files = large.build_pair(work / f"synthetic-{index}")
        found.append((f"synthetic full-resolution, tuning seed {index}", RegistrationInputs(
            fixed=files["fixed.nii.gz"], moving=files["moving.nii.gz"],
            fixed_landmarks=files["fixed_points.csv"],
            moving_landmarks=files["moving_points.csv"], landmark_format="csv")))
    return found


def run(inputs: RegistrationInputs, out: Path, threads: int, with_old_taper: bool) -> dict:
    if with_old_taper:
        register_module.resample_field = tapered
    try:
        metrics = register(inputs, out, RegistrationOptions(threads=threads,
                                                            report=False)).metrics
    finally:
        register_module.resample_field = resample_field
    det = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "jacobian.nrrd")))
    per = [row["tre_mm"] for row in metrics["landmarks"]["per_landmark"]]
    return {"tre": (metrics["landmarks"]["after"]["mean"], metrics["landmarks"]["after"]["p95"]),
            "outside": (per[5], per[35]) if len(per) == 41 else None,
            "folding": float((det <= 0).mean()), "min_det": float(det.min()),
            "field": sitk.GetArrayFromImage(sitk.ReadImage(str(out / "field.nrrd")))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="outside_taper_"))
    lines = ["# The deformable field's own taper outside the lung crop (tuning data only)", "",
             f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "| case | variant | TRE mean / p95 (mm) | landmarks 6 / 36 (mm) | folding, whole "
             "field (%) | smallest det J | largest field difference (mm) |",
             "|---|---|---|---|---|---|---|"]
    for name, inputs in cases(work):
        rows = {}
        for label, old in (("30 mm taper, then body blend (before)", True),
                           ("body blend alone (now)", False)):
            rows[label] = run(inputs, work / "out" / name.replace(" ", "_") / str(old),
                              args.threads, old)
        fields = [row.pop("field") for row in rows.values()]
        difference = float(np.linalg.norm(fields[0] - fields[1], axis=-1).max())
        for label, row in rows.items():
            outside = "n/a" if row["outside"] is None else " / ".join(
                f"{v:.2f}" for v in row["outside"])
            lines.append(f"| {name} | {label} | {row['tre'][0]:.3f} / {row['tre'][1]:.3f} | "
                         f"{outside} | {100 * row['folding']:.4f} | {row['min_det']:.3f} | "
                         f"{difference:.2f} |")
            print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "outside_taper.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
