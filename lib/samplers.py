"""Batch samplers of the training loop.

- EpochBatches: the batches of one epoch as (index, sample seed) pairs, deterministic from
  (seed, epoch), split across torchrun processes, resumable mid-epoch; the loop's batch_sampler.
- SlidingWindowBatchSampler: the 2018 report's Bernoulli draw over a sliding window (the paper
  recipe's sampler="window"); "shuffle" is a plain permutation per epoch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler


class SlidingWindowBatchSampler(Sampler[list[int]]):
    """Batches by a Bernoulli draw over a sliding window, after the 2018 report.

    Interpretation of "each batch is drawn with a Bernoulli draw over a sliding window of
    4,000 images": an epoch streams the items (a permutation from (seed, epoch), or with
    `shuffle=False` the dataset order, where the window only mixes locally, as for a file
    read sequentially); the window holds the next `window` not-yet-drawn items of that
    stream. Each step every item of the window is included independently with probability
    batch_size / len(window); a draw over the batch size is cut to a random subset of it, one
    under it is topped up with the window's oldest items (so no item waits long). The drawn
    items leave the window and
    the stream refills it: the window slides by one batch per step. Every item is drawn
    exactly once per epoch; every batch has `batch_size` items except the last (dropped with
    `drop_last`). A window narrower than a batch is widened to one batch. Deterministic from
    (seed, epoch); use `set_epoch` each epoch.
    """

    def __init__(self, n_items: int, batch_size: int, window: int = 4000, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        if n_items < 1 or batch_size < 1 or window < 1:
            raise ValueError(f"sampler: n_items, batch_size, window must be >= 1, found "
                             f"{n_items}, {batch_size}, {window}")
        self.n_items, self.batch_size, self.window = n_items, batch_size, window
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self._cache: tuple[tuple[int, int], list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's draw."""
        self.epoch = epoch

    def __len__(self) -> int:
        n, b = self.n_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batches(self) -> list[np.ndarray]:
        """All batches of the current epoch, in order."""
        if self._cache is not None and self._cache[0] == (self.seed, self.epoch):
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        n, b = self.n_items, self.batch_size
        stream = rng.permutation(n) if self.shuffle else np.arange(n)
        w = max(self.window, b)  # a window narrower than a batch could not fill one
        pool, nxt, out = stream[:w], min(w, n), []
        while len(pool):
            pick = rng.random(len(pool)) < min(1.0, b / len(pool))
            sel = np.flatnonzero(pick)
            if len(sel) > b:
                sel = np.sort(rng.choice(sel, b, replace=False))
            elif len(sel) < b:
                sel = np.sort(np.concatenate([sel, np.flatnonzero(~pick)[:b - len(sel)]]))
            out.append(pool[sel])
            keep = np.ones(len(pool), bool)
            keep[sel] = False
            take = min(len(sel), n - nxt)
            pool = np.concatenate([pool[keep], stream[nxt:nxt + take]])
            nxt += take
        if self.drop_last and len(out[-1]) < b:
            out.pop()
        self._cache = ((self.seed, self.epoch), out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield batch.tolist()


class EpochBatches:
    """Batches of (index, sample seed) for one epoch, deterministic from (seed, epoch).

    Runs in the main process, so a persistent DataLoader sees `set_epoch` between epochs.
    Each torchrun process takes its share of every global batch; `skip` resumes mid-epoch.
    With `aug_share` (global step -> share of samples to augment, 0..1) the items are
    (index, seed, augment?) instead, each sample's draw deterministic from (seed, epoch, step).
    """

    aug_share: Callable[[int], float] | None = None

    def __init__(self, n: int, batch_size: int, kind: str, seed: int, rank: int = 0, world: int = 1):
        if batch_size > n:
            raise ValueError(f"batch_size: expected at most the {n} training samples, found {batch_size}")
        self.n, self.batch_size, self.kind, self.seed, self.rank, self.world = n, batch_size, kind, seed, rank, world
        self.window = SlidingWindowBatchSampler(n, batch_size, seed=seed) if kind == "window" else None
        if kind not in ("shuffle", "window"):
            raise ValueError(f"sampler: expected 'shuffle' or 'window', found {kind!r}")
        self.set_epoch(0)

    def set_epoch(self, epoch: int, skip: int = 0, first_step: int = 0) -> None:
        """Select the epoch's batches; `skip` of them are done already, the next is global step `first_step`."""
        self.epoch, self.skip, self.first_step = epoch, skip, first_step
        if self.window is not None:
            self.window.set_epoch(epoch)
            batches = [b.tolist() for b in self.window.batches()]
        else:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            nb = self.n // self.batch_size
            batches = [perm[i * self.batch_size : (i + 1) * self.batch_size].tolist() for i in range(nb)]
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self):
        for step in range(self.skip, len(self.batches)):
            batch = self.batches[step]
            seeds = np.random.default_rng([self.seed, self.epoch, step]).integers(0, 2**31, len(batch))
            if self.aug_share is None:
                yield [(int(i), int(s)) for i, s in zip(batch, seeds)][self.rank :: self.world]
                continue
            share = self.aug_share(self.first_step + step - self.skip)
            draw = np.random.default_rng([self.seed, self.epoch, step, 1]).random(len(batch))
            yield [(int(i), int(s), bool(u < share)) for i, s, u in zip(batch, seeds, draw)][self.rank :: self.world]
