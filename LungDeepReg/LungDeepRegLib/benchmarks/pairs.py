"""``bench pairs manifest.csv``: any set of pairs with landmarks and/or lobes.

The manifest is the batch manifest (:func:`..pipeline.batch.read_batch_manifest`): columns
``fixed,moving`` and optionally ``id``, ``fixed_mask``, ``fixed_lobes``, ``moving_lobes``,
``fixed_landmarks``, ``moving_landmarks``, ``landmark_format``; paths relative to the
manifest. Learn2Reg-style pairs or a clinic's own QA set fit it. A row that cannot be read
becomes a :class:`CaseError` naming the file; the other rows still run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io.images import read_image
from ..io.lobes import read_lobes
from ..metrics.landmarks import TREProtocol
from ..pipeline.batch import BatchItem, read_batch_manifest
from ..pipeline.register import RegistrationInputs, read_points
from .case import BenchCase, CaseError


def pair_cases(manifest: Path, protocol: TREProtocol = TREProtocol()  # noqa: B008 - frozen
               ) -> list[BenchCase | CaseError]:
    """One case per manifest row (bad manifests raise; bad rows become CaseErrors)."""
    return [_case(item, protocol) for item in read_batch_manifest(manifest)]


def _case(item: BatchItem, protocol: TREProtocol) -> BenchCase | CaseError:
    inputs = item.inputs
    try:
        case = BenchCase(name=item.pair_id, fixed=read_image(inputs.fixed),
                         moving=read_image(inputs.moving), protocol=protocol,
                         sources=_sources(inputs))
        if inputs.fixed_mask:
            case.fixed_lungs = read_image(inputs.fixed_mask, kind="label")
        if inputs.fixed_lobes and inputs.moving_lobes:
            case.fixed_lobes = read_lobes(inputs.fixed_lobes)
            case.moving_lobes = read_lobes(inputs.moving_lobes)
        points = read_points(inputs, case)  # reads what a BenchCase holds: fixed, moving
        if points is not None:
            case.fixed_points, case.moving_points = points
    except InputError as error:
        return CaseError(item.pair_id, error.source or str(inputs.fixed), error.problem)
    return case


def _sources(inputs: RegistrationInputs) -> dict[str, str]:
    names = {"fixed": inputs.fixed, "moving": inputs.moving, "fixed_mask": inputs.fixed_mask,
             "fixed_lobes": inputs.fixed_lobes, "moving_lobes": inputs.moving_lobes,
             "fixed_points": inputs.fixed_landmarks, "moving_points": inputs.moving_landmarks,
             "landmark_format": inputs.landmark_format}
    return {key: str(value) for key, value in names.items() if value}
