"""Automatic lung mask on real CTs as they come: Dice, volume and time per variant.

Usage: ``python Testing/benchmark/bench_lung_mask.py`` (reads ``../shared/data``; writes
``Testing/benchmark/results/lung_mask.md`` and ``.json``).

References: CIP ct-64 against its ``wholeLung-64`` mask; the TotalSegmentator example against
its ``lung.nii.gz`` (a model output; the upper lobes are outside the field of view); POPI
variants against the engine's own mask of the UNCUT full-resolution image, cut the same way
(this measures robustness to the way the CT comes, not accuracy against an expert); the
Lung-PET-CT-Dx CTs have no reference (volume and a plausibility note only).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/: mask_variants
from mask_variants import dice, popi_variants  # noqa: E402

from LungDeepRegLib.preprocess import body_air_region, lung_labels  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3


def timed(function: Callable[[sitk.Image], sitk.Image], image: sitk.Image
          ) -> tuple[np.ndarray, float, float]:
    """The result as an array, the fastest of ``REPEATS`` runs (the machine is shared) and
    that run's CPU time over all threads (on a loaded machine it tells more than the wall).
    """
    times = []
    for _ in range(REPEATS):
        started, cpu = time.perf_counter(), time.process_time()
        result = function(image)
        times.append((time.perf_counter() - started, time.process_time() - cpu))
    wall, cpu = min(times)
    return sitk.GetArrayFromImage(result), wall, cpu


def measure(name: str, image: sitk.Image, reference: np.ndarray | None, note: str,
            side: int | None = None) -> tuple[dict, np.ndarray]:
    """Run the mask on ``image`` and compare it with ``reference`` (same grid)."""
    labels, seconds, cpu = timed(lung_labels, image)
    ml = float(np.prod(image.GetSpacing())) / 1000.0
    mask = labels > 0
    row = {"variant": name, "time_s": round(seconds, 2), "cpu_s": round(cpu, 2),
           "volume_ml": round(mask.sum() * ml, 1),
           "left_ml": round(float((labels == 1).sum() * ml), 1),
           "right_ml": round(float((labels == 2).sum() * ml), 1), "note": note}
    if reference is not None:
        reference_ml = reference.sum() * ml
        row.update(dice=round(dice(mask, reference), 4), reference_ml=round(reference_ml, 1),
                   volume_error_pct=round(100.0 * (mask.sum() * ml / reference_ml - 1.0), 2))
    if side is not None:
        row["side_label_fraction"] = round(float((labels == side).sum() / max(mask.sum(), 1)), 3)
    print(f"{name:50s} dice {row.get('dice', '-')!s:7s} vol {row['volume_ml']:8.1f} ml "
          f"err {row.get('volume_error_pct', '-')!s:6s}% {seconds:5.2f} s", flush=True)
    return row, labels


def run(data: Path) -> dict:
    rows: list[dict] = []
    popi = sitk.ReadImage(str(data / "popi" / "popi_phase00.nii.gz"))
    full, seconds, cpu = timed(lung_labels, popi)
    rows.append({"variant": "POPI uncut (defines the POPI reference)",
                 "time_s": round(seconds, 2), "cpu_s": round(cpu, 2),
                 "volume_ml": round(float((full > 0).sum() * np.prod(popi.GetSpacing()) / 1e3),
                                    1), "note": "512x512x141, 0.977x0.977x2 mm"})
    print(rows[-1], flush=True)
    for variant in popi_variants(popi, full):
        row, labels = measure("POPI " + variant.name, variant.image, full[variant.box] > 0,
                              variant.note, variant.side)
        if variant.identical:
            row["same_voxels"] = bool(np.array_equal(labels > 0, full > 0))
        if variant.swapped:
            row["note"] += "; labels swapped: " + (
                "yes" if np.array_equal(labels, np.where(full > 0, 3 - full, 0)) else "NO")
        rows.append(row)
    region, seconds, cpu = timed(body_air_region, popi)
    region = region > 0
    rows.append({"variant": "POPI body_air_region", "time_s": round(seconds, 2),
                 "cpu_s": round(cpu, 2),
                 "volume_ml": round(float(region.sum() * np.prod(popi.GetSpacing()) / 1e3), 1),
                 "note": f"holds {100 * (region & (full > 0)).sum() / (full > 0).sum():.1f} % "
                         "of the lung mask"})
    cip = sitk.ReadImage(str(data / "cip" / "ct-64.nrrd"))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "cip" / "wholeLung-64.nrrd")))
    rows.append(measure("CIP ct-64 (4.2 mm, COPDGene)", cip, reference > 0,
                        "reference: wholeLung-64")[0])
    total = sitk.ReadImage(str(data / "totalseg" / "example_ct.nii.gz"))
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "totalseg" / "lobes" /
                                                     "lung.nii.gz")))
    rows.append(measure("TotalSegmentator example (abdomen, lung bases)", total, lung > 0,
                        "reference: lobes/lung.nii.gz (model output); direction diag(-1,-1,1)")[0])
    for case in ("a0001", "a0002"):
        image = sitk.ReadImage(str(data / "lung_pet_ct_dx" / f"lung_dx_{case}.nii.gz"))
        row, _ = measure(f"Lung-PET-CT-Dx {case.upper()} ({image.GetSpacing()[2]:g} mm slices)",
                      image, None, "no reference")
        plausible = 2000.0 <= row["volume_ml"] <= 9000.0 and min(
            row["left_ml"], row["right_ml"]) > 0.25 * row["volume_ml"]
        row["note"] = ("plausible: adult lung pair, both sides present" if plausible
                       else "CHECK: volume or left/right share outside the adult range")
        rows.append(row)
    return {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
            "load_average": [round(v, 1) for v in os.getloadavg()], "rows": rows}


def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lung_mask.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Automatic lung mask on CTs as they come", "",
             f"Command: `{result['command']}` (SimpleITK threads: {result['threads']}; load "
             f"average at the end {result['load_average']} on 2 cores)", "",
             "POPI reference = the engine's mask of the UNCUT image (not an expert mask), cut "
             "the same way as each variant. CIP reference: `wholeLung-64.nrrd`; TotalSegmentator "
             "reference: `lobes/lung.nii.gz` (model output, upper lobes outside the field of "
             "view). Times: the fastest of 3 `lung_labels` calls on a 2-core machine shared "
             "with other jobs (wall), and that call's CPU time summed over threads.", "",
             "| variant | Dice | volume (ml) | reference (ml) | volume error (%) | left / right "
             "(ml) | wall / CPU time (s) | note |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        note = row["note"]
        if "side_label_fraction" in row:
            note += f"; {100 * row['side_label_fraction']:.1f} % labelled as the expected side"
        if "same_voxels" in row:
            note += "; same voxels as uncut: " + ("yes" if row["same_voxels"] else "NO")
        lines.append(f"| {row['variant']} | {row.get('dice', '-')} | {row['volume_ml']} | "
                     f"{row.get('reference_ml', '-')} | {row.get('volume_error_pct', '-')} | "
                     f"{row.get('left_ml', '-')} / {row.get('right_ml', '-')} | "
                     f"{row['time_s']} / {row['cpu_s']} | {note} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "lung_mask.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    write(run(parser.parse_args().data))


if __name__ == "__main__":
    main()
