"""Measure the registration's self-checks on the declared tuning and evaluation pairs.

Usage: ``python Testing/benchmark/tune_self_checks.py [--threads 2] [--work DIR]``

The pairs come from ``Testing/benchmark/data_split.toml``: breathing pairs of the same
subject (which must pass every check) and mismatched pairs of two subjects (which must be
flagged). The thresholds in ``LungDeepRegLib/pipeline/checks.py`` are chosen from the
*tuning* rows only: the NGF limits sit between the worst tuning breathing pair and the best
tuning mismatched pair. The evaluation rows are reported, never used to choose.
Writes ``Testing/benchmark/results/self_checks.md`` and ``.json`` with this command.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

from LungDeepRegLib.pipeline import checks
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "Testing" / "benchmark"
RESULTS = BENCH / "results"
MEASURED = ("fixed_lung_ml", "moving_lung_ml", "inhale_exhale_volume_ratio",
            "moving_fov_covers_fixed_lung", "ngf_in_lung_after_affine",
            "ngf_in_lung_after_deformable")


def declared_pairs() -> list[dict]:
    """Every pair of the data split with its role (tuning/evaluation, same/mismatched)."""
    split = tomllib.loads((BENCH / "data_split.toml").read_text(encoding="utf-8"))
    with open(BENCH / "popi_all_pairs.csv", newline="", encoding="utf-8") as handle:
        manifest = {row["id"]: row for row in csv.DictReader(handle)}
    pairs = []
    for role in ("tuning", "evaluation"):
        for pair_id in split[role]["popi_pairs"]:
            row = manifest[pair_id]
            pairs.append({"id": pair_id, "role": role, "kind": "same subject",
                          **{key: str((BENCH / row[key]).resolve()) for key in
                             ("fixed", "moving", "fixed_landmarks", "moving_landmarks")},
                          "landmark_format": row["landmark_format"]})
        for fixed, moving in split[role]["mismatched_pairs"]:
            pairs.append({"id": f"{Path(fixed).name.split('.')[0]} vs "
                                f"{Path(moving).name.split('.')[0]}",
                          "role": role, "kind": "different subjects",
                          "fixed": str((ROOT / fixed).resolve()),
                          "moving": str((ROOT / moving).resolve())})
    return pairs


def tuning_breathing_pairs() -> list[dict]:
    """The declared real *tuning* breathing pairs (POPI 00->50, 00->60): the only real pairs
    on which a weight, schedule, threshold or model may be chosen."""
    return [pair for pair in declared_pairs()
            if pair["role"] == "tuning" and pair["kind"] == "same subject"]


def measure(pair: dict, work: Path, threads: int) -> dict:
    inputs = RegistrationInputs(
        fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
        fixed_landmarks=Path(pair["fixed_landmarks"]) if "fixed_landmarks" in pair else None,
        moving_landmarks=Path(pair["moving_landmarks"]) if "moving_landmarks" in pair else None,
        landmark_format=pair.get("landmark_format"))
    started = time.perf_counter()
    try:
        result = register(inputs, work, RegistrationOptions(threads=threads, report=False))
    except Exception as error:  # an error is a result here (e.g. "no overlap")
        return {**pair, "error": f"{type(error).__name__}: {error}",
                "seconds": round(time.perf_counter() - started, 1)}
    metrics = result.metrics
    row = {**pair, **{key: metrics["self_checks"].get(key) for key in MEASURED},
           "warnings": [w["check"] for w in metrics["warnings"]],
           "seconds": round(time.perf_counter() - started, 1)}
    if "landmarks" in metrics:
        row["tre_mm"] = round(metrics["landmarks"]["after"]["mean"], 2)
    return row


def separation(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """Worst tuning breathing pair and best tuning mismatched pair for ``key``."""
    tuning = [row for row in rows if row["role"] == "tuning" and row.get(key) is not None]
    same = [row[key] for row in tuning if row["kind"] == "same subject"]
    other = [row[key] for row in tuning if row["kind"] == "different subjects"]
    return (max(same) if same else None), (min(other) if other else None)


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Self-checks on the declared pairs", "", f"Command: `{command}`", "",
             "Thresholds in force (`pipeline/checks.py`): NGF after affine > "
             f"{checks.MAX_NGF_AFTER_AFFINE}, NGF after deformable > "
             f"{checks.MAX_NGF_AFTER_DEFORMABLE}, inhale/exhale volume ratio outside "
             f"{checks.BREATHING_RATIO_RANGE}, field-of-view coverage < "
             f"{checks.MIN_COVERAGE_WARN}.", "",
             "| pair | role | subjects | lung ml (fixed / moving) | ratio | coverage | "
             "NGF affine | NGF deformable | TRE mm | warnings | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['id']} | {row['role']} | {row['kind']} | error: "
                         f"{row['error']} | | | | | | | {row['seconds']} |")
            continue
        lines.append(
            f"| {row['id']} | {row['role']} | {row['kind']} | {row['fixed_lung_ml']} / "
            f"{row['moving_lung_ml']} | {row['inhale_exhale_volume_ratio']} | "
            f"{row['moving_fov_covers_fixed_lung']} | {row['ngf_in_lung_after_affine']} | "
            f"{row['ngf_in_lung_after_deformable']} | {row.get('tre_mm', '')} | "
            f"{', '.join(row['warnings']) or 'none'} | {row['seconds']} |")
    for key in ("ngf_in_lung_after_affine", "ngf_in_lung_after_deformable"):
        worst_same, best_other = separation(rows, key)
        midpoint = (None if worst_same is None or best_other is None
                    else round((worst_same + best_other) / 2, 3))
        lines.append(f"\nTuning separation of {key}: worst breathing pair {worst_same}, best "
                     f"mismatched pair {best_other}; midpoint (the rule for the limit) "
                     f"{midpoint}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--only", default=None, help="comma list of pair ids")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [
        str(Path(sys.argv[0]).relative_to(ROOT) if Path(sys.argv[0]).is_absolute()
            else sys.argv[0]), *sys.argv[1:]])
    work = args.work or Path(tempfile.mkdtemp(prefix="self_checks_"))
    pairs = declared_pairs()
    if args.only:
        pairs = [pair for pair in pairs if pair["id"] in args.only.split(",")]
    rows = []
    for number, pair in enumerate(pairs):
        rows.append(measure(pair, work / f"pair{number:02d}", args.threads))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "self_checks.json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    text = markdown(rows, command)
    (RESULTS / "self_checks.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
