import numpy as np
import pytest
import torch

from tests.conftest import random_walks, write_corpus
from tsm.config import ModelArchConfig
from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.batches import TrainingBatches, batch_iterator
from tsm.model import build_model


def make_batches(paths, weights=None, **kw):
    corpora = [ArrowCorpus(p) for p in paths]
    args = dict(context_length=64, prediction_length=16, min_past=8, batch_size=8, output_patch_size=16, seed=1)
    args.update(kw)
    return TrainingBatches(corpora, weights or [1.0] * len(corpora), **args)


def find_segment(series: list[np.ndarray], segment: np.ndarray) -> bool:
    for s in series:
        for start in range(len(s) - len(segment) + 1):
            if np.array_equal(s[start : start + len(segment)], segment):
                return True
    return False


def test_batch_is_a_real_window_left_padded(tmp_path):
    rows = random_walks(20, 30, 200, seed=3)
    b = make_batches([write_corpus(tmp_path / "c", rows)]).batch(0)
    assert b["context"].shape[0] == 8 and b["context"].shape[1] <= 64
    assert b["future_target"].shape == (8, 16) and b["num_output_patches"] == 1
    assert torch.equal(b["group_ids"], torch.arange(8))
    assert "future_covariates" not in b  # univariate: nothing known in the future
    for ctx, fut in zip(b["context"].numpy(), b["future_target"].numpy(), strict=True):
        observed = ctx[~np.isnan(ctx)]
        # NaN only on the left (padding), at least min_past observed, context + future contiguous in a series
        assert not np.isnan(ctx[len(ctx) - len(observed) :]).any()
        assert 8 <= len(observed) <= 64
        assert find_segment(rows, np.concatenate([observed, fut]))


def test_counter_based_sampling(tmp_path):
    b = make_batches([write_corpus(tmp_path / "c", random_walks(50, 100, 200))])
    again = make_batches([tmp_path / "c"])
    other_rank = make_batches([tmp_path / "c"], rank=1)
    assert torch.equal(b.batch(7)["future_target"], again.batch(7)["future_target"])
    assert not torch.equal(b.batch(7)["future_target"], b.batch(8)["future_target"])
    assert not torch.equal(b.batch(7)["future_target"], other_rank.batch(7)["future_target"])


def test_workers_give_the_single_process_order(tmp_path):
    b = make_batches([write_corpus(tmp_path / "c", random_walks(50, 100, 200))])
    single = batch_iterator(b, num_workers=0, start_batch=5)
    expected = [next(single)["future_target"] for _ in range(6)]
    b2 = make_batches([tmp_path / "c"])
    multi = batch_iterator(b2, num_workers=2, start_batch=5)
    got = [next(multi)["future_target"] for _ in range(6)]
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


def test_short_series_are_skipped_and_counted(tmp_path):
    rows = random_walks(10, 100, 100) + random_walks(5, 10, 20, seed=1)
    b = make_batches([write_corpus(tmp_path / "c", rows)])
    assert (b.stats[0].total, b.stats[0].too_short, b.stats[0].used) == (15, 5, 10)
    assert "5 shorter than min_past+prediction_length (24) skipped" in b.describe()
    for i in range(20):
        assert b.batch(i)["context"].shape[1] + 16 >= 24


def test_all_too_short_is_an_error(tmp_path):
    with pytest.raises(DataError, match="all 3 series are shorter"):
        make_batches([write_corpus(tmp_path / "c", random_walks(3, 5, 10))])


def test_mixture_probabilities(tmp_path):
    high = write_corpus(tmp_path / "high", [np.full(100, 1000.0, dtype="float32")] * 5)
    low = write_corpus(tmp_path / "low", [np.full(100, -1000.0, dtype="float32")] * 5)
    b = make_batches([high, low], weights=[0.8, 0.2], batch_size=50)
    picks = torch.cat([b.batch(i)["future_target"][:, 0] for i in range(20)])
    share_high = (picks > 0).float().mean().item()
    assert 0.75 < share_high < 0.85


def test_max_series_is_a_deterministic_subset(tmp_path):
    rows = [np.full(50, float(i), dtype="float32") for i in range(100)]
    path = write_corpus(tmp_path / "c", rows)
    b = make_batches([path], max_series_per_corpus=7)
    assert len(b.usable[0]) == 7
    assert np.array_equal(b.usable[0], make_batches([path], max_series_per_corpus=7).usable[0])
    seen = {int(v) for i in range(30) for v in b.batch(i)["future_target"][:, 0]}
    assert seen <= set(b.usable[0].tolist()) and len(seen) > 3


def test_covariates_share_a_group_and_never_count_as_targets(tmp_path):
    n = 120
    target = [np.arange(n, dtype="float32")[None, :]] * 4
    past = [np.full((1, n), -1.0, dtype="float32")] * 4
    future = [np.full((2, n), 7.0, dtype="float32")] * 4
    path = write_corpus(tmp_path / "c", target, past_feat_dynamic_real=past, feat_dynamic_real=future)
    b = make_batches([path], batch_size=8).batch(0)
    # 4 rows per item (target, past covariate, 2 future covariates): 2 items fill a batch of 8 rows
    assert b["group_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    ft, fc = b["future_target"].view(2, 4, 16), b["future_covariates"].view(2, 4, 16)
    assert not torch.isnan(ft[:, 0]).any() and torch.isnan(ft[:, 1:]).all()
    assert torch.isnan(fc[:, :2]).all() and (fc[:, 2:] == 7.0).all()


def test_batch_feeds_chronos2_forward(tmp_path):
    b = make_batches([write_corpus(tmp_path / "c", random_walks(20, 100, 200))], prediction_length=40)
    model = build_model(ModelArchConfig(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4), 64)
    batch = b.batch(0)
    out = model(**batch)
    assert out.quantile_preds.shape == (8, 21, 48) and torch.isfinite(out.loss)
    # Left out, future covariates are what an all-NaN tensor means to the model, to the bit.
    nan_covariates = torch.full_like(batch["future_target"], float("nan"))
    model.eval()
    assert torch.equal(model(**batch).quantile_preds, model(**batch, future_covariates=nan_covariates).quantile_preds)


def test_hold_out_keeps_the_last_window_of_every_series_out_of_training(tmp_path):
    # Series i holds 1000 * i + its time index, so a batch row shows which series and steps it read.
    lengths = [60, 75, 90]
    path = write_corpus(tmp_path / "c", [1000 * i + np.arange(n, dtype=np.float32) for i, n in enumerate(lengths)])

    def last_step_read(hold_out: int) -> list[int]:
        batches = make_batches([path], prediction_length=8, min_past=8, batch_size=12, hold_out=hold_out)
        last = [-1] * len(lengths)
        for k in range(60):
            batch = batches.batch(k)
            for row in torch.cat([batch["context"], batch["future_target"]], dim=1):
                values = row[~row.isnan()]
                series = int(values.min()) // 1000
                last[series] = max(last[series], int(values.max()) - 1000 * series)
        return last

    assert last_step_read(hold_out=8) == [n - 8 - 1 for n in lengths]  # every step but the last 8, all series
    assert last_step_read(hold_out=0) == [n - 1 for n in lengths]  # without hold-out: to the end


def observed_lengths(batches: TrainingBatches, count: int) -> np.ndarray:
    contexts = [batches.batch(k)["context"].numpy() for k in range(count)]
    return np.concatenate([(~np.isnan(c)).sum(axis=1) for c in contexts])


def test_short_context_share_cuts_that_share_of_contexts_log_uniformly(tmp_path):
    # Series far longer than the context: without cuts every context would be full (min_past is tiny
    # against the series, so a window end before step 64 is rare).
    path = write_corpus(tmp_path / "c", random_walks(20, 50_000, 60_000, seed=4))
    full = observed_lengths(make_batches([path], context_length=512, min_past=16), 100)
    assert (full == 512).mean() > 0.98
    cut = observed_lengths(make_batches([path], context_length=512, min_past=16, short_context_share=0.5), 200)
    short = cut[cut < 512]
    assert 0.45 < len(short) / len(cut) < 0.55
    assert short.min() >= 16
    # log-uniform on [16, 512]: a quarter of the cut contexts below 16 * 32**0.25 = 38, half below 90.5
    assert 0.2 < (short < 38).mean() < 0.3 and 0.45 < (short < 90.5).mean() < 0.55
    with pytest.raises(ValueError, match=r"short_context_share must be in \[0, 1\], got 1.5"):
        make_batches([path], short_context_share=1.5)


# --- length grouping ---------------------------------------------------------------------------------------

def context_lengths(batch: dict) -> np.ndarray:
    context = batch["context"].numpy()
    return context.shape[1] - np.isnan(context).argmin(axis=1)  # left padding is leading NaN


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.union1d(a, b)
    return float(np.abs(np.searchsorted(np.sort(a), grid, side="right") / len(a)
                        - np.searchsorted(np.sort(b), grid, side="right") / len(b)).max())


def test_length_grouping_cuts_padding_and_keeps_the_windows_distribution(tmp_path):
    path = write_corpus(tmp_path / "c", random_walks(300, 40, 400, seed=5))
    settings = dict(context_length=256, prediction_length=16, min_past=8, batch_size=16, short_context_share=0.4)
    plain, grouped = make_batches([path], **settings), make_batches([path], length_group_batches=8, **settings)
    shares, lengths, picks = {}, {}, {}
    for name, source in (("plain", plain), ("grouped", grouped)):
        made = [source.batch_and_tokens(k) for k in range(256)]
        assert all(b["context"].shape[0] == 16 for b, _ in made)  # one row per series: exactly batch_size rows
        shares[name] = sum(t[0] for _, t in made) / sum(t[1] for _, t in made)
        lengths[name] = np.concatenate([context_lengths(b) for b, _ in made])
        picks[name] = np.concatenate([b["future_target"][:, 0].numpy() for b, _ in made])
    assert shares["grouped"] < shares["plain"] / 3
    # Two samples of 4,096 windows from one distribution: KS above 0.043 has a 0.1% chance (seen: 0.023, 0.017).
    # Dropping or doubling the longest batch of each group would give ~0.1.
    assert ks_statistic(lengths["plain"], lengths["grouped"]) < 0.043
    assert ks_statistic(picks["plain"], picks["grouped"]) < 0.043
    # Within a group the batches hold neighbouring lengths; they come in a random order.
    group = [context_lengths(grouped.batch(k)) for k in range(8)]
    spans = sorted((g.min(), g.max()) for g in group)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:], strict=False))
    assert [g.max() for g in group] != sorted(g.max() for g in group)


def test_a_grouped_batch_is_a_function_of_its_index_on_any_number_of_workers(tmp_path):
    b = make_batches([write_corpus(tmp_path / "c", random_walks(50, 30, 200))], length_group_batches=4)
    straight = [b.batch(k)["future_target"] for k in range(12)]
    for workers, start in ((0, 5), (2, 5), (3, 0)):
        again = make_batches([tmp_path / "c"], length_group_batches=4)
        stream = batch_iterator(again, num_workers=workers, start_batch=start)
        got = [next(stream) for _ in range(12 - start)]
        assert all(torch.equal(g["future_target"], e) for g, e in zip(got, straight[start:], strict=True))
        assert all(g["token_counts"][1] > 0 for g in got)


def test_grouped_multivariate_batches_share_the_rows(tmp_path):
    rng = np.random.default_rng(0)
    target = [rng.normal(size=(int(rng.integers(1, 4)), int(rng.integers(60, 200)))).astype("float32")
              for _ in range(40)]
    source = make_batches([write_corpus(tmp_path / "c", target)], batch_size=8, length_group_batches=4)
    group = [source.batch(k) for k in range(4)]
    rows = [b["context"].shape[0] for b in group]
    assert min(rows) >= 8 - 2 and sum(rows) >= 4 * 8  # about batch_size each: a series' variates stay together
    for b in group:  # each series' variates in one group of their own, as without grouping
        ids = b["group_ids"].numpy()
        assert np.array_equal(np.unique(ids), np.arange(ids.max() + 1))
