"""User errors through the `tsm` command: a one-paragraph message, exit 2, never a traceback. The command's own
entry point runs as a real process; the other errors run its main() in this process (same parser, same handling,
without an interpreter start per case)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import TEST_CONFIG, random_walks, write_corpus
from tsm.cli import main as tsm_main


def run_tsm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsm.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def assert_clear_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def tsm_here(capsys):
    """`tsm ARGS` in this process: (exit status, stdout, stderr). An exception escaping main() fails the test, as
    a traceback would."""

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = tsm_main(list(args))
        except SystemExit as exc:  # argparse: --help, and usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["tsm", *args], code, out, err)

    return run


def test_help_lists_subcommands():
    result = run_tsm("--help")
    assert result.returncode == 0 and "train" in result.stdout and "data" in result.stdout


def test_train_help_lists_override_flags(tsm_here):
    out = tsm_here("train", "--help").stdout
    for flag in ("--config", "--model-id", "--random-init", "--no-random-init", "--context-length",
                 "--prediction-length", "--max-steps", "--learning-rate", "--per-device-train-batch-size",
                 "--gradient-accumulation-steps", "--output-dir", "--resume-from-checkpoint",
                 "--max-train-series", "--seed"):
        assert flag in out


def test_bad_config_key(tmp_path, tsm_here):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_step: 3\n")
    assert_clear_error(tsm_here("train", "--config", str(cfg)), "unknown key 'max_step'", str(cfg))


def test_missing_data_folder(tmp_path, tsm_here):
    missing = tmp_path / "nowhere"
    result = tsm_here("train", "--config", str(TEST_CONFIG), "--set", f"training_data_paths=[{missing}]",
                      "--output-dir", str(tmp_path / "out"))
    assert_clear_error(result, str(missing), "does not exist")
    assert not (tmp_path / "out" / "final-checkpoint").exists()


def test_all_series_too_short(tmp_path, tsm_here):
    data = write_corpus(tmp_path / "short", random_walks(5, 20, 30))
    result = tsm_here("train", "--config", str(TEST_CONFIG), "--set", f"training_data_paths=[{data}]",
                      "--output-dir", str(tmp_path / "out"))
    assert_clear_error(result, "all 5 series are shorter than min_past + prediction_length")


def test_unreachable_hub_model_fails_fast(tmp_path, corpus):
    # A process of its own: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    result = run_tsm("train", "--config", str(TEST_CONFIG), "--no-random-init", "--model-id", "nobody-here/no-model",
                     "--set", f"training_data_paths=[{corpus}]", "--output-dir", str(tmp_path / "out"),
                     env={"HF_HUB_OFFLINE": "1"})
    assert_clear_error(result, "nobody-here/no-model", "could not be loaded")


def test_resume_from_missing_checkpoint(tmp_path, corpus, tsm_here):
    result = tsm_here("train", "--config", str(TEST_CONFIG), "--set", f"training_data_paths=[{corpus}]",
                      "--output-dir", str(tmp_path / "out"), "--resume-from-checkpoint", str(tmp_path / "checkpoint-5"))
    assert_clear_error(result, "checkpoint-5", "no such folder")


@pytest.mark.parametrize("item", ["log_steps", "model.d_model=[1"])
def test_bad_set_override(item, tsm_here):
    result = tsm_here("train", "--config", str(TEST_CONFIG), "--set", item)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--set" in result.stderr
