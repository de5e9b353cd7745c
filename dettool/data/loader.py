"""Batching: a seeded, rank-aware epoch sampler and the padding collate function."""
from __future__ import annotations

from typing import Iterator

import torch

from dettool.data.transforms import pad_batch


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, seed)`` pairs: a permutation fixed by (seed, epoch), sliced per rank.

    The per-sample seed makes augmentation depend only on (seed, epoch, index), so a resumed run
    or a different worker count sees exactly the same data. With ``world_size`` > 1 the
    permutation is padded to a multiple of the world size and rank ``r`` takes every
    ``world_size``-th item starting at ``r`` (as ``DistributedSampler`` does).
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Draw epoch ``epoch``'s order; this rank's first ``skip`` samples of it are left out
        (a mid-epoch resume). ``len`` stays the epoch's full length (schedules count on it)."""
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.world_size
        order += order[: total - len(order)]
        sample_seed = self.seed * 100003 + self.epoch
        return iter([(i, sample_seed) for i in order[self.rank:total:self.world_size][self.skip:]])


class Collate:
    """Stack ``(image, target, meta)`` samples into ``(Tensor[B, 3, H, W], targets, metas)``.

    This is the pipeline's ``Pad`` step: images are zero-padded (after normalization) bottom-right
    to a common size that is a multiple of ``size_divisor``; each meta gains ``pad_shape``.
    """

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, samples: list) -> tuple[torch.Tensor, list[dict], list[dict]]:
        images = pad_batch([s[0] for s in samples], self.size_divisor)
        metas = [dict(s[2], pad_shape=(images.shape[2], images.shape[3])) for s in samples]
        return images, [s[1] for s in samples], metas
