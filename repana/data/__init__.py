"""Few-shot data: Omniglot, MiniImageNet, procedural glyphs, and fast seeded episodes.

```python
from repana.data import load_splits, EpisodeSampler, fixed_episodes
splits = load_splits("glyphs")                      # or "omniglot" / "miniimagenet", root=<data root>
batch = EpisodeSampler(splits["train"], ways=5, shots=1, queries=15, seed=0).sample(tasks=32)
evaluation = fixed_episodes(splits["test"], n_episodes=600, ways=5, shots=1, queries=15, seed=0)
support = read_image_folder("my/support", channels=1, size=28, labelled=True)  # your own image files
```
"""

from repana.data.dataset import ImageClassDataset
from repana.data.download import download_omniglot
from repana.data.episodes import Episode, EpisodeSampler, Episodes, FixedEpisodes, fixed_episodes
from repana.data.images import ImageFolder, load_image, read_image_folder
from repana.data.registry import DATASETS, list_datasets, load_splits

__all__ = ["ImageClassDataset", "load_splits", "list_datasets", "DATASETS", "EpisodeSampler", "Episodes",
           "Episode", "FixedEpisodes", "fixed_episodes", "download_omniglot",
           "ImageFolder", "load_image", "read_image_folder"]
