"""Seconds per meta-iteration (MAML, FOMAML, ANIL) and per evaluated episode, repana vs a plain loop.

Setting (the issue's): Conv4-64 on Omniglot-size 28x28 inputs (random pixels: speed does not depend on
the data), 5-way 1-shot, 15 queries per class, meta-batch 32, 1 and 5 inner steps; evaluation with
10 test steps. The network is MAML's Omniglot Conv4 (stride-2 convolutions, as every Omniglot preset
of repana); ``--pooling max`` times the max-pooling variant (MiniImageNet's block) on the same inputs. The baseline, measured in the same run, is the usual per-episode loop over cloned
modules:

* first order / evaluation: ``copy.deepcopy(model)`` + ``torch.optim.SGD`` steps in place;
* second order: a clone whose parameters are graph-connected copies that are *replaced* (not updated
  in place) at each step, as learn2learn's ``clone()/adapt()`` does, so the meta-gradient is exact;
* ANIL in the loop: the same clone with only the head updated, the whole network run every step.

Prints seconds per unit for both, the speed-up (loop / repana), and ANIL's speed-up over MAML with
5 training steps and 10 test steps (the paper reports 1.7x and 4.1x; MAML and ANIL timed against each
other, interleaved), next to the ratio of the two computations' convolution FLOPs: the speed-up an
implementation doing the same arithmetic equally efficiently for both would get. Each case keeps the
best of ``--repeats`` interleaved runs (``--eval-repeats`` for the short evaluation cases).

    python benchmarks/meta_train.py            # full setting (2-15 min on 2 CPU cores, by machine)
    python benchmarks/meta_train.py --quick    # meta-batch 4, 4 evaluation episodes (~1 min)
    python benchmarks/meta_train.py --threads 1  # on a shared CPU, avoids OpenMP spinning
    python benchmarks/meta_train.py --device cuda  # on a GPU (timings synchronised with the device)
    python benchmarks/meta_train.py --setting miniimagenet  # Conv4-32 (max-pool), 3x84x84, meta-batch 4
    python benchmarks/meta_train.py --single-episode  # only the one-episode evaluation, five networks (~2 min)

One episode per call (``predict``, 10 steps) is timed against a clone-and-adapt loop written out here:
``copy.deepcopy`` of the model, 10 SGD steps with ``torch.autograd.grad``, the query forward under
``no_grad`` (learn2learn's ``clone()``/``adapt()`` at test time, without the graph it keeps), on five
networks (``EPISODE_NETWORKS``: Omniglot Conv4-64 stride-2 with a flattened or a spatial-mean head, the
quick preset's Conv4-32 stride-2 spatial-mean, Conv4-64 max-pool, MiniImageNet's Conv4-32 on 84x84),
each pair interleaved, the median of ``--episode-repeats`` calls. Two runs (1 thread, 2 shared cores at
load ~6), MAML / ANIL: stride nets 1.31-1.45x / 2.0-3.8x, max-pool Conv4-64 1.19-1.22x / 1.8-1.9x,
MiniImageNet 1.05x / 1.6x (its time is in the conv, batch-norm and pooling kernels the loop runs too,
see repana.meta.inner.conv4_episode).

``--setting miniimagenet`` times MiniImageNet's network and sizes instead (5-way 1-shot, 15 queries,
meta-batch 4 as in the paper, random pixels).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from repana.meta.algorithms import get_algorithm
from repana.meta.evaluate import evaluate, predict
from repana.models import Conv4
from repana.runtime import retain_freed_memory

WAYS, SHOTS, QUERIES = 5, 1, 15
INNER_LR = 0.4


@dataclass(frozen=True)
class Setting:
    """Network and image sizes of one benchmark setting."""

    name: str
    channels: int      # image channels
    size: int          # image side in pixels
    hidden: int        # filters per conv block
    tasks: int         # meta-batch size
    default_pooling: str


SETTINGS = {"omniglot": Setting("Omniglot", 1, 28, 64, 32, "stride"),
            "miniimagenet": Setting("MiniImageNet", 3, 84, 32, 4, "max")}


def make_batch(setting: Setting, tasks: int, seed: int, device: torch.device) -> SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.stack([torch.randperm(WAYS, generator=gen) for _ in range(tasks)])
    shape = (setting.channels, setting.size, setting.size)
    batch = SimpleNamespace(support_x=torch.rand(tasks, WAYS * SHOTS, *shape, generator=gen),
                            support_y=labels.repeat_interleave(SHOTS, 1),
                            query_x=torch.rand(tasks, WAYS * QUERIES, *shape, generator=gen),
                            query_y=labels.repeat_interleave(QUERIES, 1))
    return SimpleNamespace(**{k: v.to(device) for k, v in vars(batch).items()})


# ----- the baseline: a per-episode loop over cloned modules ----------------------------------------

def graph_clone(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose parameters are differentiable copies of ``model``'s (learn2learn-style clone)."""
    clone = copy.deepcopy(model)
    originals = dict(model.named_parameters())
    for module_name, module in clone.named_modules():
        for p_name in list(module._parameters):
            full = f"{module_name}.{p_name}" if module_name else p_name
            module._parameters[p_name] = originals[full].clone()
    return clone


def clone_parameters(clone: torch.nn.Module, head_only: bool):
    return [(m, n) for mn, m in clone.named_modules() for n in m._parameters
            if not head_only or mn == "head"]


def loop_second_order(model, batch, steps: int, head_only: bool) -> None:
    tasks = batch.support_x.shape[0]
    for t in range(tasks):
        clone = graph_clone(model)
        slots = clone_parameters(clone, head_only)
        for _ in range(steps):
            loss = F.cross_entropy(clone(batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, [m._parameters[n] for m, n in slots], create_graph=True)
            for (m, n), g in zip(slots, grads):
                m._parameters[n] = m._parameters[n] - INNER_LR * g
        (F.cross_entropy(clone(batch.query_x[t]), batch.query_y[t]) / tasks).backward()


def sgd_adapted_clone(model, support_x, support_y, steps: int, head_only: bool) -> torch.nn.Module:
    """A deep copy of ``model`` after ``steps`` plain SGD steps on one task's support set."""
    clone = copy.deepcopy(model)
    inner = torch.optim.SGD(clone.head.parameters() if head_only else clone.parameters(), lr=INNER_LR)
    for _ in range(steps):
        inner.zero_grad()
        F.cross_entropy(clone(support_x), support_y).backward()
        inner.step()
    return clone


def loop_first_order(model, batch, steps: int, head_only: bool) -> None:
    tasks = batch.support_x.shape[0]
    for t in range(tasks):
        clone = sgd_adapted_clone(model, batch.support_x[t], batch.support_y[t], steps, head_only)
        clone.zero_grad()
        (F.cross_entropy(clone(batch.query_x[t]), batch.query_y[t]) / tasks).backward()
        for p, q in zip(model.parameters(), clone.parameters()):
            p.grad = q.grad.clone() if p.grad is None else p.grad + q.grad


def clone_and_adapt_episode(model, support_x, support_y, query_x, steps: int, head_only: bool) -> torch.Tensor:
    """One episode the learn2learn way, written plainly: deep-copy the model, ``steps`` SGD steps with
    ``torch.autograd.grad`` (no graph kept: evaluation), then the query forward under ``no_grad``."""
    clone = copy.deepcopy(model)
    params = list(clone.head.parameters() if head_only else clone.parameters())
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(clone(support_x), support_y), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(INNER_LR * g)
    with torch.no_grad():
        return clone(query_x).argmax(-1)


def loop_evaluate(model, batch, steps: int, head_only: bool) -> None:
    for t in range(batch.support_x.shape[0]):
        clone = sgd_adapted_clone(model, batch.support_x[t], batch.support_y[t], steps, head_only)
        with torch.no_grad():
            clone(batch.query_x[t]).argmax(-1)


# ----- timing -------------------------------------------------------------------------------------

def conv_macs(model: Conv4) -> list[int]:
    """Multiply-accumulates of each conv layer's forward pass for one image."""
    macs, side = [], model.config["image_size"]
    for layer in model.layer_names[:-1]:
        conv = getattr(model, layer).conv
        side = (side + 2 - 3) // conv.stride[0] + 1
        macs.append(conv.out_channels * conv.in_channels * 9 * side * side)
        if getattr(model, layer).pooling == "max":
            side //= 2
    return macs


def evaluation_flop_ratio(model: Conv4, steps: int) -> float:
    """MAML / ANIL convolution FLOPs of evaluating one episode (batch norm, ReLU and head ignored).

    MAML: ``steps`` forward+backward passes on the support set (backward = weight gradient + input
    gradient, no input gradient for conv1) and one forward of the query set. ANIL: one forward of the
    support set and one of the query set; its head steps are negligible.
    """
    macs = conv_macs(model)
    forward = sum(macs)
    support, query = WAYS * SHOTS, WAYS * QUERIES
    maml = steps * support * (3 * forward - macs[0]) + query * forward
    anil = (support + query) * forward
    return maml / anil


def seconds_pair(baseline, candidate, repeats: int, device: torch.device,
                 statistic=min) -> tuple[float, float]:
    """``statistic`` (default: the best) of ``repeats`` timings of two functions, runs interleaved so that
    load changes on a shared machine hit both alike; on CUDA the device is synchronised before reading
    the clock."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = [[], []]
    for _ in range(repeats):
        for i, fn in enumerate((baseline, candidate)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[i].append(time.perf_counter() - start)
    return statistic(times[0]), statistic(times[1])


@dataclass(frozen=True)
class EpisodeNetwork:
    """A network of the single-episode comparison."""

    label: str
    setting: str       # a key of SETTINGS (image size and channels)
    pooling: str
    hidden: int
    head_input: str

    def build(self, device: torch.device) -> Conv4:
        setting = SETTINGS[self.setting]
        torch.manual_seed(0)
        return Conv4(in_channels=setting.channels, n_classes=WAYS, hidden=self.hidden, image_size=setting.size,
                     pooling=self.pooling, head_input=self.head_input).to(device)


EPISODE_NETWORKS = (
    EpisodeNetwork("Omniglot Conv4-64 stride, flatten", "omniglot", "stride", 64, "flatten"),  # the rest of this benchmark
    EpisodeNetwork("Omniglot Conv4-64 stride, mean", "omniglot", "stride", 64, "spatial_mean"),  # the Omniglot presets
    EpisodeNetwork("Omniglot Conv4-32 stride, mean", "omniglot", "stride", 32, "spatial_mean"),  # reproduce's quick preset
    EpisodeNetwork("Omniglot Conv4-64 max-pool", "omniglot", "max", 64, "flatten"),
    EpisodeNetwork("MiniImageNet Conv4-32 84x84", "miniimagenet", "max", 32, "flatten"),
)


def single_episode_ratios(device: torch.device, repeats: int,
                          networks=EPISODE_NETWORKS) -> dict[tuple[str, str], float]:
    """Seconds per call of one 10-step episode, ``predict()`` vs :func:`clone_and_adapt_episode` on the
    same network, interleaved (median of ``repeats``), for MAML (every parameter) and ANIL (the head) on
    each network of ``networks``; prints the rows and returns the speed-ups by (network label, algorithm)."""
    ratios = {}
    print(f"{'one episode, 10 steps':<42}{'loop s':>10}{'repana s':>10}{'speed-up':>10}"
          f"   (median of {repeats} interleaved calls: predict() vs deep-copy + autograd.grad clone-and-adapt)")
    for network in networks:
        model = network.build(device)
        one = make_batch(SETTINGS[network.setting], 1, 3, device)
        episode = (one.support_x[0], one.support_y[0], one.query_x[0])
        for name, trainable in (("maml", None), ("anil", "head")):
            head_only = trainable == "head"
            loop = lambda: clone_and_adapt_episode(model, *episode, 10, head_only)  # noqa: E731
            ours = lambda: predict(model, *episode, steps=10, lr=INNER_LR, trainable=trainable)  # noqa: E731
            seconds_pair(loop, ours, 2, device)  # warm-up: this network's kernels, outside the timed runs
            loop_s, ours_s = seconds_pair(loop, ours, repeats, device, statistic=statistics.median)
            ratios[network.label, name] = loop_s / ours_s
            print(f"{f'{network.label} {name}':<42}{loop_s:>10.4f}{ours_s:>10.4f}{loop_s / ours_s:>9.2f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="meta-batch 4, 4 evaluation episodes, 1 repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved timed runs per case; best kept")
    parser.add_argument("--eval-repeats", type=int, default=6,
                        help="the same for the evaluation cases (each run is ~20x shorter than a training case)")
    parser.add_argument("--pooling", choices=("stride", "max"), default=None,
                        help="Conv4 blocks: stride-2 convs (MAML's Omniglot network, the Omniglot default) "
                             "or 2x2 max-pooling (the MiniImageNet default)")
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="omniglot",
                        help="network and image sizes (default: omniglot)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--no-retain-freed-memory", action="store_true",
                        help="leave glibc's malloc as it is (repana commands call repana.runtime.retain_freed_memory; "
                             "it applies to the loop and to repana alike)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms (torch.backends.cudnn.benchmark)")
    parser.add_argument("--single-episode", action="store_true",
                        help="time only one-episode evaluation (predict vs clone-and-adapt), MAML and ANIL, on "
                             "every network of EPISODE_NETWORKS (Omniglot stride and max-pool, MiniImageNet)")
    parser.add_argument("--episode-repeats", type=int, default=40,
                        help="interleaved calls per single-episode case; the median is kept (default 40)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    retained = False if args.no_retain_freed_memory else retain_freed_memory()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    setting = SETTINGS[args.setting]
    pooling = args.pooling or setting.default_pooling
    tasks = 4 if args.quick else setting.tasks
    repeats = 1 if args.quick else args.repeats
    eval_repeats = 1 if args.quick else max(args.repeats, args.eval_repeats)
    eval_tasks = 4 if args.quick else 16
    single_repeats = 5 if args.quick else args.episode_repeats
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} torch threads, freed memory {'retained' if retained else 'returned'}")
    if args.single_episode:
        print(f"One episode: {WAYS}-way {SHOTS}-shot, {QUERIES} queries/class; {where}, torch {torch.__version__}")
        single_episode_ratios(device, single_repeats)
        return
    torch.manual_seed(0)
    model = Conv4(in_channels=setting.channels, n_classes=WAYS, hidden=setting.hidden, image_size=setting.size,
                  pooling=pooling).to(device)
    batch, eval_batch = make_batch(setting, tasks, 0, device), make_batch(setting, eval_tasks, 1, device)
    print(f"{setting.name}: Conv4-{setting.hidden} ({pooling}), {setting.channels}x{setting.size}x{setting.size}, "
          f"{WAYS}-way {SHOTS}-shot, {QUERIES} queries/class, meta-batch {tasks}; {where}, torch {torch.__version__}")
    print(f"{'case':<28}{'loop s':>10}{'repana s':>10}{'speed-up':>10}")
    warm = make_batch(setting, 1, 2, device)  # lazy initialisation (allocator, kernels) outside the timed runs
    for first_order in (False, True):
        (loop_first_order if first_order else loop_second_order)(model, warm, 1, False)
        get_algorithm("fomaml" if first_order else "maml", inner_steps=1).meta_gradients(model, warm)
    evaluate(model, warm, steps=1, show_progress=False)
    cases = [(name, steps) for steps in (1, 5) for name in ("maml", "fomaml", "anil")]
    for name, steps in cases:
        algo = get_algorithm(name, inner_steps=steps, inner_lr=INNER_LR)
        head_only = name == "anil"
        loop = loop_first_order if algo.first_order else loop_second_order
        loop_s, ours_s = seconds_pair(lambda: (model.zero_grad(), loop(model, batch, steps, head_only)),
                                      lambda: algo.meta_gradients(model, batch), repeats, device)
        print(f"{f'train {name}, {steps} step(s)':<28}{loop_s:>10.3f}{ours_s:>10.3f}{loop_s / ours_s:>9.2f}x")
    for steps in (1, 5):  # the whole meta-batch folded (the CUDA layout) vs the per-episode loop of repana
        folded = get_algorithm("maml", inner_steps=steps, inner_lr=INNER_LR, fold=True)
        looped = get_algorithm("maml", inner_steps=steps, inner_lr=INNER_LR, fold=False)
        loop_s, fold_s = seconds_pair(lambda: looped.meta_gradients(model, batch),
                                      lambda: folded.meta_gradients(model, batch), repeats, device)
        print(f"{f'maml {steps} step(s): folded':<28}{loop_s:>10.3f}{fold_s:>10.3f}{loop_s / fold_s:>9.2f}x"
              "   (repana fold=False vs the whole batch folded, CUDA's layout)")

    def evaluate_fn(trainable):
        return lambda: evaluate(model, eval_batch, steps=10, lr=INNER_LR, trainable=trainable, show_progress=False)

    for name, trainable in (("maml", None), ("anil", "head")):
        loop_s, ours_s = seconds_pair(lambda: loop_evaluate(model, eval_batch, 10, trainable == "head"),
                                      evaluate_fn(trainable), eval_repeats, device)
        loop_s, ours_s = loop_s / eval_tasks, ours_s / eval_tasks
        print(f"{f'eval/episode {name}, 10 steps':<28}{loop_s:>10.4f}{ours_s:>10.4f}{loop_s / ours_s:>9.2f}x")
    single_episode_ratios(device, single_repeats, [n for n in EPISODE_NETWORKS if n.setting == args.setting])
    # The ANIL/MAML ratios come from their own interleaved pairs (a load change on a shared machine
    # between two separately timed cases would otherwise move the ratio).
    maml5, anil5 = (get_algorithm(name, inner_steps=5, inner_lr=INNER_LR) for name in ("maml", "anil"))
    maml_s, anil_s = seconds_pair(lambda: maml5.meta_gradients(model, batch),
                                  lambda: anil5.meta_gradients(model, batch), repeats, device)
    train_ratio = maml_s / anil_s
    maml_s, anil_s = seconds_pair(evaluate_fn(None), evaluate_fn("head"), eval_repeats, device)
    eval_ratio = maml_s / anil_s
    print(f"ANIL vs MAML (repana, timed against each other): training, 5 steps {train_ratio:.2f}x faster "
          f"(paper: 1.7x); evaluation, 10 steps {eval_ratio:.2f}x faster (paper: 4.1x; ratio of the conv FLOPs "
          f"{evaluation_flop_ratio(model, 10):.2f}x)")


if __name__ == "__main__":
    main()
