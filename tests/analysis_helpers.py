"""Tiny networks and hand-made episodes for the analysis tests (no dataset needed)."""

from __future__ import annotations

import torch

from repana.data.episodes import Episodes
from repana.models import Conv4


def tiny_model(seed: int = 0, hidden: int = 8, ways: int = 3, pooling: str = "max") -> Conv4:
    """Conv4 on 1x16x16 images with ``hidden`` filters (conv4 output: hidden x 1 x 1 with max-pool)."""
    torch.manual_seed(seed)
    return Conv4(in_channels=1, n_classes=ways, hidden=hidden, image_size=16, pooling=pooling).eval()


def tiny_episodes(tasks: int = 6, ways: int = 3, shots: int = 1, queries: int = 5, seed: int = 0,
                  query_is_support: bool = False) -> Episodes:
    """Episodes of class-specific random prototypes plus noise, images ``(1, 16, 16)`` in [0, 1].

    With ``query_is_support`` (and queries == shots) the query images are the support images.
    """
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(tasks, ways, 1, 16, 16, generator=generator)

    def draw(count):
        noise = 0.15 * torch.randn(tasks, ways, count, 1, 16, 16, generator=generator)
        images = (prototypes[:, :, None] + noise).clamp(0, 1)
        labels = torch.arange(ways).repeat_interleave(count).expand(tasks, -1).clone()
        return images.reshape(tasks, ways * count, 1, 16, 16), labels

    support_x, support_y = draw(shots)
    query_x, query_y = (support_x.clone(), support_y.clone()) if query_is_support else draw(queries)
    class_ids = torch.arange(ways).expand(tasks, -1).clone()
    return Episodes(support_x, support_y, query_x, query_y, class_ids)
