"""Sample reading: tsm's memory-mapped reader vs. `datasets`' ds[i]["target"] on one 200k-series corpus.

Prints samples/s for each, and the ratio, as medians over repeats measured in the same run.
Usage: python bench/bench_reader.py [--series 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from tsm.data.arrow import ArrowCorpus


def build_corpus(path: Path, n: int) -> None:
    if (path / "state.json").exists():
        return
    rng = np.random.default_rng(0)
    lengths = rng.integers(100, 1000, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array(rng.normal(size=int(offsets[-1])).astype(np.float32))
    table = pa.table({"target": pa.ListArray.from_arrays(pa.array(offsets), values)})
    datasets.Dataset(table).save_to_disk(str(path))


def rate(read, indices: np.ndarray) -> float:
    start = time.perf_counter()
    total = 0.0
    for i in indices:
        total += float(read(int(i))[-1])  # touch the data, as a consumer would
    return len(indices) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "tsm-bench-reader"))
    args = parser.parse_args()
    datasets.disable_progress_bars()
    path = Path(args.dir) / f"corpus-{args.series}"
    build_corpus(path, args.series)

    t0 = time.perf_counter()
    corpus = ArrowCorpus(path)
    open_s = time.perf_counter() - t0
    ds = datasets.load_from_disk(str(path))
    ds_numpy = ds.with_format("numpy")
    rng = np.random.default_rng(1)
    tsm_rates, ds_rates, ds_np_rates = [], [], []
    for _ in range(args.repeats):
        tsm_rates.append(rate(lambda i: corpus.item(i).target[0], rng.integers(0, args.series, 50_000)))
        ds_rates.append(rate(lambda i: ds[i]["target"], rng.integers(0, args.series, 3_000)))
        ds_np_rates.append(rate(lambda i: ds_numpy[i]["target"], rng.integers(0, args.series, 3_000)))
    tsm_med, ds_med, ds_np_med = map(statistics.median, (tsm_rates, ds_rates, ds_np_rates))
    print(f"corpus: {args.series:,} series, opened by tsm in {open_s:.2f}s")
    print(f"tsm ArrowCorpus.item(i)           : {tsm_med:12,.0f} samples/s (median of {args.repeats})")
    print(f"datasets ds[i]['target']          : {ds_med:12,.0f} samples/s")
    print(f"datasets numpy-format ds[i]['target']: {ds_np_med:9,.0f} samples/s")
    print(f"ratio tsm / ds[i]['target'] = {tsm_med / ds_med:.1f}x ; tsm / numpy-format = {tsm_med / ds_np_med:.1f}x")


if __name__ == "__main__":
    main()
