"""Pictures of the worst landmarks of a POPI run: fixed image and both methods' warped moving.

    python Testing/benchmark/worst_landmark_views.py --work /tmp/lungdeepreg_bench/popi-eval
        [--summary Testing/benchmark/results/popi_vs_elastix.json] [--count 6]

For each of the ``count`` landmarks that ``summarise_elastix.py`` lists as the method's
worst (evaluation pairs), one row of coronal and axial 100 mm patches through the fixed
landmark: the fixed image with its lung mask outline, and the moving image warped onto the
fixed grid by the method and by the baseline (elastix). Where a method is right, its patch
shows at the cross what the fixed patch shows there. Writes
``Testing/benchmark/results/popi-eval/worst_landmarks.png`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LungDeepRegLib.benchmarks.methods import field_file as method_field_file
from LungDeepRegLib.benchmarks.methods import parse_methods
from LungDeepRegLib.io.transforms import field_transform, read_field
from LungDeepRegLib.reporting.canvas import new_figure, save

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HALF_MM, STEP_MM = 50.0, 1.0
LUNG_WINDOW = (-1000.0, 200.0)


def points(path: Path) -> np.ndarray:
    with path.open(newline="") as handle:
        return np.array([[float(r["x"]), float(r["y"]), float(r["z"])]
                         for r in csv.DictReader(handle)])


def patch_reference(centre: np.ndarray, plane: str) -> sitk.Image:
    """A one-voxel-thick 1 mm grid of 100x100 mm through ``centre`` (LPS)."""
    n = int(2 * HALF_MM / STEP_MM) + 1
    size = [n, 1, n] if plane == "coronal" else [n, n, 1]
    reference = sitk.Image(size, sitk.sitkFloat32)
    origin = centre.copy()
    origin[0] -= HALF_MM
    origin[2 if plane == "coronal" else 1] -= HALF_MM
    reference.SetOrigin(origin.tolist())
    reference.SetSpacing([STEP_MM] * 3)
    return reference


def patch(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None,
          nearest: bool = False) -> np.ndarray:
    resampled = sitk.Resample(image, reference, transform or sitk.Transform(),
                              sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                              -1024.0 if not nearest else 0.0, sitk.sitkFloat32)
    return np.squeeze(sitk.GetArrayFromImage(resampled))  # (z, x) or (y, x)


def warp_of(case: Path, name: str) -> sitk.Transform:
    """The fixed-to-moving mapping that method ``name`` wrote for the case."""
    method = parse_methods(name)[-1]
    field, grid = read_field(method_field_file(method, case / method.folder))
    return field_transform(field.double(), grid)


def draw(ax, image: np.ndarray, title: str, lungs: np.ndarray | None = None) -> None:
    ax.imshow(np.clip(image, *LUNG_WINDOW), cmap="gray", origin="upper",
              vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
    if lungs is not None and lungs.any():
        ax.contour(lungs > 0, levels=[0.5], colors="#4fc3f7", linewidths=0.6)
    centre = image.shape[0] // 2
    ax.plot([centre], [centre], marker="+", color="#ff5252", markersize=14, mew=1.5)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--summary", type=Path, default=RESULTS / "popi_vs_elastix.json")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--out", type=Path,
                        default=RESULTS / "popi-eval" / "worst_landmarks.png")
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text(encoding="utf-8"))
    method, baseline = summary["method"], summary["baseline"]
    worst = summary["worst_landmarks"][: args.count]
    figure = new_figure(12.0, 2.1 * len(worst))
    for row, item in enumerate(worst):
        case = args.work / item["case"]
        fixed = sitk.ReadImage(str(case / "inputs" / "fixed.mha"), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(case / "inputs" / "moving.mha"), sitk.sitkFloat32)
        lungs = sitk.ReadImage(str(case / "inputs" / "fixed_lungs.mha"))
        centre = points(case / "inputs" / "fixed_points.csv")[item["landmark"] - 1]
        warps = {name: warp_of(case, name) for name in (method, baseline)}
        errors = {method: item["error_mm"], baseline: item["baseline_mm"]}
        for column, plane in enumerate(("coronal", "axial")):
            reference = patch_reference(centre, plane)
            base = 3 * column + 1
            ax = figure.add_subplot(len(worst), 6, 6 * row + base)
            draw(ax, patch(fixed, reference, None),
                 f"{item['case']} #{item['landmark']} fixed, {plane}",
                 patch(lungs, reference, None, nearest=True))
            for offset, name in enumerate((method, baseline), start=1):
                ax = figure.add_subplot(len(worst), 6, 6 * row + base + offset)
                draw(ax, patch(moving, reference, warps[name]),
                     f"{name} warped, TRE {errors[name]:.1f} mm")
    figure.suptitle(f"Worst landmarks of {method} (evaluation pairs); + the fixed landmark, "
                    "blue the fixed lung mask; 100 mm patches", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
