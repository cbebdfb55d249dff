"""``lungdeepreg batch``: many pairs, one progress bar, resumable and shardable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..pipeline.batch import parse_shard, read_batch_manifest, run_batch
from .register import add_option_arguments, options_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="register every pair of a manifest CSV",
        description="Register the pairs of a CSV manifest (columns fixed,moving and "
                    "optionally id, masks, lobes, landmarks, landmark_format). Finished "
                    "pairs are skipped on a re-run; a failing pair does not stop the others.")
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--shard", help="i/n: process every n-th pair starting at i "
                                        "(default: torchrun's RANK/WORLD_SIZE, else all)")
    add_option_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    items = read_batch_manifest(args.manifest)
    shard = parse_shard(args.shard)
    count = len(items[shard[0] - 1::shard[1]])
    bar = tqdm(total=count, desc="pairs", unit="pair", file=sys.stderr, dynamic_ncols=True)

    def on_pair(item, row) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{item.pair_id}: {row['status']}")
        if row["status"] == "failed":
            tqdm.write(f"error: {item.pair_id}: {row['error']}", file=sys.stderr)
        for message in row.get("warnings", []):
            tqdm.write(f"warning: {item.pair_id}: {message}", file=sys.stderr)

    rows = run_batch(items, args.out, options_from(args), shard, on_pair)
    bar.close()
    failed = [row for row in rows if row["status"] == "failed"]
    done = sum(row["status"] == "done" for row in rows)
    skipped = len(rows) - done - len(failed)
    print(f"{done} registered, {skipped} skipped, {len(failed)} failed; "
          f"summary in {args.out}")
    return 1 if failed else 0
