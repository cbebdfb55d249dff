"""POPI landmarks in the frame of the light images, for pairs that mix resolutions.

The light POPI phases (``../shared/data/popi_light``, 100x100x47 at 5x5x6 mm) store their
in-plane origin at the first full-resolution pixel centre (-250, -164 mm), but each of their
5 mm pixels averages 5.12 pixels of 0.977 mm: its centre lies (5 - 0.977) / 2 = 2.01 mm
further along x and y. Landmarks in the full-resolution frame (``landmarks_lps``) therefore
sit 2.01 mm off in x and y on every light image. Between two light phases the offset cancels
(the TRE of the light pairs is unaffected); between the full-resolution phase 00 and a light
phase it does not, and no method can end below it.

Evidence (2026-12-04): ``lungdeepreg register --fixed popi/popi_phase00.nii.gz --moving
popi_light/popi_light_00.nii.gz --model none`` (the same breathing phase: the true motion is
zero) maps the 41 landmarks by (-1.99, -1.95, -0.13) mm on average (SD 0.67, 0.78, 0.44):
"TRE" 2.93 mm against the landmarks as given, 1.00 mm against them shifted by
(-2.01, -2.01, 0) (z: 2.14 mm with -2 and 2.34 mm with +2, so the slices were picked, not
averaged). This script writes the shifted files; the manifests' full00-light50 pair uses them.

    python Testing/benchmark/popi_light_frame.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "data" / "popi" / "landmarks_lps"
TARGET = HERE / "landmarks"
FULL_PIXEL_MM, LIGHT_PIXEL_MM = 0.9765625, 5.0
#: light-image coordinates minus full-resolution coordinates of the same anatomy (LPS mm)
LIGHT_FRAME_SHIFT_MM = (-(LIGHT_PIXEL_MM - FULL_PIXEL_MM) / 2,) * 2 + (0.0,)


def shifted(source: Path, target: Path) -> None:
    """An elastix ``point`` file with every point moved by :data:`LIGHT_FRAME_SHIFT_MM`."""
    lines = source.read_text().split("\n")
    if lines[0].strip() != "point":
        raise ValueError(f"{source}: not an elastix point file")
    points = np.loadtxt(source, skiprows=2, ndmin=2) + np.asarray(LIGHT_FRAME_SHIFT_MM)
    body = "\n".join(" ".join(f"{value:.6f}" for value in point) for point in points)
    target.write_text(f"point\n{len(points)}\n{body}\n")


def main() -> None:
    TARGET.mkdir(exist_ok=True)
    for phase in ("50",):  # the phases that a manifest pairs with the full-resolution 00
        name = f"popi_{phase}_points.txt"
        shifted(SOURCE / name, TARGET / f"popi_{phase}_points_light_frame.txt")
        print(f"wrote {TARGET / f'popi_{phase}_points_light_frame.txt'}")


if __name__ == "__main__":
    main()
