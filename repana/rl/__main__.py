"""``python -m repana.rl train|evaluate|similarity``: run the RL side before the main CLI wires it."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repana.rl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="meta-train a policy (resumes a run folder)")
    train.add_argument("--preset", default="rl-2dnav", help="rl-2dnav | rl-halfcheetah-dir | rl-halfcheetah-vel or a TOML file")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--algorithm", choices=("maml", "fomaml", "anil"))
    train.add_argument("--seed", type=int)
    train.add_argument("--iterations", type=int)
    train.add_argument("--meta-batch-size", type=int)
    train.add_argument("--fast-batch-size", type=int)
    train.add_argument("--no-adapt-log-std", action="store_true")
    train.add_argument("--n-envs", type=int)
    train.add_argument("--vector-mode", choices=("sync", "async"))
    train.add_argument("--threads", type=int, default=0)
    train.add_argument("--no-resume", action="store_true")
    evaluate = sub.add_parser("evaluate", help="returns before / after adaptation of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--tasks", type=int, default=40)
    evaluate.add_argument("--seed", type=int, default=None)
    evaluate.add_argument("--out", help="CSV of the per-task returns")
    similarity = sub.add_parser("similarity", help="policy layer similarity before vs after adaptation")
    similarity.add_argument("checkpoint")
    similarity.add_argument("--tasks", type=int, default=5)
    similarity.add_argument("--out", help="CSV of the tidy frame")
    args = parser.parse_args(argv)

    from repana.errors import RepanaError
    try:
        if args.command == "train":
            from repana.rl.train import train_rl
            overrides = {k: v for k, v in {
                "algorithm": args.algorithm, "seed": args.seed, "iterations": args.iterations,
                "meta_batch_size": args.meta_batch_size, "fast_batch_size": args.fast_batch_size,
                "n_envs": args.n_envs, "vector_mode": args.vector_mode,
                "torch_threads": args.threads or None}.items() if v is not None}
            if args.no_adapt_log_std:
                overrides["adapt_log_std"] = False
            print(json.dumps(train_rl(args.preset, args.out, resume=not args.no_resume, **overrides)))
        elif args.command == "evaluate":
            from repana.io import atomic_save_csv
            from repana.rl.evaluate import EVAL_SEED, evaluate_rl
            frame, summary = evaluate_rl(args.checkpoint, n_tasks=args.tasks,
                                         seed=EVAL_SEED if args.seed is None else args.seed)
            if args.out:
                atomic_save_csv(frame, args.out)
            print(json.dumps(summary))
        else:
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
