"""Episode sampling speed: repana's in-memory uint8 gather vs decoding PNGs per episode.

Prints episodes/s for 5-way and 20-way 1-shot 15-query meta-batches (32 tasks) from
(a) EpisodeSampler over uint8 tensors held in memory, and (b) the naive loader that opens, decodes,
resizes and inverts each PNG of each episode with Pillow (what a torchvision-style Dataset does);
the ratio (b)/(a) is the speed-up. It also times one CPU meta-training step of the Conv4 network
(forward + backward over the same meta-batch, first-order) and prints sampling as a share of it:
the target is under 5%.

    python benchmarks/episodes.py [--data-root DIR] [--tasks 32] [--repeats 20]

Uses the real Omniglot archives when found (--data-root / REPANA_DATA_ROOT / ../shared/data),
else glyphs for both paths (PNG-encoded in memory for the naive loader).
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repana.data import EpisodeSampler, load_splits


def timed(function, repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


class PngPerEpisode:
    """The naive baseline: PNG bytes per image, decoded (and resized to 28x28, inverted) per episode."""

    def __init__(self, png_bytes: list[bytes], labels: np.ndarray, ways: int, shots: int, queries: int, seed: int):
        self.png, self.labels = png_bytes, labels
        self.by_class = [np.flatnonzero(labels == c) for c in range(labels.max() + 1)]
        self.ways, self.per_class, self.rng = ways, shots + queries, np.random.default_rng(seed)

    def decode(self, index: int) -> np.ndarray:
        with Image.open(io.BytesIO(self.png[index])) as image:
            grey = image.convert("L").resize((28, 28), resample=Image.Resampling.LANCZOS)
        return 1.0 - np.asarray(grey, dtype=np.float32) / 255.0

    def sample(self, tasks: int) -> torch.Tensor:
        batch = []
        for _ in range(tasks):
            classes = self.rng.choice(len(self.by_class), self.ways, replace=False)
            for c in classes:
                for i in self.rng.choice(self.by_class[c], self.per_class, replace=False):
                    batch.append(self.decode(i))
        return torch.from_numpy(np.stack(batch))


def omniglot_pngs(root: Path) -> tuple[list[bytes], np.ndarray] | None:
    folder = root / "omniglot"
    zips = sorted(folder.glob("images_background*.zip")) if folder.is_dir() else []
    if not zips:
        return None
    png, labels, classes = [], [], {}
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(n for n in archive.namelist() if n.endswith(".png")):
                key = "/".join(name.split("/")[1:3])
                png.append(archive.read(name))
                labels.append(classes.setdefault(key, len(classes)))
    return png, np.asarray(labels)


def glyph_pngs(ds) -> tuple[list[bytes], np.ndarray]:
    png = []
    for image in ds.images[:, 0].numpy():
        buffer = io.BytesIO()
        Image.fromarray(255 - image).resize((105, 105)).convert("1").save(buffer, format="PNG")
        png.append(buffer.getvalue())
    return png, ds.labels.numpy()


def meta_step_seconds(batch, ways: int, repeats: int) -> float:
    """One first-order meta-training step (forward + backward on support and query, one Adam update)
    of a Conv4 (64 channels) on ``batch``, CPU: a lower bound on any algorithm's step."""
    try:
        from repana.models import Conv4

        model = Conv4(in_channels=1, n_classes=ways, hidden=64, image_size=28)
    except Exception:  # models not available: the same architecture inline
        def block(cin):
            return [torch.nn.Conv2d(cin, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                    torch.nn.MaxPool2d(2)]
        model = torch.nn.Sequential(*block(1), *block(64), *block(64), *block(64), torch.nn.Flatten(),
                                    torch.nn.Linear(64, ways))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def step():
        optimizer.zero_grad()
        loss = 0.0
        for t in range(len(batch)):
            logits = model(torch.cat([batch.support_x[t], batch.query_x[t]]))
            loss = loss + torch.nn.functional.cross_entropy(logits, torch.cat([batch.support_y[t], batch.query_y[t]]))
        loss.backward()
        optimizer.step()

    return timed(step, max(1, repeats // 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from repana.paths import resolve_data_root

    candidates = [resolve_data_root(args.data_root), Path(__file__).resolve().parents[2] / "shared" / "data"]
    root = next((c for c in candidates if (c / "omniglot").is_dir()), None)
    if root is not None:
        ds = load_splits("omniglot", root=root, split="subset", rotations="none")["train"]
        png, labels = omniglot_pngs(root)
        source = f"Omniglot subset ({root})"
    else:
        ds = load_splits("glyphs")["train"]
        png, labels = glyph_pngs(ds)
        source = "glyphs (PNG-encoded for the baseline)"
    print(f"data: {source}; {ds.n_classes} classes; torch threads {torch.get_num_threads()}; "
          f"meta-batch {args.tasks} tasks")
    for ways in (5, 20):
        sampler = EpisodeSampler(ds, ways=ways, shots=1, queries=15, seed=0)
        fast = timed(lambda: sampler.sample(args.tasks), args.repeats)
        naive_loader = PngPerEpisode(png, labels, ways, 1, 15, seed=0)
        slow = timed(lambda: naive_loader.sample(args.tasks), max(1, args.repeats // 10))
        # the step is linear in tasks: time it on 4 tasks and scale, to keep the benchmark short
        step = meta_step_seconds(sampler.sample(4), ways, args.repeats) * args.tasks / 4
        print(f"{ways:>2}-way 1-shot 15-query: in-memory {args.tasks / fast:9.0f} episodes/s "
              f"({1e3 * fast:6.1f} ms/meta-batch) | PNG per episode {args.tasks / slow:7.0f} episodes/s "
              f"({1e3 * slow:7.1f} ms) | speed-up x{slow / fast:5.0f} | CPU meta-step {1e3 * step:7.0f} ms, "
              f"sampling = {100 * fast / step:4.2f}% of it, {100 * fast:4.1f}% of 1 s (target < 5%)")


if __name__ == "__main__":
    main()
