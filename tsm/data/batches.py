"""Training batches in the exact format `Chronos2Model.forward` takes.

Sampling is counter-based: batch k of rank r is a pure function of (seed, r, k). So every rank and
dataloader worker samples independently with no broadcast, and resuming at step s only needs
k = s * gradient_accumulation_steps: the data-sampling state is a single integer.

Length grouping (`length_group_batches` N > 1, as Hugging Face's `group_by_length`): the windows of N
batches are drawn together, sorted by context length and cut into N batches of similar lengths, taken in a
random order. The windows are the same independent draws as without grouping (only which batch holds which
changes), so the model learns from the same distribution, with far fewer padding tokens. Group g of rank r is
still a pure function of (seed, r, g), and drawing it reads no values (lengths and row counts are metadata).
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tsm.data.arrow import ArrowCorpus, DataError, SeriesItem

logger = logging.getLogger(__name__)

TOKEN_COUNTS = "token_counts"  # the key of a training batch's (padding tokens, all tokens)


@dataclass
class Window:
    """One forecasting window of one series: its target rows first, then its covariate rows."""

    context: np.ndarray  # (rows, <= context_length)
    future_target: np.ndarray  # (rows, prediction_length): covariate rows are NaN, so they never count in the loss
    # (rows, prediction_length): known-future covariate values, NaN elsewhere; None: the series has none
    future_covariates: np.ndarray | None


def window_at(item: SeriesItem, cut: int, context_length: int, prediction_length: int) -> Window:
    """The window whose context ends at step `cut` and whose prediction starts there."""
    n_targets = item.target.shape[0]
    parts = [item.target]
    if item.past_covariates is not None:
        parts.append(item.past_covariates)
    n_future = 0
    if item.future_covariates is not None:
        parts.append(item.future_covariates)
        n_future = item.future_covariates.shape[0]
    series = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    context = series[:, max(0, cut - context_length) : cut]
    future = series[:, cut : cut + prediction_length]
    future_target = np.full_like(future, np.nan)
    future_target[:n_targets] = future[:n_targets]
    future_covariates = None
    if n_future:
        future_covariates = np.full_like(future, np.nan)
        future_covariates[-n_future:] = future[-n_future:]  # known-future values are model inputs
    return Window(context, future_target, future_covariates)


def draw_context_length(rng: np.random.Generator, min_past: int, context_length: int, short_share: float) -> int:
    """A window's context length: with probability `short_share`, log-uniform in [min_past, context_length]
    (the short histories of yearly series are rare among uniform window ends); else `context_length`.
    Nothing is drawn when `short_share` is 0, so that runs without it keep their exact random stream."""
    if short_share and rng.random() < short_share:
        return int(math.exp(rng.uniform(math.log(min_past), math.log(context_length))))
    return context_length


@dataclass(frozen=True)
class WindowDraw:
    """Where a window lies, drawn before any value is read."""

    corpus: int
    index: int
    cut: int  # the context ends and the prediction starts here
    context_length: int  # at most this many past steps
    rows: int  # the series' targets and covariates

    @property
    def length(self) -> int:
        """The context points the window has (a series' start may come first)."""
        return min(self.cut, self.context_length)


def split_by_rows(rows: np.ndarray, parts: int) -> list[slice]:
    """`parts` consecutive, non-empty slices of about equal rows (needs len(rows) >= parts); with one row per
    window, exactly equal."""
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    total = int(rows.sum())
    bounds = [0]
    for part in range(1, parts):
        bound = int(np.searchsorted(starts, part * total / parts, side="left"))
        bounds.append(min(max(bound, bounds[-1] + 1), len(rows) - (parts - part)))
    bounds.append(len(rows))
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def token_counts(context_lengths: list[int], rows: list[int], patch_size: int,
                 num_output_patches: int) -> tuple[int, int]:
    """(padding tokens, all tokens) of a batch whose contexts are left-padded to the longest: each row is
    ceil(longest / patch) context patches plus the output patches; padding is the context patches a row
    only has because another row is longer."""
    longest = math.ceil(max(context_lengths) / patch_size)
    total = sum(rows) * (longest + num_output_patches)
    padding = sum(n * (longest - math.ceil(length / patch_size)) for length, n in zip(context_lengths, rows,
                                                                                       strict=True))
    return padding, total


def collate(windows: list[Window], prediction_length: int, num_output_patches: int) -> dict[str, torch.Tensor | int]:
    """One batch in the format `Chronos2Model.forward` takes: contexts left-padded with NaN to the longest,
    each window's rows in a group of their own (a series' variates and covariates attend to each other).
    A batch without known-future covariates leaves `future_covariates` out: the model then reads zeros with
    a zero mask, what an all-NaN tensor becomes, without its NaN check (a host-device sync every step)."""
    rows = sum(w.context.shape[0] for w in windows)
    max_context = max(w.context.shape[-1] for w in windows)
    context = np.full((rows, max_context), np.nan, dtype=np.float32)
    future_target = np.empty((rows, prediction_length), dtype=np.float32)
    has_future = any(w.future_covariates is not None for w in windows)
    future_covariates = np.full((rows, prediction_length), np.nan, dtype=np.float32) if has_future else None
    group_ids = np.empty(rows, dtype=np.int64)
    row = 0
    for group, w in enumerate(windows):
        n = w.context.shape[0]
        context[row : row + n, max_context - w.context.shape[-1] :] = w.context
        future_target[row : row + n] = w.future_target
        if w.future_covariates is not None:
            future_covariates[row : row + n] = w.future_covariates
        group_ids[row : row + n] = group
        row += n
    batch = {
        "context": torch.from_numpy(context),
        "future_target": torch.from_numpy(future_target),
        "group_ids": torch.from_numpy(group_ids),
        "num_output_patches": num_output_patches,
    }
    if has_future:
        batch["future_covariates"] = torch.from_numpy(future_covariates)
    return batch


@dataclass
class CorpusStats:
    source: str
    total: int
    too_short: int
    used: int
    weight: float


class TrainingBatches(IterableDataset):
    """An endless stream of training batches drawn from a weighted mixture of corpora."""

    def __init__(
        self,
        corpora: list[ArrowCorpus],
        weights: list[float],
        *,
        context_length: int,
        prediction_length: int,
        min_past: int,
        batch_size: int,
        output_patch_size: int,
        seed: int,
        rank: int = 0,
        max_series_per_corpus: int | None = None,
        hold_out: int = 0,
        short_context_share: float = 0.0,
        length_group_batches: int = 0,
    ):
        super().__init__()
        if len(corpora) != len(weights) or not corpora:
            raise DataError(f"need one weight per corpus, got {len(corpora)} corpora and {len(weights)} weights")
        self.corpora = corpora
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.min_past = min_past
        if not 0.0 <= short_context_share <= 1.0:
            raise ValueError(f"short_context_share must be in [0, 1], got {short_context_share}")
        self.short_context_share = short_context_share
        self.batch_size = batch_size
        self.num_output_patches = math.ceil(prediction_length / output_patch_size)
        self.patch_size = output_patch_size  # Chronos-2's input patches are as long (ModelArchConfig checks)
        if length_group_batches < 0:
            raise ValueError(f"length_group_batches must be >= 0 (0 or 1: off), got {length_group_batches}")
        self.length_group_batches = length_group_batches
        self._group: tuple[int, list[list[WindowDraw]]] | None = None  # the last group drawn, for its batches
        self.seed = seed
        self.rank = rank
        self.start_batch = 0
        self.hold_out = hold_out  # the last steps of every series, kept for validation
        min_length = min_past + prediction_length + hold_out
        self.usable: list[np.ndarray] = []
        self.stats: list[CorpusStats] = []
        for i, (corpus, weight) in enumerate(zip(corpora, weights, strict=True)):
            usable = np.flatnonzero(corpus.lengths >= min_length)
            if len(usable) == 0:
                held = f" + {hold_out} held out for validation" if hold_out else ""
                raise DataError(
                    f"{corpus.source}: all {len(corpus)} series are shorter than min_past + prediction_length{held} "
                    f"= {min_length} (longest: "
                    f"{int(corpus.lengths.max()) if len(corpus) else 0}). Lower min_past or prediction_length, "
                    "or use longer series."
                )
            if max_series_per_corpus is not None and len(usable) > max_series_per_corpus:
                # Deterministic subset: the same seed picks the same series on every rank and run.
                pick = np.random.default_rng((seed, i)).choice(len(usable), max_series_per_corpus, replace=False)
                usable = usable[np.sort(pick)]
            self.usable.append(usable)
            self.stats.append(CorpusStats(corpus.source, len(corpus), int(len(corpus) - np.count_nonzero(
                corpus.lengths >= min_length)), len(usable), weight))
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()

    def describe(self) -> str:
        needed = "min_past+prediction_length" + ("+held-out validation window" if self.hold_out else "")
        return "\n".join(
            f"  {s.source}: {s.total:,} series, {s.too_short:,} shorter than {needed} "
            f"({self.min_past + self.prediction_length + self.hold_out}) skipped, {s.used:,} used, "
            f"probability {s.weight:.3g}"
            for s in self.stats
        )

    def _draw(self, rng: np.random.Generator) -> WindowDraw:
        c = int(rng.choice(len(self.corpora), p=self.weights)) if len(self.corpora) > 1 else 0
        index = int(self.usable[c][rng.integers(len(self.usable[c]))])
        length = int(self.corpora[c].lengths[index]) - self.hold_out  # held-out steps are for validation only
        # Cut at `cut`: the context ends there, the prediction window starts there.
        cut = int(rng.integers(self.min_past, length - self.prediction_length + 1))
        context_length = draw_context_length(rng, self.min_past, self.context_length, self.short_context_share)
        return WindowDraw(c, index, cut, context_length, int(self.corpora[c].rows[index]))

    def _read(self, draw: WindowDraw) -> Window:
        item = self.corpora[draw.corpus].item(draw.index)
        return window_at(item, draw.cut, draw.context_length, self.prediction_length)

    def _draw_group(self, group: int) -> list[list[WindowDraw]]:
        """The windows of `length_group_batches` batches, as batches of similar context lengths in random order."""
        if self._group is not None and self._group[0] == group:
            return self._group[1]
        parts = self.length_group_batches
        rng = np.random.default_rng((self.seed, self.rank, group, parts))  # not any ungrouped batch's stream
        draws = self._draw_rows(rng, parts * self.batch_size, at_least=parts)
        draws.sort(key=lambda d: d.length)
        batches = [draws[part] for part in split_by_rows(np.array([d.rows for d in draws]), parts)]
        batches = [batches[i] for i in rng.permutation(parts)]  # short and long batches alternate at random
        self._group = (group, batches)
        return batches

    def _draws(self, batch_index: int) -> list[WindowDraw]:
        if self.length_group_batches > 1:
            group, position = divmod(batch_index, self.length_group_batches)
            return self._draw_group(group)[position]
        return self._draw_rows(np.random.default_rng((self.seed, self.rank, batch_index)), self.batch_size)

    def _draw_rows(self, rng: np.random.Generator, rows: int, at_least: int = 1) -> list[WindowDraw]:
        """Windows drawn until they bring `rows` rows and number `at_least`."""
        draws: list[WindowDraw] = []
        drawn = 0
        while drawn < rows or len(draws) < at_least:
            draws.append(self._draw(rng))
            drawn += draws[-1].rows
        return draws

    def batch(self, batch_index: int) -> dict[str, torch.Tensor | int]:
        """Batch `batch_index`, as the model takes it."""
        return self.batch_and_tokens(batch_index)[0]

    def batch_and_tokens(self, batch_index: int) -> tuple[dict[str, torch.Tensor | int], tuple[int, int]]:
        """Batch `batch_index` and its (padding tokens, all tokens)."""
        windows = [self._read(d) for d in self._draws(batch_index)]
        tokens = token_counts([w.context.shape[-1] for w in windows], [w.context.shape[0] for w in windows],
                              self.patch_size, self.num_output_patches)
        return collate(windows, self.prediction_length, self.num_output_patches), tokens

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | int]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes batches from its workers round-robin, so worker w producing batches
        # start + w, start + w + n, ... keeps the global order identical to a single process.
        index = self.start_batch + worker
        while True:
            batch, tokens = self.batch_and_tokens(index)
            yield batch | {TOKEN_COUNTS: tokens}  # the training loop takes it off before the model sees the batch
            index += num_workers


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM may signal every process of a job step (SignalChildrenProcesses=yes): a worker that died of
    SIGTERM would crash its rank mid-step, before the checkpoint the signal asks for. The rank decides."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def batch_iterator(batches: TrainingBatches, num_workers: int, start_batch: int) -> Iterator[dict]:
    """Iterate batches from `start_batch` on, in worker processes when num_workers > 0."""
    batches.start_batch = start_batch
    if num_workers == 0:
        return iter(batches)
    # A generator of its own: otherwise the DataLoader draws its worker seed from the global torch RNG,
    # and a resumed run's dropout masks would drift from the straight run's.
    loader = DataLoader(batches, batch_size=None, num_workers=num_workers, prefetch_factor=4,
                        worker_init_fn=_ignore_stop_signals,
                        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(batches.seed))
    return iter(loader)
