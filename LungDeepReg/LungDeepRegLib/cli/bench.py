"""``lungdeepreg bench synthetic | pairs | dirlab | copdgene``: the benchmarks, one tool.

Every method runs in its own process on the same cases with the same threads; results go to
``--out`` as results.json/.csv/.md and cumulative TRE plots, with the protocol and the exact
command. Finished case/method results are kept, so a re-run resumes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from ..errors import InputError
from ..metrics.landmarks import TREProtocol

SUITES = {
    "synthetic": "held-out synthetic breathing pairs with a known field",
    "pairs": "the pairs of a manifest CSV (landmarks and/or lobes)",
    "dirlab": "DIR-Lab 4DCT (your copy: --root)",
    "copdgene": "DIR-Lab COPDgene (your copy: --root)",
    "robustness": "the pairs of a manifest, uncut and with cut fields of view, no masks",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..benchmarks.methods import DEFAULT_METHODS, METHODS

    parser = subparsers.add_parser(
        "bench", help="run the synthetic, DIR-Lab, COPDgene or pairs benchmarks",
        description="Register every case with every method (one process each, same "
                    "threads), evaluate all alike and write results.json/.csv/.md and "
                    "cumulative TRE plots. Methods: " + ", ".join(METHODS) + ".")
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, summary in SUITES.items():
        suite = suites.add_parser(name, help=summary, description=summary)
        if name in ("pairs", "robustness"):
            suite.add_argument("manifest", type=Path)
            suite.add_argument("--round-to-voxel", action="store_true",
                               help="snap mapped landmarks to the moving voxel grid")
            suite.add_argument("--fixed-is", choices=("inhale", "exhale"), default="inhale")
        if name == "robustness":
            from ..benchmarks.robustness import CUTS, SIDES
            suite.add_argument("--cuts", default=",".join(CUTS),
                               help=f"comma list of cuts (default {','.join(CUTS)})")
            suite.add_argument("--sides", default=",".join(SIDES),
                               help="which images are cut: comma list of "
                                    f"{', '.join(SIDES)} (default all)")
        if name in ("dirlab", "copdgene"):
            suite.add_argument("--root", required=True, type=Path,
                               help="folder of your DIR-Lab/COPDgene copy")
        if name == "synthetic":
            suite.add_argument("--pairs", type=int, default=5, help="pairs per group")
            suite.add_argument("--ct", type=Path, action="append",
                               help="an unseen CT (repeatable; default: Lung-PET-CT-Dx A0001 from "
                                    "../shared/data when present)")
        suite.add_argument("--out", required=True, type=Path, help="output folder")
        suite.add_argument("--work", type=Path, help="folder of the inputs, logs and fields "
                                                     "of every case and method "
                                                     "(default: OUT/work)")
        suite.add_argument("--methods", default=DEFAULT_METHODS,
                           help=f"comma list (default {DEFAULT_METHODS}); the initial state "
                                "(identity) is always measured")
        suite.add_argument("--threads", type=int, default=2,
                           help="CPU threads of every method (default 2)")
        suite.add_argument("--device", default="cpu",
                           help="device of the LungDeepReg methods (default cpu)")
        suite.add_argument("--timeout", type=float, default=None,
                           help="seconds one method may run on one case (default: none)")
        suite.add_argument("--cases", help="comma list of case names to run (default: all)")
        suite.add_argument("--refine-iterations", type=int, default=None,
                           help="cap the refinement steps per level (quick runs)")
        suite.add_argument("--no-progress", action="store_true", help="no progress bar")
        suite.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.methods import RunSettings, parse_methods
    from ..benchmarks.results import write_results
    from ..benchmarks.runner import run_benchmark

    methods = parse_methods(args.methods)
    settings = RunSettings(threads=args.threads, device=args.device, timeout_s=args.timeout,
                           refine_iterations=args.refine_iterations)
    cases = select(load_cases(args), args.cases)
    work = args.work or args.out / "work"
    rows = run_benchmark(cases, work, methods, settings, progress=not args.no_progress)
    files = write_results(rows, args.out, metadata(args, cases, methods, settings))
    if args.suite == "robustness":
        files.update(write_robustness(rows, cases, methods, args.out))
    print_summary(rows, files)
    return 1 if any(row["status"] in ("failed", "case error") for row in rows) else 0


def load_cases(args: argparse.Namespace) -> list:
    wanted = [name.strip() for name in (args.cases or "").split(",") if name.strip()]
    if args.suite == "synthetic":
        from ..benchmarks.synthetic import synthetic_cases
        return synthetic_cases(args.pairs, args.ct, only=set(wanted) or None)
    if args.suite in ("pairs", "robustness"):
        from ..benchmarks.pairs import pair_cases
        protocol = TREProtocol(args.round_to_voxel, args.fixed_is)
        cases = pair_cases(args.manifest, protocol)
        if args.suite == "pairs":
            return cases
        from ..benchmarks.robustness import CUTS, SIDES, robustness_cases
        return robustness_cases(select(cases, args.cases), _names(args.cuts, tuple(CUTS)),
                                _names(args.sides, SIDES))
    if args.suite == "dirlab":
        from ..benchmarks.dirlab import discover_dirlab
        return discover_dirlab(args.root, wanted or None)  # reads only the cases asked for
    from ..benchmarks.copdgene import discover_copdgene
    return discover_copdgene(args.root, wanted or None)


def _names(text: str, known: tuple[str, ...]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(text, f"unknown name(s) {', '.join(unknown)}; choose from "
                               f"{', '.join(known)}")
    return names


def write_robustness(rows: list[dict], cases: list, methods: list, out: Path
                     ) -> dict[str, Path]:
    """``robustness.md``/``.json``: every cut variant against its uncut pair."""
    from ..benchmarks.robustness import robustness_table
    from ..io.atomic import write_json, write_text

    tables, text = {}, f"# Robustness to cut fields of view\n\nCommand: `{command_line()}`\n"
    for method in methods:
        if method.kind != "lungdeepreg":
            continue
        tables[method.name], markdown = robustness_table(rows, cases, method.name)
        text += "\n" + markdown
    print(text)
    return {"robustness md": write_text(out / "robustness.md", text),
            "robustness json": write_json(out / "robustness.json",
                                          {"command": command_line(), "tables": tables})}


def select(cases: list, names: str | None) -> list:
    """The cases named in ``--cases`` (all when None); a robustness pair's name also
    selects its cut variants (they carry it as their group)."""
    if not names:
        return cases
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {case.name for case in cases}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise InputError("--cases", f"unknown case(s) {', '.join(unknown)}; known: "
                                    f"{', '.join(sorted(known))}")
    return [case for case in cases
            if case.name in wanted or getattr(case, "group", None) in wanted]


def metadata(args: argparse.Namespace, cases: list, methods: list, settings) -> dict:
    """Title, date, hardware, the exact command and the protocol of the run."""
    from ..benchmarks.synthetic import BENCH_SEED, MAX_CC_MM

    ready = [case for case in cases if hasattr(case, "protocol")]
    phases = sorted({case.protocol.fixed for case in ready}) or ["inhale"]
    rounding = sorted({case.protocol.round_to_voxel for case in ready})
    masks = sorted({"given" if case.fixed_lungs is not None else "automatic" for case in ready})
    protocol = {
        "fixed image": f"{' / '.join(phases)} phase (moving: the other)",
        "landmark rounding": ("mapped landmarks snapped to the moving image's voxel grid"
                              if rounding == [True] else "none (continuous positions)"
                              if rounding in ([False], []) else "per case"),
        "lung mask": (" / ".join(masks) + "; automatic = preprocess.lung_mask of the fixed "
                      "image, the same mask for every method's folding and SD log J"),
        "evaluation": "pipeline.evaluation.evaluate on each method's field (output grid "
                      f"{settings.output_spacing_mm:g} mm over the fixed image); TRE SD is "
                      "the population SD; mean rows pool all landmarks",
        "threads": f"{settings.threads} per method (every method the same)",
        "device": f"{settings.device} (LungDeepReg methods); elastix on the CPU",
        "time and memory": "wall time of the method's process (start-up, reading, writing "
                           "included) and its peak RSS (os.wait4, children included)",
    }
    if settings.refine_iterations is not None:
        protocol["refinement"] = f"capped at {settings.refine_iterations} steps per level"
    if args.suite == "synthetic":
        protocol["synthetic pairs"] = (
            f"{args.pairs} per group, seeds pair_seed({BENCH_SEED}, i), cranio-caudal "
            f"amplitude {MAX_CC_MM[0]:g}-{MAX_CC_MM[1]:g} mm, 300 lung points moved by the "
            "known field; EPE over the lung voxels of the known field's grid")
    return {"benchmark": args.suite, "title": f"LungDeepReg benchmark: {args.suite}",
            "command": command_line(), "cwd": os.getcwd(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "hardware": hardware(), "code": code_version(), "protocol": protocol,
            "methods": {method.name: method.description for method in methods}}


def code_version() -> str:
    """The engine version and where it was imported from (git commit when there is one)."""
    from ..version import __version__

    folder = Path(__file__).resolve().parents[1]  # the LungDeepRegLib package
    text = f"lungdeepreg {__version__} from {folder}"
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        changes = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "."],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return text
    if commit.returncode == 0:
        dirty = " with uncommitted changes" if changes.stdout.strip() else ""
        text += f", git commit {commit.stdout.strip()}{dirty}"
    return text


def command_line() -> str:
    program = Path(sys.argv[0]).name
    head = ["lungdeepreg"] if program in ("lungdeepreg", "__main__.py") else [program]
    return shlex.join(head + sys.argv[1:])


def hardware() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.platform()}, {model}, {os.cpu_count()} logical CPUs"


def print_summary(rows: list[dict], files: dict) -> None:
    from ..benchmarks.summary import method_summary, methods_of

    for method in methods_of(rows):
        summary = method_summary(rows, method)
        tre = summary["tre"]
        parts = [f"{method}: {summary['cases']} case(s)"]
        if tre:
            parts.append(f"TRE {tre['mean']:.2f} ({tre['sd']:.2f}) mm")
        if summary["epe"] is not None:
            parts.append(f"EPE {summary['epe']:.2f} mm")
        if summary["time_s"] is not None:
            parts.append(f"{summary['time_s']:.1f} s")
        print(", ".join(parts))
    failed = [row for row in rows if row["status"] not in ("done",)]
    for row in failed:
        print(f"{row['status']}: {row['case']} {row.get('method') or ''}".rstrip(),
              file=sys.stderr)
    print(f"results in {files['md'].parent}")
