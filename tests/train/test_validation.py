from __future__ import annotations

import numpy as np

from tests.conftest import random_walks, tiny_config, write_corpus
from tsm.train.validation import ValidationSet


def test_validation_windows_are_the_held_out_ends_with_contexts_cut_as_training_cuts_them(tmp_path):
    series = random_walks(400, 600, 800, seed=5)
    data = write_corpus(tmp_path / "c", series)
    cfg = tiny_config(data, tmp_path / "out", context_length=256, prediction_length=32, min_past=16,
                      eval_steps=2, short_context_share=0.5, max_validation_series=300)
    full = ValidationSet(cfg, 16, rank=0, world_size=1, spread=False)
    assert len(full.windows) == 300
    ends = {s[-32:].tobytes() for s in series}
    lengths = np.array([w.context.shape[-1] for w in full.windows])
    for window in full.windows:  # the last prediction_length steps of a series, never shuffled elsewhere
        assert window.future_target[0].tobytes() in ends
    cut = lengths[lengths < 256]
    assert 0.4 < len(cut) / len(lengths) < 0.6 and cut.min() >= 16
    # The same windows on every rank and every evaluation; ranks score disjoint shares of them.
    again = ValidationSet(cfg, 16, rank=0, world_size=1, spread=False)
    assert [w.context.tobytes() for w in again.windows] == [w.context.tobytes() for w in full.windows]
    shares = [ValidationSet(cfg, 16, rank=r, world_size=2, spread=True).windows for r in (0, 1)]
    for rank, share in enumerate(shares):
        assert [w.context.tobytes() for w in share] == [w.context.tobytes() for w in full.windows[rank::2]]
    # Off: every context is as long as the series allows.
    plain = ValidationSet(tiny_config(data, tmp_path / "o", context_length=256, prediction_length=32, eval_steps=2,
                                      short_context_share=0.0, max_validation_series=300), 16, 0, 1, False)
    assert all(w.context.shape[-1] == 256 for w in plain.windows)
