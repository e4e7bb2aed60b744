"""GIFT-Eval (Salesforce/GiftEval) as a tsm benchmark: the protocol (horizons, windows), the eleven metrics as
gluonts' `evaluate_model` computes them, the leaderboard's submission folder and its ranking.

- `protocol`: which configurations, their horizon, windows and test windows, read from a local copy of the hub's
  `Salesforce/GiftEval` (one `save_to_disk` folder per name).
- `metrics`: the eleven metrics with the benchmark's column names.
- `runner`: forecast every configuration with Chronos-2 checkpoints or the seasonal naive baseline.
- `submission`: `all_results.csv` and `config.json` as the leaderboard takes them.
- `ranking`: normalised CRPS and MASE against seasonal naive, geometric means and average ranks beside published
  results, and the seasonal naive check.
- `command`: `tsm evaluate --benchmark <gift-eval file>` (called from tsm/eval/cli.py).
- `synthetic`: small sets in the hub's layout, for tests and offline workflow runs.
"""
