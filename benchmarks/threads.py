"""Thread settings idle and next to a busy core: milliseconds per unit of work, per workload and setting.

Each measurement is a fresh Python process (OpenMP reads its wait policy once, when torch loads it) that
runs every workload and prints the median seconds per unit (the first call of each, warm-up, excluded):

- ``quick-train``: one training step of the ``quick`` preset (glyphs, ANIL, Conv4-32 max-pool 28x28,
  8 tasks of 5-way 1-shot with 5 queries) through ``repana.meta.train.train``;
- ``quick-eval``: one evaluation episode on that network (``predict``: 5-way 1-shot, 75 queries, 10 MAML
  steps on every parameter);
- ``mini-train``: one MAML step (second order, 1 inner step) on one MiniImageNet-size episode: Conv4-32
  max-pool, 3x84x84, 5-way 5-shot with 15 queries (100 images);
- ``cka`` / ``cca``: ``repana.similarity.cka`` / ``cca`` of two random (5000, 512) float32 matrices.

Settings (``--settings``, comma-separated):

The default settings are ``old,new,1:spin,cores:passive`` (the last one: repana's default before this
benchmark was extended, all cores with the passive policy); on 2 cores ``old`` is ``2:spin``.

- ``old``: torch's defaults as repana ran before issue 17 (``OMP_WAIT_POLICY`` unset, so OpenMP threads
  spin while they wait; torch's thread count, one per core);
- ``new``: what the ``repana`` command does now: :func:`repana.runtime.configure_process_defaults` before
  ``import torch``, then every workload with repana's own thread choice (``threads = 0``);
- ``N:passive`` / ``N:spin``: N torch threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``) with
  ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once) or unset (they spin first);
  ``N:spinK``: unset with ``GOMP_SPINCOUNT=K``. ``N`` may be ``cores`` (the usable cores,
  :func:`repana.runtime.usable_cores`).

each ``idle`` (nothing started by the benchmark; on a shared machine other jobs still run) and ``busy``
(the benchmark starts ``--competitors`` Python busy loops for the duration of each measurement). Rounds
are interleaved (the order of the settings rotates each round) so that a change in the machine's load hits
every setting alike. Prints per workload the median ms per unit and each setting's time / the best idle
time of the same run (1.00 = as fast as the fastest setting on the idle machine; 2.00 = half as fast).

    python benchmarks/threads.py            # 3 rounds (~10-15 min on 2 cores)
    python benchmarks/threads.py --quick    # 2 rounds, 3 repeats (< 5 min on a quiet 2-core machine)
    python benchmarks/threads.py --workloads quick-train,mini-train --settings old,new,1:spin
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
sys.path.insert(0, str(ROOT))

from repana.runtime import usable_cores  # noqa: E402   (imports neither torch nor numpy)

WORKLOADS = ("quick-train", "quick-eval", "mini-train", "cka", "cca")
DEFAULT_SETTINGS = ("old", "new", "1:spin", "cores:passive")
_THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
                     "OPENBLAS_NUM_THREADS", "REPANA_THREADS")

_WORKER = r"""
import json, os, statistics, sys, tempfile, time
spec = json.loads(sys.argv[1])
if spec["setting"] == "new":
    from repana.runtime import configure_process_defaults
    configure_process_defaults()
import torch
from repana.runtime import retain_freed_memory
retain_freed_memory()   # as the repana command does
threads = spec["threads"]          # None: the setting leaves the count to torch ("old") or repana ("new")
if threads:
    torch.set_num_threads(threads)
repeats, budget = spec["repeats"], spec["budget"]


def timed(call):
    start = time.perf_counter()
    call()   # warm-up
    warm_up = time.perf_counter() - start
    if warm_up > budget:   # a setting on the cliff: its warm-up call is its measurement
        return [warm_up]
    times, start = [], time.perf_counter()
    while len(times) < repeats and (len(times) < 2 or time.perf_counter() - start < budget):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return times


class thread_count:
    # the setting's thread count, or (setting "new") repana's automatic choice for this network / work

    def __init__(self, model, images):
        from repana.models import forward_macs
        from repana.runtime import choose_threads, similarity_threads
        self.before = torch.get_num_threads()
        if threads:
            self.chosen = threads
        elif spec["setting"] == "new" and model is None:
            self.chosen = similarity_threads()
        elif spec["setting"] == "new":
            self.chosen = choose_threads(forward_macs(model.config, images))
        else:
            self.chosen = self.before   # "old": torch's default

    def __enter__(self):
        torch.set_num_threads(self.chosen)
        chosen_threads.add(self.chosen)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


chosen_threads = set()


def quick_train():
    from repana.meta.config import load_config
    from repana.meta.train import StopTraining, train
    config = load_config(preset="quick", overrides={"iterations": 10 ** 6, "val_every": 0, "checkpoint_every": 0,
                                                    "save_steps": [],
                                                    "threads": threads or (0 if spec["setting"] == "new"
                                                                           else torch.get_num_threads())})
    stamps = []

    def stamp(step, metrics):
        stamps.append(time.perf_counter())
        # the first step is warm-up; a setting that fell off the cliff stops at the budget
        if len(stamps) > repeats or (len(stamps) >= 2 and stamps[-1] - stamps[0] > budget):
            raise StopTraining

    with tempfile.TemporaryDirectory() as folder:
        summary = train(config, folder, show_progress=False, callback=stamp)
    chosen_threads.add(summary.threads)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def quick_eval():
    from repana.meta.evaluate import predict
    from repana.models import Conv4
    torch.manual_seed(0)
    model = Conv4(1, 5, 32, 28, pooling="max")
    support_x, support_y, query_x = torch.rand(5, 1, 28, 28), torch.arange(5), torch.rand(75, 1, 28, 28)
    with thread_count(model, 80):   # as repana evaluate / predict
        return timed(lambda: predict(model, support_x, support_y, query_x, steps=10))


def mini_train():
    from types import SimpleNamespace
    from repana.meta.algorithms import get_algorithm
    from repana.models import Conv4
    torch.manual_seed(0)
    model = Conv4(3, 5, 32, 84, pooling="max")
    labels = torch.randperm(5)
    batch = SimpleNamespace(support_x=torch.rand(1, 25, 3, 84, 84), support_y=labels.repeat_interleave(5)[None],
                            query_x=torch.rand(1, 75, 3, 84, 84), query_y=labels.repeat_interleave(15)[None])
    algorithm = get_algorithm("maml", inner_steps=1, inner_lr=0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        grads, _ = algorithm.meta_gradients(model, batch)
        for name, param in model.named_parameters():
            param.grad = grads[name]
        optimizer.step()

    with thread_count(model, 100):   # as repana train (threads = 0)
        return timed(step)


def similarity(name):
    from repana import similarity as measures
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5000, 512, generator=generator), torch.randn(5000, 512, generator=generator)
    with thread_count(None, None):   # as repana compare
        return timed(lambda: getattr(measures, name)(x, y))


WORKLOADS = {"quick-train": quick_train, "quick-eval": quick_eval, "mini-train": mini_train,
             "cka": lambda: similarity("cka"), "cca": lambda: similarity("cca")}
result = {"wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "s": {}, "threads": {}}
for name in spec["workloads"]:
    chosen_threads.clear()
    result["s"][name] = statistics.median(WORKLOADS[name]())
    result["threads"][name] = sorted(chosen_threads)
print(json.dumps(result))
"""

_BUSY = "while True:\n    pass\n"


def setting_environment(setting: str) -> tuple[dict, int | None]:
    """The environment and explicit thread count (None: left to torch / repana) of a setting."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["REPANA_PROGRESS"] = "0"
    if setting in ("old", "new"):
        return env, None
    count, _, policy = setting.partition(":")
    threads = usable_cores() if count == "cores" else int(count)
    env["OMP_NUM_THREADS"] = str(threads)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin") and policy[4:]:
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy not in ("spin", ""):
        raise SystemExit(f"setting {setting!r}: the policy must be passive, spin or spin<count>")
    return env, threads


def measure(setting: str, workloads: list[str], repeats: int, budget: float) -> dict:
    env, threads = setting_environment(setting)
    spec = json.dumps({"setting": setting, "threads": threads, "workloads": workloads, "repeats": repeats,
                       "budget": budget})
    timeout = 600 + budget * len(workloads) * 2
    try:
        done = subprocess.run([sys.executable, "-c", _WORKER, spec], env=env, capture_output=True, text=True,
                              timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"threads": {}, "wait_policy": "timeout", "s": {w: float("inf") for w in workloads}}
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"worker {setting} failed:\n{error.stderr}") from None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 3 repeats, 3 s per workload (< 5 min on a quiet 2-core machine)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (median reported; default 3, --quick 2)")
    parser.add_argument("--repeats", type=int, help="timed calls per workload and measurement (default 10, --quick 3)")
    parser.add_argument("--budget", type=float,
                        help="seconds per workload and measurement at most, after at least 2 timed calls "
                             "(default 20, --quick 3): a setting that fell off the cliff stops early (a warm-up "
                             "call longer than this is the measurement)")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes in the busy condition")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    repeats = args.repeats or (3 if args.quick else 10)
    budget = args.budget or (3.0 if args.quick else 20.0)
    settings = [s for s in args.settings.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    for setting in settings:
        setting_environment(setting)   # a bad setting fails before any measurement
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally below: stop the busy loops

    times: dict[tuple[str, str, str], list[float]] = {}
    threads_seen: dict[tuple[str, str], set] = {}
    records = []
    print(f"cores usable {usable_cores()}, load average {os.getloadavg()[0]:.2f}, {rounds} rounds, "
          f"{repeats} repeats, {budget:g} s budget, {args.competitors} busy loop(s) when busy", flush=True)
    started = time.perf_counter()
    for round_index in range(rounds):
        order = settings[round_index % len(settings):] + settings[:round_index % len(settings)]
        for condition in ("idle", "busy"):
            competitors = []
            if condition == "busy":
                competitors = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.competitors)]
                time.sleep(0.5)
            try:
                for setting in order:
                    result = measure(setting, workloads, repeats, budget)
                    for workload, counts in result["threads"].items():
                        threads_seen.setdefault((workload, setting), set()).update(counts)
                    records.append({"round": round_index + 1, "condition": condition, "setting": setting,
                                    "load_average": os.getloadavg()[0], **result})
                    for workload, seconds in result["s"].items():
                        times.setdefault((workload, setting, condition), []).append(seconds)
                    cells = "  ".join(f"{w} {1000 * s:7.1f} ({','.join(map(str, result['threads'].get(w, [])))})"
                                      for w, s in result["s"].items())
                    print(f"round {round_index + 1} {condition:4s} {setting:10s} ms (threads): {cells}  "
                          f"OMP_WAIT_POLICY {result['wait_policy'] or 'unset'}, load {os.getloadavg()[0]:.1f}",
                          flush=True)
            finally:
                for process in competitors:
                    process.kill()
                    process.wait()
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"\n{time.perf_counter() - started:.0f} s; medians over {rounds} rounds; ratio = time / best idle time "
          "of the workload (1.00 = the fastest idle setting)")
    summary = {}
    for workload in workloads:
        best_setting = min(settings, key=lambda s: median[(workload, s, "idle")])
        best = median[(workload, best_setting, "idle")]
        print(f"\n{workload} (best idle: {best_setting}, {1000 * best:.1f} ms)")
        best_busy = min(median[(workload, s, "busy")] for s in settings)
        print(f"{'setting':14s} {'idle ms':>9s} {'busy ms':>9s} {'idle/best':>10s} {'busy/best':>10s} "
              f"{'busy/best busy':>15s}  threads")
        for setting in settings:
            idle, busy = median[(workload, setting, "idle")], median[(workload, setting, "busy")]
            counts = ",".join(map(str, sorted(threads_seen.get((workload, setting), ()))))
            print(f"{setting:14s} {1000 * idle:9.1f} {1000 * busy:9.1f} {idle / best:10.2f} {busy / best:10.2f} "
                  f"{busy / best_busy:15.2f}  {counts}")
            summary.setdefault(setting, []).append((idle / best, busy / best))
    print("\nworst ratio over the workloads (time / best idle time):\nsetting         idle   busy")
    for setting in settings:
        worst_idle = max(r[0] for r in summary[setting])
        worst_busy = max(r[1] for r in summary[setting])
        print(f"{setting:14s} {worst_idle:5.2f} {worst_busy:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "median_s": {"|".join(k): v for k, v in median.items()}},
                                        indent=1))


if __name__ == "__main__":
    main()
