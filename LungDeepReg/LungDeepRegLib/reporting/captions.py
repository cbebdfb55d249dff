"""Figure captions: what each figure shows and how to read it (plain text, escaped later)."""

from __future__ import annotations

from .text import label_name, percent, voxels
from .views import DisplayVolumes, Plane

ORIENTATION = (
    "Axial slices follow the radiological convention: seen from the feet, anterior at the "
    "top and the patient's left on the image's right. Coronal and sagittal slices have "
    "superior at the top (sagittal: anterior on the left). Letters at the edges: A/P "
    "anterior/posterior, R/L patient right/left, S/I superior/inferior. Pixels are drawn at "
    "their physical size.")
MASK_PLACEMENT = {
    "given": "placed by the given lung mask",
    "automatic": "placed by the engine's automatic lung mask",
    "none": "through the volume centre (no lung mask available)",
}


def planes_text(volumes: DisplayVolumes, planes: list[Plane]) -> str:
    """Where the planes are, why there, and the orientation rules."""
    positions = "; ".join(volumes.describe(p) for p in planes)
    spacing = " x ".join(f"{s:.2f}" for s in volumes.spacing)
    text = (f"Planes {MASK_PLACEMENT[volumes.mask_source]}: axial and coronal through the "
            f"lung centre, sagittal through the right lung ({positions}; LPS mm; voxel "
            f"spacing {spacing} mm). {ORIENTATION}")
    if volumes.oblique:
        text += (" The fixed image has an oblique direction: it is shown along its nearest "
                 "anatomical axes.")
    return text


def images_caption(volumes: DisplayVolumes, planes: list[Plane]) -> str:
    return ("Fixed image (left), moving image resampled onto the fixed grid without the "
            "deformation (centre, before) and moving image warped by the registration "
            "(right, after); lung window W1500/L-600. How to read: the warped image should "
            "match the fixed one: diaphragm height, vessel positions, fissures and the "
            f"chest wall. {planes_text(volumes, planes)}")


def overlays_caption(tile_mm: float) -> str:
    return ("Left two columns: fixed image in magenta, moving (before) or warped moving "
            "(after) image in green, both in the lung window. Where the two agree the result "
            "is grey; magenta fringes show structures present only in the fixed image, green "
            "fringes structures only in the other image, so coloured edges mark residual "
            f"misalignment. Right two columns: checkerboards of {tile_mm:g} mm tiles "
            "alternating the fixed image with the moving (before) or warped (after) image; "
            "after a good registration vessels, ribs and the diaphragm continue smoothly "
            "across tile borders. Same planes and orientation as above.")


def difference_caption(vmax: float) -> str:
    return ("Absolute intensity difference |fixed - moving| before and |fixed - warped| "
            f"after registration, on one colour scale from 0 to {vmax:g} HU (brighter = "
            f"larger; values above {vmax:g} HU saturate). After a good registration the "
            "lungs are dark apart from noise and small vessels; bright bands along the "
            "diaphragm, chest wall or large vessels show residual misalignment. Lung "
            "parenchyma is denser at exhale, so a uniform faint difference inside the lungs "
            "remains even after a perfect registration.")


def jacobian_caption(volumes: DisplayVolumes, stats: dict | None,
                     marked: dict[str, int]) -> str:
    """How to read det J, and how many folds the metrics and the panels hold."""
    where = {"given": "inside the given lung mask", "automatic":
             "inside the engine's automatic lung mask"}.get(volumes.mask_source,
                                                            "over the whole image")
    text = ("Jacobian determinant det J of the transform x -> x + u(x) (fixed to moving), "
            f"in colour {where} over the fixed image: blue (det J < 1) means the tissue at "
            "this point of the fixed image occupies less volume in the moving image, white "
            "(= 1) the same volume, red (> 1) more volume; colours saturate outside 0 to 2. "
            "When the inhale scan is the fixed image, the lungs are expected mostly blue, "
            "varying smoothly. Folds (det J <= 0: the transform is not invertible there) are "
            "marked with yellow crosses: every voxel of the Jacobian grid with det J <= 0 "
            "within half a voxel of the panel's plane, inside or outside the lung mask.")
    if stats:
        text += (" Folded according to the metrics: "
                 f"{voxels(stats.get('folding_count', 'n/a'))} "
                 f"({percent(stats.get('folding_fraction'))} of the "
                 f"{stats.get('region', 'whole image')}).")
    total = len(volumes.folds_index)
    shown = ", ".join(f"{count} on {name}" for name, count in marked.items())
    text += f" The Jacobian image holds {voxels(total)} with det J <= 0 in all"
    text += f" (marked: {shown})." if total else "."
    if total:
        text += " The right-most panel is the axial slice with the most folds."
    return text


def tre_caption(landmarks: dict, top: int) -> str:
    protocol = landmarks.get("protocol") or {}
    rounding = ("rounded to the voxel grid" if protocol.get("round_to_voxel")
                else "not rounded to the voxel grid")
    fixed = protocol.get("fixed", "unknown")
    return ("Left: histogram of the target registration error (TRE, distance in mm between "
            "corresponding landmarks) before (grey) and after (blue) registration; dashed "
            "lines mark the means and the box gives mean, SD, 75th percentile and maximum. "
            f"Right: the {top} landmarks with the largest TRE after registration, largest at "
            "the top (bar: after; black tick: before); dashed and dotted lines: mean and 75th "
            "percentile after. Landmarks far above the mean point to local failures: look at "
            f"them in the images. Protocol: {fixed} phase fixed; mapped fixed landmarks "
            f"{rounding}.")


def dice_caption() -> str:
    names = ", ".join(f"{k} {label_name(k)}" for k in range(1, 6))
    return ("Dice overlap (1 = identical, 0 = disjoint) of each label between the fixed "
            "label map and the moving label map before registration (identity resampling, "
            f"grey) and after warping (blue). Lobe labels: {names}; other ids appear as "
            "'label k'. Dice hides boundary errors on large lobes: read the surface "
            "distances (ASD, HD95) in the table below too.")
