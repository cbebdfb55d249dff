"""The registration pipeline: one fixed/moving pair in, a displacement field and QA out.

Steps: read and clip the CTs, automatic lung masks (:mod:`.pair`); lung-aware affine
pre-alignment (SimpleITK); crop to the fixed lungs and resample to the network's input size;
multilevel network; instance optimisation of the same loss on the refinement grid;
composition with the affine part; the total fixed-to-moving field on the output grid (about
2 mm by default); then the outputs and the metrics (:mod:`.outputs`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import SimpleITK as sitk
import torch

from ..device import configure_threads, resolve_device
from ..io.transforms import field_transform
from ..models.store import load_model, model_names
from ..spatial import Grid, resample_field
from .affine import affine_prealign, body_prealign
from .checks import (
    coverage_check,
    lung_match,
    match_checks,
    volume_ratio_check,
)
from .crops import crop_inputs, crops_once, refine_config
from .discrete import DEFAULT_SEARCH_MODE, SEARCHED, discrete_search
from .fields import (
    affine_field,
    compose_with_affine,
    output_grid,
    toward_body,
)
from .multistart import CropFor, CropInputs, Start, refine_from_best_start
from .network import (
    NO_NETWORK,
    NetworkResult,
    best_candidate,
    network_candidates,
    network_starts,
    outmatched,
    trust_ratio,
    trusted,
)
from .optimise import sub_progress
from .outputs import input_fingerprint, write_outputs
from .pair import PreparedPair, RegistrationInputs, prepare, read_points
from .refine_config import RefineConfig
from .validate import check_inputs, check_landmarks_inside

# Trained on synthetic breathing of four CTs without its affine part, at 128x112x128 and
# then (its last round) at the 96x80x96 crops it runs on. Chosen on the POPI tuning pairs by
# the rule of Testing/benchmark/README.md ("Should af7 replace the default?"): full pipeline
# 1.47/1.55 mm against 1.48/1.55 (af7, the previous default) and 1.54/1.56 (optimisation
# alone), network alone 1.90/1.98 against 2.16/2.15 mm, 1.00x af7's time
# (Testing/benchmark/results/network_input_size_af10.md).
DEFAULT_MODEL = "lungdeepreg-allct-af10-cpu"
Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """The user cancelled the registration; nothing is written."""


@dataclass
class RegistrationOptions:
    model: str = "auto"  # auto | none | shipped name | path to .safetensors/.json
    refine_iterations: int | None = None  # None: defaults; 0: network only
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: the policy of device.thread_count
    fixed_is: str = "inhale"  # the phase of the fixed image, recorded in the outputs
    output_spacing_mm: float | None = 2.0  # None: the fixed image's own grid
    fine_spacing_mm: float | None = None  # a last refinement level at this spacing (mm)
    similarity: str = "ngf"  # of the refinement: ngf | ncc | mind (refine_config.py)
    similarity_weight: float | None = None  # None: the default weight of that similarity
    similarity_region: str = "crop"  # where it is measured: crop | lung (refine_config.py)
    search: str = DEFAULT_SEARCH_MODE  # discrete search from the affine start (discrete.py)
    write_nifti: bool = False
    exclude_outside_landmarks: bool = False
    round_to_voxel: bool = False
    report: bool = True


@dataclass
class RegistrationState:
    """Intermediate results, kept for the outputs and the report."""

    affine: sitk.AffineTransform | None = None
    deformable: torch.Tensor | None = None  # on ``crop``, before the affine part
    crop: Grid | None = None
    field: torch.Tensor | None = None  # total field on ``grid``
    grid: Grid | None = None
    model_card: dict | None = None
    network_start: dict | None = None  # which start the network kept, and why
    refinement: dict | None = None  # the start the refinement continued, what was kept
    device: str = "cpu"
    runtime_s: dict[str, float] = dataclass_field(default_factory=dict)
    _transform: sitk.DisplacementFieldTransform | None = dataclass_field(default=None,
                                                                         repr=False)

    def transform(self) -> sitk.DisplacementFieldTransform:
        """``field`` as an ITK transform, made once: the self-checks, the warped images and
        the ``.h5`` file use the same one (0.6 s each on a 251x251x141 grid). ``field`` is
        set once, by :func:`estimate_field`, before any caller asks for this."""
        if self._transform is None:
            self._transform = field_transform(self.field, self.grid)
        return self._transform


class StepTimer:
    """Times named steps, reports progress, and honours cancellation between steps."""

    def __init__(self, state: RegistrationState, progress: Progress | None,
                 should_stop: Callable[[], bool] | None) -> None:
        self.state, self.progress = state, progress
        self.should_stop = should_stop or (lambda: False)

    def __call__(self, name: str, fraction: float) -> _Step:
        if self.should_stop():
            raise Cancelled(name)
        if self.progress is not None:
            self.progress(fraction, name)
        return _Step(self.state, name)


class _Step:
    def __init__(self, state: RegistrationState, name: str) -> None:
        self.state, self.name = state, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.state.runtime_s[self.name] = self.state.runtime_s.get(self.name, 0.0) + elapsed


def estimate_field(pair: PreparedPair, options: RegistrationOptions,
                   progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> RegistrationState:
    """Affine + network + refinement: the total field on the output grid."""
    state = RegistrationState()
    step = StepTimer(state, progress, should_stop)
    with step("affine pre-alignment", 0.05):
        state.affine = affine_prealign(pair.fixed, pair.moving, pair.fixed_lungs)
        if pair.sources is not None:  # stop before the heavy work when nothing overlaps
            coverage_check(pair.fixed_lungs, pair.moving, state.affine, pair.sources[1],
                           pair.checks, pair.moving_lungs, pair.fixed)
            volume_ratio_check(pair.checks, pair.fixed_is)
    pre_alignment = state.affine
    device = resolve_device(options.device)
    try:
        _deformable(pair, options, state, step, device)
    except torch.cuda.OutOfMemoryError:
        warnings.warn("CUDA ran out of memory: falling back to the CPU", stacklevel=2)
        torch.cuda.empty_cache()
        _deformable(pair, options, state, step, torch.device("cpu"))
    with step("total field", 0.9):
        state.grid = output_grid(pair.fixed, options.output_spacing_mm)
        state.field = _total_field(pair, state, pre_alignment)
    with step("self-checks", 0.92):
        deformed = None if state.deformable is None else state.transform()
        images = (pair.fixed, pair.moving, pair.fixed_lungs)
        match_checks(lung_match(*images, pre_alignment),
                     None if deformed is None else lung_match(*images, deformed), pair.checks)
    return state


def _total_field(pair: PreparedPair, state: RegistrationState,
                 pre_alignment: sitk.AffineTransform) -> torch.Tensor:
    """The written field on ``state.grid``: the affine alone, or the lungs' affine and
    deformable motion going over into the body's own rigid motion away from the lungs
    (the lungs' motion is not the chest wall's)."""
    if state.deformable is None:  # affine pre-alignment only
        return compose_with_affine(torch.zeros((1, 3, *state.grid.shape)), state.grid,
                                   state.affine)
    # outside the crop the border displacement goes on; toward_body fades it out there
    extended = resample_field(state.deformable, state.crop, state.grid)
    lungs_motion = compose_with_affine(extended, state.grid, state.affine)
    rigid = body_prealign(pair.fixed, pair.moving, pair.fixed_lungs, pre_alignment)
    body = affine_field(state.grid, rigid).to(lungs_motion)
    return toward_body(lungs_motion, body, state.crop, state.grid, lungs=pair.fixed_lungs)


def _deformable(pair: PreparedPair, options: RegistrationOptions, state: RegistrationState,
                step: StepTimer, device: torch.device) -> None:
    state.device = str(device)
    model = None
    if options.model != "none":
        with step("load model", 0.15):
            model, state.model_card = _load(options.model, device)
        if model is None:
            warnings.warn(f"no model '{DEFAULT_MODEL}' is installed: registering by "
                          "optimisation alone (--model none)", stacklevel=2)
    if model is None and options.refine_iterations == 0:
        return  # --model none --refine-iterations 0: the affine pre-alignment alone
    starts = [Start(NO_NETWORK if model is not None else "affine", state.affine, None, None,
                    _schedule(options, pair, after_network=False))]
    baselines: list[Start] = []
    if model is not None:
        size = tuple(state.model_card["input"]["size_xyz"])
        network_names = network_starts(state.model_card)
        with step("network", 0.2):
            candidates = network_candidates(
                model, lambda start: crop_inputs(pair, start, size, device), state.affine,
                network_names)
        _keep(state, best_candidate(candidates))
        if options.refine_iterations == 0:
            return
        network = best_candidate(candidates, network_names)
        network_start = Start(network.start_name, network.start, network.field, network.grid,
                              _schedule(options, pair, after_network=True))
        state.network_start["trusted"] = trusted(candidates, network,
                                                 trust_ratio(state.model_card))
        state.network_start["dropped"] = outmatched(candidates, network)
        # a start that is compared at the end but never refined is a baseline
        (baselines if state.network_start["dropped"] else starts).append(network_start)
    # the identity (no registration) is a candidate of the final comparison too
    baselines.append(Start("identity, no registration", sitk.AffineTransform(3), None, None,
                           starts[0].config))
    if state.network_start is not None and state.network_start["trusted"]:
        baselines.insert(0, starts.pop(0))  # the affine start: compared, never refined
    crop_for = crops_once(pair, device)
    if options.search != "off" and starts and starts[0].field is None:
        with step("discrete search", 0.3):
            _add_searched_start(starts, baselines, crop_for, options.search)
    with step("instance optimisation", 0.35):
        result = refine_from_best_start(
            starts, crop_for,
            progress=sub_progress(step.progress, 0.35, 0.9), should_stop=step.should_stop,
            baselines=baselines)
        if result.refined.cancelled:
            raise Cancelled("instance optimisation")
        state.crop, state.deformable = result.grid, result.refined.field.detach().float()
        state.affine = result.start.transform
        state.refinement = {"starts": [start.name for start in starts],
                            "refined_from": result.start.name, "kept": result.kept}
        if state.network_start is not None:
            state.network_start.update(refined_from=result.start.name,
                                       ngf_in_lung_after_coarse_levels=result.scores)
            state.network_start.update(kept=result.kept,
                                       ngf_in_lung_final=result.final_scores)


def _add_searched_start(starts: list[Start], baselines: list[Start], crop_for: CropFor,
                        mode: str) -> None:
    """The affine start (``starts[0]``) continued by the discrete search (:mod:`.discrete`)
    becomes the first start; with ``mode`` "replace" the affine start itself becomes a
    baseline (compared at the end, never refined)."""
    affine = starts[0]
    inputs = CropInputs(*crop_for(affine.transform, affine.config))
    field = discrete_search(inputs.fixed, inputs.moving, inputs.grid, inputs.coverage)
    if mode == "replace":
        baselines.insert(0, starts.pop(0))
    starts.insert(0, Start(affine.name + SEARCHED, affine.transform, field, inputs.grid,
                           affine.config))


def _schedule(options: RegistrationOptions, pair: PreparedPair, after_network: bool
              ) -> RefineConfig:
    return refine_config(options.refine_iterations, after_network, options.fine_spacing_mm,
                         options.similarity, options.similarity_weight,
                         options.similarity_region, pair.fixed.GetSpacing())


def _keep(state: RegistrationState, result: NetworkResult) -> None:
    """The network step's choice (the field that network-only registration writes)."""
    state.crop, state.deformable, state.affine = result.grid, result.field, result.start
    state.network_start = {"start": result.start_name, "ngf_in_lung": dict(result.scores)}


def _load(model: str, device: torch.device) -> tuple[torch.nn.Module | None, dict | None]:
    if model == "auto" and DEFAULT_MODEL not in model_names():
        return None, None
    name = DEFAULT_MODEL if model == "auto" else model
    network, card = load_model(name, device=str(device))
    return network.eval(), card


@dataclass
class RegistrationResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict


def register(inputs: RegistrationInputs, out_dir: Path,
             options: RegistrationOptions | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> RegistrationResult:
    """Register one pair and write all outputs into ``out_dir`` (see :mod:`.outputs`)."""
    options = options or RegistrationOptions()
    check_inputs(inputs, options, out_dir)  # every input judged before any work
    fingerprint = input_fingerprint(inputs, options)  # the inputs as this run reads them
    configure_threads(options.threads)
    pair = prepare(inputs, options.fixed_is)
    points = check_landmarks_inside(read_points(inputs, pair), pair.fixed, pair.moving,
                                    inputs, options.exclude_outside_landmarks)
    state = estimate_field(pair, options, progress, should_stop)
    step = StepTimer(state, progress, should_stop)
    with step("write outputs", 0.93):
        files, metrics = write_outputs(pair, inputs, options, state, Path(out_dir), points,
                                       fingerprint)
    if progress is not None:
        progress(1.0, "done")
    return RegistrationResult(Path(out_dir), files, metrics)
