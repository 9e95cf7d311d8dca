"""lib.samplers: the sliding-window batch sampler's sizes, coverage, locality, determinism."""
from __future__ import annotations

import torch

from lib.samplers import SlidingWindowBatchSampler


def _epoch(sampler: SlidingWindowBatchSampler) -> list[list[int]]:
    return list(iter(sampler))


def test_sampler_sizes_and_coverage():
    sampler = SlidingWindowBatchSampler(1000, 64, window=300, seed=1)
    batches = _epoch(sampler)
    assert len(sampler) == len(batches) == 16
    assert [len(b) for b in batches] == [64] * 15 + [40]
    assert sorted(i for b in batches for i in b) == list(range(1000))
    dropped = SlidingWindowBatchSampler(1000, 64, window=300, seed=1, drop_last=True)
    assert len(dropped) == len(_epoch(dropped)) == 15
    small = SlidingWindowBatchSampler(10, 4, window=4000)
    assert sorted(i for b in _epoch(small) for i in b) == list(range(10))
    narrow = _epoch(SlidingWindowBatchSampler(100, 16, window=5))
    assert [len(b) for b in narrow] == [16] * 6 + [4]


def test_sampler_window_is_local_and_mixes():
    sampler = SlidingWindowBatchSampler(2000, 50, window=400, seed=2, shuffle=False)
    batches = _epoch(sampler)
    for k, b in enumerate(batches):
        assert max(b) < 400 + k * 50  # only items the window has reached
    assert batches[0] != list(range(50))  # a draw, not a slice
    waits = [k - i // 50 for k, b in enumerate(batches) for i in b]
    assert max(waits) < 40


def test_sampler_deterministic_per_seed_and_epoch():
    a = SlidingWindowBatchSampler(500, 32, window=100, seed=3)
    b = SlidingWindowBatchSampler(500, 32, window=100, seed=3)
    assert _epoch(a) == _epoch(b)
    first = _epoch(a)
    assert _epoch(a) == first  # every pass yields the whole epoch
    a.set_epoch(1)
    assert _epoch(a) != first
    assert _epoch(SlidingWindowBatchSampler(500, 32, window=100, seed=4)) != first


def test_sampler_in_a_dataloader():
    sampler = SlidingWindowBatchSampler(100, 8, window=40, seed=6)
    loader = torch.utils.data.DataLoader(torch.arange(100), batch_sampler=sampler)
    got = torch.cat(list(loader)).tolist()
    assert sorted(got) == list(range(100))
    assert got == [i for b in SlidingWindowBatchSampler(100, 8, window=40, seed=6) for i in b]


def test_augmentation_ramp_items():
    """With aug_share the items carry an augment flag: none at share 0, all at share 1, about the
    share in between, the same draw for the same (seed, epoch, step), and a resumed epoch (skip)
    sees the flags the straight one saw."""
    import numpy as np

    from lib.samplers import EpochBatches

    def flags(b):
        return [item[2] for batch in b for item in batch]

    b = EpochBatches(400, 40, "shuffle", seed=3)
    assert all(len(item) == 2 for item in next(iter(b)))  # no ramp: (index, seed) as before
    b.aug_share = lambda step: step / 10  # 0 at the epoch's first step, 0.9 at its last
    b.set_epoch(2, 0, first_step=0)
    straight = list(b)
    assert not any(item[2] for item in straight[0]) and np.mean([i[2] for i in straight[9]]) > 0.6
    assert all(isinstance(item[2], bool) for item in straight[5])
    b.set_epoch(2, 4, first_step=4)  # resumed after 4 steps of the same epoch
    assert list(b) == straight[4:]
    b.aug_share = lambda step: 1.0
    b.set_epoch(0)
    assert all(flags(b))


def test_exact_crop_when_the_flag_says_so(tiny_data):
    """HandDataset: (index, seed, False) is the competition crop itself; True goes through augmentation."""
    import numpy as np

    from lib import augment, data

    cache = data.build_cache(data.find_data(tiny_data).training)
    ds = data.HandDataset(cache, np.arange(4), augment.build("modern"), seed=0)
    plain, augmented = ds[(1, 7, False)], ds[(1, 7, True)]
    assert torch.equal(plain["image"], torch.from_numpy(np.array(cache.crop[1])).permute(2, 0, 1))
    assert torch.allclose(plain["kp"], torch.from_numpy(cache.kp[1]).float())
    assert torch.equal(augmented["image"], ds[(1, 7)]["image"])  # two-element items augment as before
