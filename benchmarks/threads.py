"""Training speed next to a busy core: torch's old defaults vs repana's process defaults.

Each measurement is a fresh Python process that trains the ``quick`` preset (glyphs, ANIL) for
``--steps`` steps (or until ``--budget`` seconds have passed) and prints the seconds per step (the
first step, warm-up, excluded). Settings:

- ``before``: torch's defaults as repana ran before (``OMP_WAIT_POLICY`` unset: OpenMP threads spin
  while they wait; threads = torch's choice, one per core);
- ``after``: :func:`repana.runtime.configure_process_defaults` called before ``import torch``
  (what the ``repana`` command does), then training with ``threads = 0`` (the default);
- ``threads=1``: one intra-op thread, the old advice on shared machines (reference).

each ``idle`` (nothing started by the benchmark) and ``busy`` (the benchmark starts one Python
busy loop per ``--competitors``, pinned nowhere, for the duration of the measurement). Rounds are
interleaved so that a change in the machine's load hits every setting alike. Prints the median
seconds per step and the ratios busy / idle per setting and after / before per condition.

    python benchmarks/threads.py [--steps 30] [--rounds 3] [--competitors 1] [--budget 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("before", "after", "threads=1")

_WORKER = r"""
import json, os, sys, tempfile, time
setting, steps, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if setting == "after":
    from repana.runtime import configure_process_defaults
    configure_process_defaults()
import torch
from repana.meta.config import load_config
from repana.meta.train import StopTraining, train
threads = 1 if setting == "threads=1" else 0
config = load_config(preset="quick", overrides={"iterations": steps, "val_every": 0, "checkpoint_every": 0,
                                                "save_steps": [], "threads": threads})
stamps = []

def stamp(step, metrics):
    stamps.append(time.perf_counter())
    if len(stamps) >= 3 and stamps[-1] - stamps[0] > budget:
        raise StopTraining   # a setting that fell off the cliff: the steps done so far give its rate

with tempfile.TemporaryDirectory() as folder:
    train(config, folder, show_progress=False, callback=stamp)
per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
print(json.dumps({"per_step_s": per_step, "threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))
"""

_BUSY = "while True:\n    pass\n"


def measure(setting: str, steps: int, budget: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                              "KMP_BLOCKTIME", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["REPANA_PROGRESS"] = "0"
    try:
        done = subprocess.run([sys.executable, "-c", _WORKER, setting, str(steps), str(budget)], env=env,
                              capture_output=True, text=True, timeout=budget + 600, check=True)
    except subprocess.TimeoutExpired:
        return {"per_step_s": float("inf"), "threads": None, "wait_policy": "timeout"}
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"worker {setting} failed:\n{error.stderr}") from None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes in the busy condition")
    parser.add_argument("--budget", type=float, default=120,
                        help="seconds of training per measurement at most (a slow setting stops early, after at "
                             "least 3 steps; its rate comes from the steps done)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally below: stop the busy loops
    settings = [s for s in args.settings.split(",") if s]
    times: dict[tuple[str, str], list[float]] = {}
    print(f"cores usable {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.steps} quick-preset steps per measurement, {args.competitors} busy loop(s) when busy", flush=True)
    for round_index in range(args.rounds):
        for condition in ("idle", "busy"):
            competitors = []
            if condition == "busy":
                competitors = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.competitors)]
                time.sleep(0.5)
            try:
                for setting in settings:
                    result = measure(setting, args.steps, args.budget)
                    times.setdefault((setting, condition), []).append(result["per_step_s"])
                    print(f"round {round_index + 1} {condition:4s} {setting:9s} {1000 * result['per_step_s']:8.1f} "
                          f"ms/step (threads {result['threads']}, OMP_WAIT_POLICY "
                          f"{result['wait_policy'] or 'unset'})", flush=True)
            finally:
                for process in competitors:
                    process.kill()
                    process.wait()
    median = {key: statistics.median(values) for key, values in times.items()}
    print("\nmedian ms/step        idle       busy   busy/idle")
    for setting in settings:
        idle, busy = median[(setting, "idle")], median[(setting, "busy")]
        print(f"{setting:12s} {1000 * idle:10.1f} {1000 * busy:10.1f} {busy / idle:10.2f}x")
    if "before" in settings and "after" in settings:
        for condition in ("idle", "busy"):
            ratio = median[("before", condition)] / median[("after", condition)]
            print(f"{condition}: after is {ratio:.2f}x as fast as before")


if __name__ == "__main__":
    main()
