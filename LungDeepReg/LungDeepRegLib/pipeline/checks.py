"""Self-checks a physicist would make, with consequences.

A registration that runs on the wrong region, or on two images that cannot be matched,
still produces a field; without these checks it also said "ok". The checks run at the
points where their answer changes what happens next:

1. After masking (:func:`checked_lungs`): the lung volume of each image in ml. An automatic
   mask far smaller than the air-bearing region inside the body is implausible (a lung
   thrown away with the outside air, as happened on a field of view cut close to one
   lung); the registration then falls back to that air-bearing region and says so. No lung
   and no air-bearing region at all: the pair cannot be registered (error, exit 2).
2. After the masks of both images (:func:`volume_ratio_check`): the fixed/moving lung volume
   ratio against the range that breathing spans.
3. After the pre-alignment (:func:`coverage_check`): the fraction of the fixed lung that the
   moving image's field of view covers. Nothing covered: error before the heavy work.
4. After the registration (:func:`match_checks`): the match (NGF distance in the fixed lung,
   the similarity of the loss) after the affine and after the deformable step.

A failed check is a :class:`Finding`: a ``warning:`` line on the terminal (a
:class:`SelfCheckWarning`), an entry of ``metrics.json["warnings"]``, a box at the top of
``report.html`` and the status line in Slicer. The thresholds are chosen on the tuning
pairs declared in ``Testing/benchmark/data_split.toml`` (see ``Testing/benchmark/
tune_self_checks.py`` and its results file); every other pair is evaluation.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import SimpleITK as sitk
import torch

from ..errors import InputError
from ..preprocess import body_air_region, hu_image, lung_labels, lung_volume_ml, storage_offset
from ..preprocess.crop import lung_crop_grid, normalize_ct, resample_to_grid
from ..spatial import image_to_tensor
from .affine import coverage, field_of_view
from .network import match_in_lung

# Below this an automatic lung mask holds no lung worth registering: a few slices of lung
# bases in an abdomen CT hold about 100 ml, the broken masks of cropped fields of view
# held 5-30 ml.
MIN_LUNG_ML = 40.0
# The lungs are most of the air-bearing tissue inside the chest. When more than a litre of
# it lies outside the automatic mask, and more than half the mask's own volume, a lung (or
# a large part of one) was lost. Bowel gas stays below this: the abdomen CT with lung bases
# holds 116 ml of lung beside 424 ml of gas; whole thoraxes hold under 100 ml outside.
MAX_AIR_OUTSIDE_MASK_ML = 1000.0
MAX_AIR_OUTSIDE_SHARE = 0.5
# Inhale/exhale lung volume ratio: tidal breathing gives 1.05-1.3, breath-hold pairs
# (COPDGene iBH/eBH) up to about 2.5. Outside, the phases are swapped, the fields of view
# differ a lot, or the images are of different subjects.
BREATHING_RATIO_RANGE = (0.9, 2.8)
MIN_COVERAGE_WARN = 0.9  # of the fixed lung inside the moving field of view
MIN_COVERAGE_ERROR = 0.05  # below this nothing meaningful is left to register
# NGF distance in the lung (0 identical edges, 1 no common edges), on one crop size. The
# limits are the midpoints between the worst tuning breathing pair and the tuning pair of
# two subjects (tune_self_checks.py): after the affine step 0.217 (POPI 00->50) and 0.516
# (POPI vs CIP ct-64), midpoint 0.367; after the deformable step 0.162 and 0.329, 0.245
# (re-measured 2026-12-04 when the refinement began to compare the whole lung crop: before,
# 0.152 and 0.277, 0.215).
MATCH_GRID_SIZE = (96, 80, 96)  # x, y, z: the refinement's finest grid
MAX_NGF_AFTER_AFFINE = 0.37
MAX_NGF_AFTER_DEFORMABLE = 0.245


class SelfCheckWarning(UserWarning):
    """A failed self-check: the result may not be meaningful. The CLI prints it as
    ``warning: <message>``."""


@dataclass(frozen=True)
class Finding:
    check: str  # short identifier, e.g. "lung_mask", "fov_coverage"
    message: str


@dataclass
class SelfChecks:
    """Measurements of every check and the findings (failed checks) so far."""

    measurements: dict[str, object] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def warn(self, check: str, message: str) -> None:
        """Record a failed check and show it at once (the terminal, the Slicer log)."""
        self.findings.append(Finding(check, message))
        warnings.warn(message, SelfCheckWarning, stacklevel=2)

    def to_metrics(self) -> tuple[dict[str, object], list[dict[str, str]]]:
        """``metrics["self_checks"]`` and ``metrics["warnings"]``."""
        return dict(self.measurements), [asdict(finding) for finding in self.findings]


def in_hounsfield_units(ct: sitk.Image, source: Path, side: str, checks: SelfChecks
                        ) -> sitk.Image:
    """``ct`` in HU: a CT stored as unsigned HU + 1024 whose rescale was lost on the way
    (air near 0) is shifted back, and the user is told, since it is a guess from the
    histogram (:func:`~LungDeepRegLib.preprocess.storage_offset`)."""
    offset = storage_offset(ct)
    if not offset:
        return ct
    checks.measurements[f"{side}_hu_offset"] = offset
    checks.warn("hu_offset", f"{source}: the values look like HU + 1024 stored without a "
                             f"rescale (air near 0): shifted by {offset:g} HU")
    return hu_image(ct)


def automatic_masks(ct: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """The automatic lung labels of ``ct`` and its air-bearing region inside the body, which
    :func:`checked_lungs` weighs against each other."""
    return lung_labels(ct), body_air_region(ct)


def checked_lungs(ct: sitk.Image, source: Path, side: str, checks: SelfChecks,
                  given: sitk.Image | None = None,
                  automatic: tuple[sitk.Image, sitk.Image] | None = None) -> sitk.Image:
    """The lung labels of ``ct`` (given, automatic, or the air-bearing fallback), checked.

    ``automatic``: :func:`automatic_masks` of ``ct`` when the caller has made them already.
    Raises :class:`InputError` naming ``source`` when neither a lung nor an air-bearing
    region is found: there is nothing to register.
    """
    if given is not None:
        volume = lung_volume_ml(given)
        checks.measurements[f"{side}_lung_ml"] = round(volume, 1)
        checks.measurements[f"{side}_mask"] = "given"
        if volume < MIN_LUNG_ML:
            checks.warn("lung_mask", f"the given {side} lung mask holds only {volume:.0f} ml")
        return given
    lungs, air = automatic or automatic_masks(ct)
    volume, air_volume = lung_volume_ml(lungs), lung_volume_ml(air)
    checks.measurements.update({f"{side}_lung_ml": round(volume, 1),
                                f"{side}_air_region_ml": round(air_volume, 1),
                                f"{side}_mask": "automatic"})
    if _plausible(volume, air_volume):
        return lungs
    if air_volume < MIN_LUNG_ML:
        raise InputError(source, f"no lung found in the {side} image (automatic lung mask "
                                 f"{volume:.0f} ml, air-bearing region inside the body "
                                 f"{air_volume:.0f} ml): is it a chest CT in HU?")
    checks.measurements[f"{side}_mask"] = "air-bearing region (fallback)"
    checks.warn("lung_mask", f"the automatic {side} lung mask is implausible ({volume:.0f} ml "
                             f"of {air_volume:.0f} ml air-bearing tissue inside the body): "
                             "registering the body's air-bearing region instead; give a lung "
                             f"mask (--{side}-mask) if the result looks wrong")
    return air


def _plausible(lung_ml: float, air_ml: float) -> bool:
    outside = air_ml - lung_ml
    lost_a_lung = outside > MAX_AIR_OUTSIDE_MASK_ML and outside > MAX_AIR_OUTSIDE_SHARE * lung_ml
    return lung_ml >= MIN_LUNG_ML and not lost_a_lung


def volume_ratio_check(checks: SelfChecks, fixed_is: str) -> None:
    """Fixed/moving lung volume ratio against the breathing range (inhale/exhale).

    Only meaningful when each field of view holds what the other does: a CT cut to one
    lung beside a full thorax halves the ratio without any breathing. Call it after
    :func:`coverage_check`, which records both coverages.
    """
    coverages = [float(checks.measurements.get(key, 0.0)) for key in (
        "moving_fov_covers_fixed_lung", "fixed_fov_covers_moving_lung")]
    if min(coverages) < MIN_COVERAGE_WARN:
        checks.measurements["inhale_exhale_volume_ratio"] = "not checked: fields of view differ"
        return
    fixed = float(checks.measurements["fixed_lung_ml"])
    moving = float(checks.measurements["moving_lung_ml"])
    if moving <= 0:
        return
    inhale_over_exhale = fixed / moving if fixed_is == "inhale" else moving / fixed
    checks.measurements["inhale_exhale_volume_ratio"] = round(inhale_over_exhale, 3)
    low, high = BREATHING_RATIO_RANGE
    if low <= inhale_over_exhale <= high:
        return
    hint = (f"is the fixed image really {fixed_is}? (--fixed-is)" if inhale_over_exhale < low
            else "are the fields of view or the subjects different?")
    checks.warn("lung_volume_ratio",
                f"inhale/exhale lung volume ratio {inhale_over_exhale:.2f} ({fixed:.0f} ml "
                f"fixed, {moving:.0f} ml moving) is outside the breathing range "
                f"{low}-{high}: {hint}")


def coverage_check(fixed_lungs: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                   moving_source: Path, checks: SelfChecks,
                   moving_lungs: sitk.Image | None = None, fixed: sitk.Image | None = None
                   ) -> None:
    """Share of the fixed lung that ``transform`` maps into the moving field of view (and,
    with ``moving_lungs`` and ``fixed``, of the moving lung that the inverse maps into the
    fixed field of view; recorded for :func:`volume_ratio_check`)."""
    covered = coverage(fixed_lungs, moving, transform)
    checks.measurements["moving_fov_covers_fixed_lung"] = round(covered, 4)
    if moving_lungs is not None and fixed is not None:
        checks.measurements["fixed_fov_covers_moving_lung"] = round(
            coverage(moving_lungs, fixed, transform.GetInverse()), 4)
    if covered < MIN_COVERAGE_ERROR:
        raise InputError(moving_source, f"the moving image covers {100 * covered:.1f} % of "
                                        "the fixed lung after pre-alignment: no overlap to "
                                        "register")
    if covered < MIN_COVERAGE_WARN:
        checks.warn("fov_coverage", f"the moving field of view covers only "
                                    f"{100 * covered:.0f} % of the fixed lung: the field "
                                    "outside it is extrapolated, not measured")


def lung_match(fixed: sitk.Image, moving: sitk.Image, fixed_lungs: sitk.Image,
               transform: sitk.Transform) -> float:
    """NGF distance in the fixed lung (where the moving image has data) between the fixed
    image and the moving image mapped through ``transform``, on one lung crop of a fixed
    size, so that values compare across pairs and runs."""
    grid = lung_crop_grid(fixed, fixed_lungs, size=MATCH_GRID_SIZE)
    as_input = lambda image: normalize_ct(image_to_tensor(image)[0])  # noqa: E731
    lung = image_to_tensor(resample_to_grid(fixed_lungs, grid, "nearest", 0))[0] > 0
    # only where the moving image has data: a cut field of view is no mismatch
    seen = resample_to_grid(field_of_view(moving), grid, "nearest", 0, transform=transform)
    mask = lung & (image_to_tensor(seen)[0] > 0)
    with torch.no_grad():
        return match_in_lung(as_input(resample_to_grid(fixed, grid)),
                             as_input(resample_to_grid(moving, grid, transform=transform)),
                             grid, mask.float())


def match_checks(after_affine: float, after_deformable: float | None,
                 checks: SelfChecks) -> None:
    """The match in the fixed lung after each step (lower is better)."""
    checks.measurements["ngf_in_lung_after_affine"] = round(after_affine, 4)
    if after_deformable is not None:
        checks.measurements["ngf_in_lung_after_deformable"] = round(after_deformable, 4)
    if after_affine > MAX_NGF_AFTER_AFFINE:
        checks.warn("match_affine", f"after pre-alignment the images barely match in the lung "
                                    f"(NGF {after_affine:.3f} > {MAX_NGF_AFTER_AFFINE}): "
                                    "different subjects, or not the same body region?")
    if after_deformable is None:
        return
    if after_deformable > MAX_NGF_AFTER_DEFORMABLE:
        checks.warn("match_deformable", f"after registration the images match poorly in the "
                                        f"lung (NGF {after_deformable:.3f} > "
                                        f"{MAX_NGF_AFTER_DEFORMABLE})")
    elif after_deformable > after_affine:
        checks.warn("match_deformable", f"the deformable step made the match worse "
                                        f"(NGF {after_affine:.3f} -> {after_deformable:.3f})")
