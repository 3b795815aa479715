"""``python -m repana.rl similarity CKPT``: the policy's layer similarity before vs after adaptation.

Training and evaluation are ``repana train --preset rl-...`` and ``repana evaluate CKPT``; this entry
stays only for the similarity table until ``repana analyze`` takes RL checkpoints.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repana.rl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    similarity = sub.add_parser("similarity", help="policy layer similarity before vs after adaptation")
    similarity.add_argument("checkpoint")
    similarity.add_argument("--tasks", type=int, default=5)
    similarity.add_argument("--out", help="CSV of the tidy frame")
    args = parser.parse_args(argv)

    from repana.errors import RepanaError
    try:
        from repana.io import atomic_save_csv
        from repana.rl.analysis import policy_similarity
        frame = policy_similarity(args.checkpoint, n_tasks=args.tasks)
        if args.out:
            atomic_save_csv(frame, args.out)
        print(frame.groupby(["layer", "measure"])["value"].agg(["mean", "std"]).to_string())
    except RepanaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
