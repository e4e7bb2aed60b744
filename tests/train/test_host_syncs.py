"""A training step between two log steps makes no host-device sync (issue 13). On CPU nothing syncs, so the
calls that would sync on a GPU are counted as the Python code makes them: reading a tensor's value on the
host (`item`, `bool`, `float`, `tolist`, `numpy`, `cpu`) and the ops whose output size depends on values
(`nonzero`, boolean-mask indexing). On a GPU, bench/gpu_check.py runs the loop under
`torch.cuda.set_sync_debug_mode`."""

from __future__ import annotations

import collections
import traceback

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.conftest import tiny_config, write_corpus
from tsm.train.loop import train
from tsm.train.monitor import TrainingMonitor

HOST_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu,
              torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.masked_select, torch.Tensor.masked_select,
              torch.unique, torch.Tensor.unique}


class HostSyncs(TorchFunctionMode):
    """Records each call that would wait for the device, with where it came from."""

    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = None
        if func in HOST_READS:
            name = func.__name__
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(torch.is_tensor(i) and i.dtype == torch.bool for i in index):
                name = f"{func.__name__} with a boolean mask"
        if name is not None:
            self.events.append(("sync", f"{name}\n{''.join(traceback.format_stack()[-6:-1])}"))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def steps_and_syncs(monkeypatch):
    """Marks each step where the loop hands it to the monitor, in the same list as the syncs."""
    events: list = []
    on_step = TrainingMonitor.on_step

    def marked(self, step, *args, **kwargs):
        events.append(("step", step))
        return on_step(self, step, *args, **kwargs)

    monkeypatch.setattr(TrainingMonitor, "on_step", marked)
    return events


def syncs_per_step(events: list) -> dict[int, list[str]]:
    """The syncs from one step's hand-over to the next one's: the step's own log (if any), the loop's checks
    after it, and the next train_step."""
    per_step: dict[int, list[str]] = collections.defaultdict(list)
    step = 0
    for kind, value in events:
        if kind == "step":
            step = value
        else:
            per_step[step].append(value)
    return per_step


def test_steps_between_log_steps_make_no_host_sync(tmp_path, steps_and_syncs):
    rng = np.random.default_rng(0)
    corpus = write_corpus(tmp_path / "corpus", [rng.normal(size=300).cumsum().astype("float32") for _ in range(32)])
    with HostSyncs(steps_and_syncs):
        train(tiny_config(corpus, tmp_path / "run", max_steps=8, log_steps=4, save_steps=1000))
    per_step = syncs_per_step(steps_and_syncs)
    # from the hand-over of step s to that of s + 1, neither a log step
    quiet = [s for s in range(1, 8) if s % 4 and (s + 1) % 4]
    assert quiet == [1, 2, 5, 6]
    found = {s: per_step[s] for s in quiet if per_step[s]}
    assert not found, "\n".join(f"after step {s}: {calls[0]}" for s, calls in found.items())
    # The log steps do read the device: the counter sees what it counts.
    assert per_step[4]


def test_a_skipped_step_is_counted_at_the_next_log_step(tmp_path, steps_and_syncs):
    """A non-finite step costs no sync of its own either: it is read and logged with its log step."""
    rows = [np.full(300, np.inf, dtype="float32")] + [np.arange(300, dtype="float32")] * 3
    corpus = write_corpus(tmp_path / "corpus", rows)
    with HostSyncs(steps_and_syncs):
        train(tiny_config(corpus, tmp_path / "run", max_steps=12, log_steps=6, save_steps=1000,
                          per_device_train_batch_size=1, max_consecutive_bad_steps=100))
    log = (tmp_path / "run" / "training.log").read_text()
    assert 0 < log.count("optimizer step skipped") < 12
    per_step = syncs_per_step(steps_and_syncs)
    assert not any(per_step[s] for s in (1, 2, 3, 4, 7, 8, 9, 10))
