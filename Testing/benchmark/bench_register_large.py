"""Benchmark: the full ``register`` on a 512x512x141 CT pair, on the CPU, writing included.

Issue target: within 60 s and under 6 GB peak memory on 2 CPU cores. The fixed image is the
full-resolution POPI CT (``../shared/data/popi/popi_phase00.nii.gz``, 512x512x141 at
0.98x0.98x2 mm); the moving image is a synthetic exhale made from it with a known breathing
field (25 mm cranio-caudal at the diaphragm, with the density change of compressed lung),
so the TRE on 300 lung points against the known motion is reported beside the time.

Each variant runs as its own process through the benchmark launcher (wall time and that
process's peak RSS); ``--baseline-ref`` also runs an older version of the engine (a git
revision, checked out into a temporary worktree) side by side for a ratio.

    python Testing/benchmark/bench_register_large.py [--threads 2] [--baseline-ref REV] \
        [--repeats N]
    python Testing/benchmark/bench_register_large.py --models none,MODEL_A,MODEL_B \
        --name register_large_models

``--models`` runs this version once per ``--model`` value instead (``none``: instance
optimisation alone), with ratios to the first. ``--repeats N`` runs all variants N rounds,
one after the other, and reports each one's median wall time (and every run's). Results:
``Testing/benchmark/results/<name>.{json,md}`` (default ``register_large``) with the command
line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from LungDeepRegLib.benchmarks.measure import child_environment, run_measured
from LungDeepRegLib.data.pairs import make_pair
from LungDeepRegLib.io.images import read_image, write_image
from LungDeepRegLib.io.landmarks import write_csv
from LungDeepRegLib.metrics.landmarks import map_points
from LungDeepRegLib.preprocess import lung_labels
from LungDeepRegLib.spatial import Grid, image_to_tensor, tensor_to_image

REPO = Path(__file__).resolve().parents[2]
CT = REPO.parent / "shared" / "data" / "popi" / "popi_phase00.nii.gz"
RESULTS = REPO / "Testing" / "benchmark" / "results"
SEED = 515151  # never used in training (training seeds are 0..N and 1000+)
POINTS = 300


def build_pair(folder: Path) -> dict[str, Path]:
    """Fixed CT, synthetic exhale and 300 lung landmarks moved by the known field (cached)."""
    files = {name: folder / f"{name}" for name in (
        "fixed.nii.gz", "moving.nii.gz", "fixed_points.csv", "moving_points.csv")}
    if all(path.is_file() for path in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    ct = read_image(CT)
    grid = Grid.from_image(ct)
    hu, _ = image_to_tensor(ct)
    lung, _ = image_to_tensor(lung_labels(ct))
    pair = make_pair(hu, lung, grid, torch.Generator().manual_seed(SEED), kind="breathing",
                     max_cc_mm=(25.0, 25.0))
    write_image(ct, files["fixed.nii.gz"])
    write_image(tensor_to_image(pair.moving * 4095.0 - 1024.0, grid), files["moving.nii.gz"])
    inside = torch.nonzero(lung[0, 0] > 0).numpy()[:, ::-1].astype(float)
    chosen = np.random.default_rng(SEED).choice(len(inside), size=POINTS, replace=False)
    fixed_points = grid.index_to_physical(inside[chosen])
    write_csv(files["fixed_points.csv"], fixed_points)
    write_csv(files["moving_points.csv"], map_points(fixed_points, pair.field, grid))
    return files


def register_command(files: dict[str, Path], out: Path, threads: int,
                     extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "LungDeepRegLib", "register",
            "--fixed", str(files["fixed.nii.gz"]), "--moving", str(files["moving.nii.gz"]),
            "--fixed-landmarks", str(files["fixed_points.csv"]),
            "--moving-landmarks", str(files["moving_points.csv"]), "--landmark-format", "csv",
            "--out", str(out), "--threads", str(threads), *extra]


def run_variant(name: str, files: dict[str, Path], work: Path, threads: int,
                engine_path: Path | None = None, extra: tuple[str, ...] = ()) -> dict:
    env = child_environment(threads)
    if engine_path is not None:  # an older engine, imported ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([str(engine_path), env.get("PYTHONPATH", "")])
    out = work / name.replace(" ", "_")
    measured = run_measured(register_command(files, out, threads, extra),
                            work / f"{name.replace(' ', '_')}-log", timeout_s=1800, env=env)
    row = {"variant": name, "ok": measured.ok, "wall_s": round(measured.wall_s, 2),
           "peak_memory_gb": round(measured.peak_memory_gb, 3)}
    if not measured.ok:
        row["error"] = measured.failure()
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    row.update(tre_before_mm=metrics["landmarks"]["before"]["mean"],
               tre_after_mm=metrics["landmarks"]["after"]["mean"],
               folding_fraction=metrics["jacobian"]["folding_fraction"],
               steps_s=metrics["run"]["runtime_s"],
               outputs=sorted(p.name for p in out.iterdir()))
    return row


def run_rounds(variants: list[tuple[str, Path | None, tuple[str, ...]]],
               files: dict[str, Path], work: Path, threads: int, repeats: int) -> list[dict]:
    """Every variant once per round, ``repeats`` rounds (so that a slow spell of a noisy
    machine hits the variants alike); each row holds the median wall time of its runs."""
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    for _ in range(max(1, repeats)):
        for name, engine, extra in variants:
            runs[name].append(run_variant(name, files, work, threads, engine, extra))
    return [_median_row(runs[name]) for name, _, _ in variants]


def _median_row(runs: list[dict]) -> dict:
    failed = [row for row in runs if not row["ok"]]
    if failed:
        return failed[0]
    row = dict(runs[-1])
    walls = [run["wall_s"] for run in runs]
    row.update(wall_s=round(float(np.median(walls)), 2), wall_runs_s=walls,
               peak_memory_gb=max(run["peak_memory_gb"] for run in runs))
    return row


def baseline_worktree(ref: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(folder),
                    ref], check=True, capture_output=True)
    return folder / "LungDeepReg"


def markdown(result: dict) -> str:
    lines = [f"# Full `register` on a 512x512x141 pair ({result['date']})", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']}; {result['threads']} threads. Target: < 60 s "
             "and < 6 GB, writing included.", "",
             "| variant | wall (s, median) | peak memory (GB, max) | TRE before (mm) | "
             "TRE after (mm) | folding | meets target |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if not row["ok"]:
            lines.append(f"| {row['variant']} | failed: {row['error'][:80]} |||||")
            continue
        meets = row["wall_s"] < 60 and row["peak_memory_gb"] < 6
        runs = row.get("wall_runs_s") or [row["wall_s"]]
        wall = f"{row['wall_s']:.1f}" + (
            f" (runs {', '.join(f'{w:.1f}' for w in runs)})" if len(runs) > 1 else "")
        lines.append(f"| {row['variant']} | {wall} | {row['peak_memory_gb']:.2f} "
                     f"| {row['tre_before_mm']:.2f} | {row['tre_after_mm']:.2f} | "
                     f"{100 * row['folding_fraction']:.4f} % | {'yes' if meets else 'no'} |")
    for row in result["rows"]:
        if row.get("steps_s"):
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in row["steps_s"].items())
            lines.append(f"\n{row['variant']} steps: {steps}")
    rows = result["rows"]
    if len(rows) == 2 and all(r["ok"] for r in rows) and not result.get("models"):
        new, old = rows
        lines.append(f"\nRatio current / baseline: wall {new['wall_s'] / old['wall_s']:.2f}, "
                     f"memory {new['peak_memory_gb'] / old['peak_memory_gb']:.2f}")
        pairs = zip(new.get("wall_runs_s", []), old.get("wall_runs_s", []), strict=False)
        per_round = [f"{a / b:.2f}" for a, b in pairs]
        if len(per_round) > 1:
            lines.append(f"\nWall ratio per round: {', '.join(per_round)}")
    if result.get("models") and all(r["ok"] for r in rows):
        first = rows[0]
        for row in rows[1:]:
            lines.append(f"\nRatio {row['variant']} / {first['variant']}: wall "
                         f"{row['wall_s'] / first['wall_s']:.2f}, TRE after "
                         f"{row['tre_after_mm'] / first['tre_after_mm']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-ref", help="git revision to run side by side")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir())
                        / "lungdeepreg_bench_large")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--models", help="comma list of --model values to run side by side")
    parser.add_argument("--name", default="register_large", help="results file stem")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all variants, one after the other (median wall time)")
    args = parser.parse_args()
    files = build_pair(args.work / "pair")
    with tempfile.TemporaryDirectory() as folder:
        variants: list[tuple[str, Path | None, tuple[str, ...]]]
        if args.models:
            variants = [(f"--model {model}", None, ("--model", model))
                        for model in args.models.split(",")]
        else:
            variants = [("current", None, ())]
        if args.baseline_ref:
            engine = baseline_worktree(args.baseline_ref, Path(folder) / "tree")
            variants.append((f"baseline {args.baseline_ref}", engine, ()))
        try:
            rows = run_rounds(variants, files, args.work, args.threads, args.repeats)
        finally:
            if args.baseline_ref:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(Path(folder) / "tree")], capture_output=True)
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": shlex.join(["python", *sys.argv]), "threads": args.threads,
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs, {platform.platform()}",
              "models": args.models, "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
