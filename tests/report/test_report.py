"""tsm report: a real (tiny) run folder built here (two trained stages, two real benchmark datasets,
`evaluate`'s CSVs, the data checks' report and Snakemake benchmark files measured by Snakemake's own
benchmark code), the report built through the CLI, and its HTML parsed and checked against the run's
numbers; missing or broken parts give notes."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.benchmark import benchmarked, write_benchmark_records

from tests.conftest import random_walks, tiny_config, write_corpus
from tsm.cli import main
from tsm.data.checks import check
from tsm.data.competitions import build_competition_dataset
from tsm.eval.benchmark import evaluate, load_benchmark, load_windows, pipeline_forecaster, relative_scores
from tsm.eval.fev_tasks import evaluate_fev
from tsm.layout import (
    DATA_CHECK_REPORT,
    DATA_CHECK_SUMMARY,
    MODEL_SELECTION,
    RESOLVED_CONFIG,
    TENSORBOARD,
    TRAINING_SUMMARY,
)
from tsm.records import DataCheckReport, Leg, ModelSelectionRecord, TrainingSummary
from tsm.report import build_report
from tsm.report.datachecks import data_check_tables
from tsm.report.finetune import change_cell
from tsm.report.forecasts import forecast_datasets, load_pipeline, pick_windows
from tsm.report.html import number
from tsm.report.plots import NONFINITE_LABEL, benchmark_curves, format_seconds, validation_curves
from tsm.report.runfiles import DATA_CHECKS, Scalars, StageRun, read_scalars, read_stage
from tsm.train.loop import train

LITE_OFFLINE = Path(__file__).resolve().parents[2] / "config" / "benchmarks" / "lite-offline.yaml"
DATASETS = ("monash_m1_yearly", "monash_m1_quarterly")
SECTIONS = ("summary", "training", "benchmark", "leaderboard", "forecasts", "data-checks", "runtimes")
FEV_RESULTS = Path(__file__).resolve().parents[2] / "config" / "benchmarks" / "fev" / "published"


# ---------------------------------------------------------------------------------------------------
# The run folder, as the DAG leaves it
# ---------------------------------------------------------------------------------------------------


def measured(path: Path, function, *args, **kwargs):
    """Run `function` under Snakemake's own benchmark timer and write its TSV as a rule's `benchmark:`."""
    with benchmarked() as record:
        result = function(*args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records([record], str(path), False)
    return result


def write_benchmark_csv(models: list[str], benchmark: Path, root: Path, output: Path) -> pd.DataFrame:
    """What `tsm evaluate --model X --benchmark B --output O` writes."""
    results = evaluate(models, benchmark, root, batch_size=64, progress=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(output, index=False)
    return results


# The run folders below train real (tiny) models and score them (about a minute each on 2 cores): the tests
# that read them are end-to-end (`-m e2e`); the tests after them check each section's logic on small inputs.
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("report")
    run_dir = base / "results" / "test"
    timings = run_dir / "benchmarks"
    corpus = measured(timings / "synth_train.tsv", write_corpus, run_dir / "data" / "train", random_walks(64, 200, 400))
    stage1 = measured(timings / "train_stage1.tsv", train, tiny_config(
        corpus, run_dir / "stage1", max_steps=12, log_steps=2, save_steps=100, learning_rate=3e-3))
    stage2 = measured(timings / "train_stage2.tsv", train, tiny_config(
        corpus, run_dir / "stage2", random_init=False, model_id=str(stage1), context_length=256, max_steps=6,
        log_steps=2, save_steps=100, learning_rate=1e-3))

    root = run_dir / "data" / "benchmarks"
    for name in DATASETS:
        build_competition_dataset(name, root)
    benchmark = base / "bench.yaml"
    entries = [d for d in yaml.safe_load(LITE_OFFLINE.read_text())["datasets"] if d["name"] in DATASETS]
    benchmark.write_text(yaml.safe_dump({"name": "report-test", "datasets": entries}))
    results = {}
    for name, model in (("stage1", str(stage1)), ("stage2", str(stage2)), ("seasonal-naive", "seasonal-naive")):
        results[name] = measured(timings / f"evaluate_{name}.tsv", write_benchmark_csv, [model], benchmark, root,
                                 run_dir / "benchmark" / f"{name}.csv")

    # The DAG's evaluate_fev rule: the same models on the fev twins of these datasets, one summary file each.
    fev_tasks = base / "fev-tasks.yaml"
    fev_tasks.write_text(yaml.safe_dump({"tasks": [
        t for t in yaml.safe_load((LITE_OFFLINE.parent / "fev" / "chronos-zeroshot-offline.yaml").read_text())["tasks"]
        if t["dataset_config"] in DATASETS]}))
    for name, model in (("stage1", str(stage1)), ("stage2", str(stage2)), ("seasonal-naive", "seasonal-naive")):
        _, summaries = evaluate_fev([model], fev_tasks, root, batch_size=64, progress=False)
        (run_dir / "benchmark-fev").mkdir(exist_ok=True)
        summaries.to_csv(run_dir / "benchmark-fev" / f"{name}-fev-summaries.csv", index=False)

    # The data checks as `tsm data check --output report.json > summary.txt` leave them.
    checks = run_dir / DATA_CHECKS
    min_length = 64  # longer than every M1 yearly series (max 58): a failed check, with an error to show
    check([corpus, root / DATASETS[0]], min_length, checks / DATA_CHECK_REPORT, progress=False,
          summary=checks / DATA_CHECK_SUMMARY)

    output = run_dir / "report.html"
    references = [str(p) for p in sorted(FEV_RESULTS.glob("chronos_zeroshot-*.csv"))]
    assert main(["report", "--run-dir", str(run_dir), "--output", str(output), "--benchmark", str(benchmark),
                 "--reference-results", *references]) == 0
    return {"dir": run_dir, "benchmark": benchmark, "root": root, "results": results, "stage2": stage2,
            "html": output.read_text(), "page": parse(output.read_text())}


# ---------------------------------------------------------------------------------------------------
# A small DOM from html.parser: enough to find sections, tables, cells and images
# ---------------------------------------------------------------------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text_parts = tag, attrs, parent, [], []

    @property
    def text(self) -> str:
        return "".join(part if isinstance(part, str) else part.text for part in self.text_parts)

    def find_all(self, tag: str, **attrs) -> list[Node]:
        found = []
        for child in self.children:
            if child.tag == tag and all(v in child.attrs.get(k, "").split() for k, v in attrs.items()):
                found.append(child)
            found += child.find_all(tag, **attrs)
        return found

    def find(self, tag: str, **attrs) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}>"
        return found[0]

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


VOID = {"meta", "img", "br", "hr", "link", "input"}


class DomBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {}, None)
        self.all_attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.all_attrs += [(tag, k, v) for k, v in attributes.items()]
        node = Node(tag, attributes, self.current)
        self.current.children.append(node)
        self.current.text_parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.text_parts.append(data)


def parse(text: str) -> DomBuilder:
    builder = DomBuilder()
    builder.feed(text)
    builder.close()
    return builder


def section(page: DomBuilder, anchor: str) -> Node:
    return next(s for s in page.root.find_all("section") if s.attrs.get("id") == anchor)


def table_rows(table: Node, part: str = "tbody") -> list[list[Node]]:
    return [row.find_all("td") for row in table.find(part).find_all("tr")]


# ---------------------------------------------------------------------------------------------------
# The full report
# ---------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_every_section_is_present_in_order_and_linked(run):
    page = run["page"]
    anchors = [s.attrs["id"] for s in page.root.find_all("section")]
    assert anchors == list(SECTIONS)
    links = [a.attrs["href"] for a in page.root.find("nav").find_all("a")]
    assert links == [f"#{anchor}" for anchor in SECTIONS]
    for anchor in SECTIONS:
        assert not section(page, anchor).find_all("p", **{"class": "note"}), f"unexpected note in {anchor}"


@pytest.mark.e2e
def test_leaderboard_shows_win_rate_and_skill_score_with_intervals_beside_published_models(run):
    from tsm.eval.leaderboard import leaderboard, summaries_from_results

    board = section(run["page"], "leaderboard")
    tables = board.find_all("table")
    assert len(tables) == 2  # this run's benchmark; the fev tasks beside the published models
    fev_rows = {row[0].text: [cell.text for cell in row] for row in table_rows(tables[1])}
    assert set(fev_rows) == {"stage1", "stage2", "seasonal-naive", "chronos_bolt_tiny (published)",
                             "chronos_bolt_small (published)", "seasonal_naive (published)"}
    # the cells are fev.leaderboard's numbers for this run's CSVs: win rate and skill score [95% interval]
    results = pd.concat([frame.assign(model=name) for name, frame in run["results"].items()], ignore_index=True)
    expected, _ = leaderboard(summaries_from_results(results, "b"), ["stage1", "stage2", "seasonal-naive"],
                              "seasonal-naive", ["WQL"])
    stage2 = expected.set_index("model").loc["stage2"]
    run_rows = {row[0].text: [cell.text for cell in row] for row in table_rows(tables[0])}
    assert run_rows["stage2"][2] == (f"{stage2.win_rate:.3f} [{stage2.win_rate_lower:.3f}, "
                                     f"{stage2.win_rate_upper:.3f}]")
    assert run_rows["stage2"][3].startswith(f"{stage2.skill_score:+.3f} [")
    assert re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", fev_rows["stage2"][3])


@pytest.mark.e2e
def test_self_contained_no_external_links_or_scripts(run):
    page, text = run["page"], run["html"]
    assert not page.root.find_all("script") and not page.root.find_all("link")
    for tag, name, value in page.all_attrs:
        if name in ("src", "href", "action", "srcset", "poster"):
            assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:80])
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.sub(r"data:image/png;base64,[^\"]+", "", text))
    assert "@import" not in text and "url(" not in text


@pytest.mark.e2e
def test_images_are_real_pngs_one_fan_chart_per_dataset(run):
    page = run["page"]
    images = page.root.find_all("img")
    for image in images:
        data = base64.b64decode(image.attrs["src"].removeprefix("data:image/png;base64,"))
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
        assert image.attrs.get("alt")
    fans = section(page, "forecasts").find_all("figure", **{"class": "fan"})
    assert [f.find("img").attrs["alt"] for f in fans] == [f"fan chart: {name}" for name in DATASETS]
    assert len(section(page, "training").find_all("img")) == 1
    assert len(section(page, "benchmark").find_all("img")) == 1  # relative WQL bars
    assert len(section(page, "runtimes").find_all("img")) == 1


@pytest.mark.e2e
def test_benchmark_table_shows_the_csv_scores_best_highlighted_and_the_verdict(run):
    benchmark = section(run["page"], "benchmark")
    table = benchmark.find("table", **{"class": "scores"})
    header = [th.text for th in table.find("thead").find_all("tr")[1].find_all("th")]
    models = ["stage1", "stage2", "seasonal-naive"]
    assert header == ["Dataset", *models, *models]
    rows = {cells[0].text: cells[1:] for cells in table_rows(table)}
    assert list(rows) == list(DATASETS)
    combined = pd.concat([frame.assign(model=name) for name, frame in run["results"].items()])
    scores = combined.set_index(["dataset", "model"])
    for dataset, cells in rows.items():
        for block, metric in enumerate(("WQL", "MASE")):
            expected = [scores.loc[(dataset, m), metric] for m in models]
            shown = cells[block * 3 : block * 3 + 3]
            assert [c.text for c in shown] == [f"{v:.4f}" for v in expected]
            best = {models[i] for i, c in enumerate(shown) if "best" in c.classes()}
            assert best == {models[int(np.argmin(np.round(expected, 4)))]}
    relative = relative_scores(combined).set_index("model")
    footer = table_rows(table, "tfoot")[0]
    assert "geo. mean" in footer[0].text
    assert [c.text for c in footer[1:4]] == [f"{relative.loc[m, 'WQL']:.4f}" for m in models]
    assert [c.text for c in footer[4:7]] == [f"{relative.loc[m, 'MASE']:.4f}" for m in models]
    assert footer[3].text == "1.0000"
    wql, mase = relative.loc["stage2", "WQL"], relative.loc["stage2", "MASE"]
    verdict = benchmark.find("p", **{"class": "headline"}).text
    assert f"WQL {wql:.3f}" in verdict and f"MASE {mase:.3f}" in verdict and "over 2 datasets" in verdict
    won = {"WQL": wql < 1, "MASE": mase < 1}
    mixed = "WQL but not on MASE" if won["WQL"] else "MASE but not on WQL"
    expected_start = ("Stage 2 beat seasonal naive on both" if all(won.values()) else
                      "Stage 2 did not beat seasonal naive on either" if not any(won.values()) else
                      f"Stage 2 beat seasonal naive on {mixed}")
    assert verdict.startswith(expected_start)
    worse = [m for m in ("WQL", "MASE") if relative.loc["stage2", m] > relative.loc["stage1", m]]
    assert (f"Stage 2 is worse than stage 1 on {' and '.join(worse)}" if worse
            else "Stage 2 is no worse than stage 1 on either") in verdict
    assert verdict in section(run["page"], "summary").find("p", **{"class": "headline"}).text


@pytest.mark.e2e
def test_summary_shows_stages_steps_losses_and_configs(run):
    summary = section(run["page"], "summary")
    facts = {card.find("div", **{"class": "label"}).text: card.find("div", **{"class": "value"}).text
             for card in summary.find_all("div", **{"class": "fact"})}
    assert facts["Run"] == "test" and facts["Stages"] == "stage1 → stage2" and facts["Optimizer steps"] == "12 + 6"
    stage2_losses = read_scalars(run["dir"] / "stage2" / TENSORBOARD)["train/loss"].values
    assert facts["Final loss"] == f"{stage2_losses[-1]:.4f}"
    # Started: the trainer's summary's first leg of the first stage (training-summary.json, not the log).
    started = TrainingSummary.read(run["dir"] / "stage1").legs[0].started
    assert facts["Started"] == pd.Timestamp(started).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
    recorded = sum(pd.read_csv(path, sep="\t")["s"].item() for path in (run["dir"] / "benchmarks").glob("*.tsv"))
    # The sum's last bit depends on the order of addition, which can flip the shown rounding.
    shown = {f"{format_seconds(recorded + nudge)} all rules" for nudge in (-1e-6, 0.0, 1e-6)}
    assert facts["Wall time"] in shown
    rows = {cells[0].text: [c.text for c in cells] for cells in table_rows(summary.find("table"))}
    assert list(rows) == ["stage1", "stage2"]
    assert rows["stage1"][1] == "random" and rows["stage2"][1] == "stage1/final-checkpoint"
    assert rows["stage1"][3] == "128 → 32" and rows["stage2"][3] == "256 → 32"
    assert rows["stage2"][6] == "6" and rows["stage2"][7] == f"{stage2_losses[-1]:.4f}"
    configs = summary.find_all("details")
    assert [d.find("summary").text for d in configs] == [f"{s}: {RESOLVED_CONFIG}" for s in ("stage1", "stage2")]
    assert configs[1].find("pre").text == (run["dir"] / "stage2" / RESOLVED_CONFIG).read_text()


@pytest.mark.e2e
def test_data_checks_and_rule_times(run):
    report = DataCheckReport.read(run["dir"] / DATA_CHECKS / DATA_CHECK_REPORT)
    checks = section(run["page"], "data-checks")
    verdict = checks.find("p", **{"class": "headline"})
    assert "bad" in verdict.classes()
    assert verdict.text.startswith(f"1 of 2 corpora failed the data checks (training would stop on them): "
                                   f"data/benchmarks/{DATASETS[0]}.")
    assert "at least 64 steps" in verdict.text
    corpora = checks.find("table")
    header = [th.text for th in corpora.find_all("th")]
    rows = {cells[0].text: [c.text for c in cells] for cells in table_rows(corpora)}
    assert list(rows) == ["data/train", f"data/benchmarks/{DATASETS[0]}"]  # named relative to the run folder
    assert [d.dataset for d in report.datasets] == [str(run["dir"] / name) for name in rows]
    train_check, yearly_check = report.datasets
    yearly = rows[f"data/benchmarks/{DATASETS[0]}"]
    assert yearly[header.index("Series")] == "181" == f"{yearly_check.num_series:,}"
    assert yearly[header.index("OK")] == "no" and rows["data/train"][header.index("OK")] == "yes"
    assert yearly[header.index("Too short")] == f"{yearly_check.series.too_short:,}"
    assert yearly[header.index("Max")] == f"{yearly_check.length.max:,}"
    assert yearly[header.index("Errors")] == "1" and rows["data/train"][header.index("Errors")] == "0"
    assert rows["data/train"][header.index("Usable")] == f"{train_check.series.usable:,}"
    # the checks' error is listed under the table
    assert any("no usable series" in li.text for li in checks.find("ul", **{"class": "messages"}).find_all("li"))
    everything = checks.find("details")
    nested_rows = {cells[0].text: [c.text for c in cells[1:]] for cells in table_rows(everything.find("table"))}
    assert nested_rows["length p95"] == [f"{d.length.p95:.4g}" for d in report.datasets]
    assert nested_rows["target values"] == [f"{d.target.values:,}" for d in report.datasets]
    assert checks.find("pre").text == (run["dir"] / DATA_CHECKS / DATA_CHECK_SUMMARY).read_text()

    runtimes = section(run["page"], "runtimes")
    rules = [cells[0].text for cells in table_rows(runtimes.find("table"))]
    assert rules == ["synth_train", "train_stage1", "train_stage2", "evaluate_seasonal-naive", "evaluate_stage1",
                     "evaluate_stage2"]
    recorded = pd.read_csv(run["dir"] / "benchmarks" / "train_stage1.tsv", sep="\t")["s"].item()
    assert table_rows(runtimes.find("table"))[1][1].text == format_seconds(recorded)


@pytest.mark.e2e
def test_fan_charts_forecast_the_scored_windows_in_eval_mode(run):
    dataset = load_benchmark(run["benchmark"])[0]
    pipeline = load_pipeline(run["stage2"])
    assert not pipeline.model.training
    drawn, notes = forecast_datasets(pipeline, [dataset], run["root"], series_per_dataset=3)
    assert not notes and len(drawn[0].panels) == 3
    windows = load_windows(dataset, run["root"])
    chosen = pick_windows(len(windows.contexts), 3)
    assert chosen[0] == 0 and chosen[-1] == len(windows.contexts) - 1
    quantiles = pipeline_forecaster(pipeline)([windows.contexts[i] for i in chosen], dataset.prediction_length,
                                             windows.seasonality, 8, lambda _: None)
    for panel, index, forecast in zip(drawn[0].panels, chosen, quantiles, strict=True):
        np.testing.assert_array_equal(panel.truth, windows.future[index])
        np.testing.assert_allclose(panel.median, forecast[4], rtol=1e-5)
        np.testing.assert_array_equal(panel.context, windows.contexts[index][-len(panel.context):])
        assert np.all(panel.low <= panel.median) and np.all(panel.median <= panel.high)


# ---------------------------------------------------------------------------------------------------
# Missing and broken parts
# ---------------------------------------------------------------------------------------------------


def notes_by_section(path: Path) -> dict[str, list[str]]:
    page = parse(path.read_text())
    return {anchor: [n.text for n in section(page, anchor).find_all("p", **{"class": "note"})] for anchor in SECTIONS}


def test_empty_run_folder_gives_a_note_per_section(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    output = build_report(run_dir, tmp_path / "out" / "report.html")
    notes = notes_by_section(output)
    assert all(notes[anchor] for anchor in SECTIONS), notes
    assert "No training stage folder" in " ".join(notes["summary"])
    assert "No benchmark results" in notes["benchmark"][0]
    assert "No final checkpoint" in notes["forecasts"][0]
    assert not parse(output.read_text()).root.find_all("img")


@pytest.mark.e2e
def test_partial_and_broken_parts_give_notes_not_a_crash(run, tmp_path):
    import shutil

    run_dir = tmp_path / "partial"
    shutil.copytree(run["dir"] / "stage1", run_dir / "stage1")  # stage 2 never ran
    (run_dir / "stage1" / "tensorboard").rename(run_dir / "stage1" / "tb-moved")
    (run_dir / "benchmark").mkdir()
    (run_dir / "benchmark" / "stage1.csv").write_text("dataset,model,score\nx,y,1\n")  # wrong columns
    (run_dir / DATA_CHECKS).mkdir()
    (run_dir / DATA_CHECKS / DATA_CHECK_SUMMARY).write_text("only the summary\n")
    (run_dir / "stage1" / TRAINING_SUMMARY).unlink()  # a run from before the trainer wrote one
    output = build_report(run_dir, run_dir / "report.html", benchmark=run["benchmark"], datasets_root=tmp_path / "no",
                          series_per_dataset=2)
    notes = notes_by_section(output)
    assert any("Could not read the benchmark results" in n and "missing column" in n for n in notes["summary"])
    assert any("no TensorBoard scalars" in n for n in notes["summary"])
    assert "No TensorBoard scalars" in notes["training"][0]
    assert "stage1's final checkpoint" in notes["forecasts"][0]
    assert sum("is missing" in n for n in notes["forecasts"]) == len(DATASETS)
    assert any("no training summary" in n and "training-summary.json is missing" in n for n in notes["summary"])
    assert f"{DATA_CHECK_REPORT} is missing" in notes["data-checks"][0]
    assert section(parse(output.read_text()), "data-checks").find("pre").text == "only the summary\n"


def test_cli_reports_a_missing_run_folder(tmp_path, capsys):
    assert main(["report", "--run-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_data_check_report_of_another_shape_is_named_not_guessed(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / DATA_CHECKS).mkdir(parents=True)
    (run_dir / DATA_CHECKS / DATA_CHECK_REPORT).write_text(json.dumps({"items": [{"name": "a", "rows": 3}]}))
    (run_dir / DATA_CHECKS / DATA_CHECK_SUMMARY).write_text("printed\n")
    output = build_report(run_dir, run_dir / "report.html")
    [note] = notes_by_section(output)["data-checks"]
    assert f"{DATA_CHECK_REPORT}: not a tsm data-check report" in note
    assert section(parse(output.read_text()), "data-checks").find("pre").text == "printed\n"
    assert "no corpus" in " ".join(data_check_tables(DataCheckReport(ok=True, min_length=None, datasets=[])))


def test_data_check_tables_name_failed_corpora_and_show_their_figures(tmp_path):
    """The data-checks section from a report `tsm data check` wrote: the verdict names the failed corpus
    relative to the run folder, and each corpus' row shows its own figures."""
    write_corpus(tmp_path / "data" / "train", [np.arange(100.0), np.arange(120.0)])
    write_corpus(tmp_path / "data" / "short", [np.arange(5.0)])
    report = check([tmp_path / "data" / "train", tmp_path / "data" / "short"], 64, None, progress=False)
    page = parse("".join(data_check_tables(report, tmp_path)))
    verdict = page.root.find("p", **{"class": "headline"})
    assert "bad" in verdict.classes() and verdict.text.startswith("1 of 2 corpora failed the data checks")
    assert "data/short" in verdict.text and "at least 64 steps" in verdict.text
    table = page.root.find("table")
    header = [th.text for th in table.find_all("th")]
    rows = {cells[0].text: [c.text for c in cells] for cells in table_rows(table)}
    train, short = report.datasets
    assert list(rows) == ["data/train", "data/short"]
    assert rows["data/train"][header.index("Usable")] == f"{train.series.usable:,}"
    assert rows["data/short"][header.index("Too short")] == f"{short.series.too_short:,}"
    assert rows["data/short"][header.index("Errors")] == str(len(short.errors))


def test_stage_figures_come_from_the_trainer_summary(tmp_path):
    """Start, wall time, steps and status are read from training-summary.json (tsm.records), never the log;
    a resumed run's legs add up, and a run that did not finish says so."""
    folder = tmp_path / "stage1"
    folder.mkdir()
    (folder / RESOLVED_CONFIG).write_text("max_steps: 100\n")
    (folder / "training.log").write_text("Done: 999 steps in 1.0s\n")  # never read
    TrainingSummary(max_steps=100, last_loss=0.5, bad_steps=2, legs=[
        Leg("2030-01-02T03:04:05+00:00", "2030-01-02T03:05:05+00:00", 0, 40, 60.0, "preempted"),
        Leg("2030-01-02T04:00:00+00:00", "2030-01-02T04:00:30+00:00", 40, 70, 30.0, "running"),
    ]).write(folder)
    stage = read_stage(folder)
    assert stage.started.isoformat() == "2030-01-02T03:04:05+00:00"
    assert stage.finished.isoformat() == "2030-01-02T04:00:30+00:00"
    assert stage.steps == 70 and stage.seconds == 90.0 and stage.final_loss == 0.5  # no TensorBoard: the summary's
    assert any("still running, or ended without finishing at step 70 of 100" in n for n in stage.notes)
    assert any("2 step(s) with a non-finite loss" in n for n in stage.notes)
    (folder / TRAINING_SUMMARY).unlink()
    stage = read_stage(folder)
    assert stage.started is None and stage.seconds is None and stage.steps is None
    assert any("no training summary" in n for n in stage.notes)


def test_benchmark_scores_logged_during_training_get_their_own_chart():
    steps = np.array([5, 10])
    stages = [StageRun("stage1", Path("s1")), StageRun("stage2", Path("s2"))]
    stages[0].scalars = {"train/loss": Scalars(steps, np.array([2.0, 1.0])),
                         "benchmark/relative_wql": Scalars(steps, np.array([1.2, 0.9])),
                         "benchmark/relative_mase": Scalars(steps, np.array([1.4, 1.1]))}
    stages[1].scalars = {"benchmark/relative_wql": Scalars(steps, np.array([0.85, 0.8]))}
    figure = benchmark_curves(stages)
    assert [ax.get_title() for ax in figure.axes] == ["relative mase during training", "relative wql during training"]
    wql_lines = [line for line in figure.axes[1].get_lines() if line.get_label() in ("stage1", "stage2")]
    assert [list(line.get_xdata()) for line in wql_lines] == [[5, 10], [15, 20]]  # stage 2 continues the axis
    assert benchmark_curves([StageRun("stage1", Path("s1"))]) is None


def test_a_score_that_is_not_finite_is_shown_not_dropped():
    """A diverged model's inf or NaN score keeps its step: a gap in the line, a red cross at the top of the
    panel, and a note naming it."""
    from tsm.report.sections import training_section

    stage = StageRun("finetune", Path("ft"))
    stage.scalars = {"train/loss": Scalars(np.array([2, 4, 6, 8]), np.array([3.0, 2.0, np.nan, 1.0])),
                     "validation/wql": Scalars(np.array([0, 4, 8]), np.array([0.3, np.inf, 1.6e5])),
                     "validation/loss": Scalars(np.array([0, 4, 8]), np.array([37.0, np.nan, 61.0]))}
    figure = validation_curves([stage])
    for ax, bad in zip(figure.axes, (np.nan, np.inf), strict=True):
        [line] = [line for line in ax.get_lines() if line.get_label() == "finetune"]
        assert list(line.get_xdata()) == [0, 4, 8]
        assert np.isnan(line.get_ydata()[1]) and np.isfinite(line.get_ydata()[[0, 2]]).all()  # a gap
        [cross] = [line for line in ax.get_lines() if line.get_label() == NONFINITE_LABEL]
        assert list(cross.get_xdata()) == [4]
        assert [t.get_text() for t in ax.texts] == [str(bad)]
        assert np.isfinite(ax.get_ylim()).all()
    assert NONFINITE_LABEL in [t.get_text() for t in figure.legends[0].get_texts()]
    notes = parse(training_section([stage]).body).root.find_all("p", **{"class": "note"})
    assert [n.text for n in notes] == ["Validation scores that are not finite, shown as red crosses at the top of "
                                       "their panel (a gap in the line): finetune loss at step 4: nan; finetune "
                                       "wql at step 4: inf."]


def test_a_csv_of_several_models_keeps_their_names(tmp_path):
    from tsm.report.runfiles import read_benchmark_results

    (tmp_path / "benchmark").mkdir()
    pd.DataFrame({"dataset": ["a", "a"], "model": ["results/x/stage2/final-checkpoint", "seasonal-naive"],
                  "MASE": [1.0, 2.0], "WQL": [0.1, 0.2]}).to_csv(tmp_path / "benchmark" / "all.csv", index=False)
    pd.DataFrame({"dataset": ["a"], "model": ["results/x/stage1/final-checkpoint"], "MASE": [1.5], "WQL": [0.15]}
                 ).to_csv(tmp_path / "benchmark" / "stage1.csv", index=False)
    results = read_benchmark_results(tmp_path)
    assert list(results["model"]) == ["stage1", "stage2", "seasonal-naive"]


# ---------------------------------------------------------------------------------------------------
# Finetune mode: zero-shot (start) vs. fine-tuned, in-domain marks, the trainer's verdict
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory) -> dict:
    """A finetune-mode run folder as the DAG leaves it: the start model (trained elsewhere) scored as
    benchmark/start.csv, the fine-tuned one as finetune.csv, seasonal naive; the fine-tune's corpus is a
    copy of one benchmark dataset (so that dataset is in-domain for the fine-tuned model only)."""
    import shutil

    base = tmp_path_factory.mktemp("finetune-report")
    start = train(tiny_config(write_corpus(base / "pretraining" / "walks", random_walks(64, 200, 400)),
                              base / "pretrained" / "stage1", max_steps=12, log_steps=2, save_steps=100,
                              learning_rate=3e-3))
    run_dir = base / "results" / "ft"
    root = run_dir / "data" / "benchmarks"
    for name in DATASETS:
        build_competition_dataset(name, root)
    corpus = shutil.copytree(root / DATASETS[1], run_dir / "data" / "train")
    # A learning rate this large wrecks the model, and export: last keeps the wrecked weights (the default,
    # best, would export the start: tests/train/test_finetune.py): the report must say it got worse.
    tuned = train(tiny_config(corpus, run_dir / "finetune", random_init=False, model_id=str(start), max_steps=8,
                              log_steps=2, save_steps=100, learning_rate=0.5, max_grad_norm=100.0, eval_steps=4,
                              export="last"))
    benchmark = base / "bench.yaml"
    entries = [d for d in yaml.safe_load(LITE_OFFLINE.read_text())["datasets"] if d["name"] in DATASETS]
    benchmark.write_text(yaml.safe_dump({"name": "report-test", "datasets": entries}))
    results = {name: write_benchmark_csv([model], benchmark, root, run_dir / "benchmark" / f"{name}.csv")
               for name, model in (("start", str(start)), ("finetune", str(tuned)),
                                   ("seasonal-naive", "seasonal-naive"))}
    output = run_dir / "report.html"
    references = [str(p) for p in sorted(FEV_RESULTS.glob("chronos_zeroshot-*.csv"))]
    assert main(["report", "--run-dir", str(run_dir), "--output", str(output), "--benchmark", str(benchmark),
                 "--reference-results", *references]) == 0
    return {"dir": run_dir, "results": results, "page": parse(output.read_text()), "tuned": tuned}


@pytest.mark.e2e
def test_finetune_report_shows_zero_shot_and_fine_tuned_side_by_side(finetune_run):
    benchmark = section(finetune_run["page"], "benchmark")
    table = benchmark.find("table", **{"class": "finetune"})
    header = [th.text for th in table.find("thead").find_all("tr")[1].find_all("th")]
    columns = ["zero-shot (start)", "fine-tuned", "change", "seasonal naive"]
    assert header == ["Dataset", *columns, *columns]
    combined = pd.concat([frame.assign(model=name) for name, frame in finetune_run["results"].items()])
    scores = combined.set_index(["dataset", "model"])
    rows = {cells[0].text: cells[1:] for cells in table_rows(table)}
    assert list(rows) == list(DATASETS)
    tuned_rows = finetune_run["results"]["finetune"].set_index("dataset")
    in_domain_datasets = set(tuned_rows.index[tuned_rows["regime"] == "in-domain"])
    assert in_domain_datasets == set(DATASETS)  # the corpus copy, and M1 yearly through a series both hold
    lowered = 0
    for dataset, cells in rows.items():
        for block, metric in enumerate(("WQL", "MASE")):
            start, tuned, naive = (scores.loc[(dataset, m), metric] for m in ("start", "finetune", "seasonal-naive"))
            shown = [c.text for c in cells[block * 4 : block * 4 + 4]]
            in_domain = "†" if dataset in in_domain_datasets else ""
            # The texts come from the scores as this machine computed them, through the report's own
            # formatting: a wrecked model's WQL can be 0.9 on one machine and 146,592 (1.466e+05) on another.
            assert shown == [number(start), number(tuned) + in_domain, change_cell(start, tuned).text, number(naive)]
            change = cells[block * 4 + 2].classes()
            assert ("better" in change) == (round((tuned / start - 1) * 100, 1) < 0)
            lowered += metric == "WQL" and tuned < start
    relative = relative_scores(combined).set_index("model")
    footer = [c.text for c in table_rows(table, "tfoot")[0]]
    assert "geo. mean" in footer[0]
    for block, metric in enumerate(("WQL", "MASE")):
        start, tuned = relative.loc["start", metric], relative.loc["finetune", metric]
        assert footer[1 + block * 4 : 5 + block * 4] == [number(start), number(tuned), change_cell(start, tuned).text,
                                                         number(1.0)]
    sentence = f"Fine-tuning lowered WQL on {lowered} of 2 dataset(s) compared."
    [verdict] = [p.text for p in benchmark.find_all("p") if p.text.startswith(sentence)]
    assert "The fine-tuned model was trained on 2 of them (in-domain, †)" in verdict


@pytest.mark.e2e
def test_finetune_report_states_whether_fine_tuning_beat_the_start(finetune_run):
    chosen = json.loads((finetune_run["dir"] / "finetune" / MODEL_SELECTION).read_text())
    assert chosen["exported"] is None and not chosen["beat_start"]
    best = (f", best fine-tuned {chosen['best_score']:.4g} at step {chosen['best_step']}"
            if chosen["best_step"] is not None else "")  # None when no fine-tuned score was finite
    expected = (f"Fine-tuning did not beat the start on validation_wql (start {chosen['start_score']:.4g}{best}): "
                "final-checkpoint holds the last step's weights.")
    for anchor in ("summary", "benchmark"):
        headlines = [p.text for p in section(finetune_run["page"], anchor).find_all("p", **{"class": "headline"})]
        assert any(text.startswith(expected) for text in headlines), headlines
        assert any("bad" in p.classes() for p in section(finetune_run["page"], anchor).find_all("p")
                   if p.text.startswith(expected))


@pytest.mark.e2e
def test_finetune_report_marks_in_domain_scores_plainly(finetune_run):
    benchmark = section(finetune_run["page"], "benchmark")
    table = benchmark.find("table", **{"class": "scores"})
    header = [th.text for th in table.find("thead").find_all("tr")[1].find_all("th")]
    assert header == ["Dataset", *(["start", "finetune", "seasonal-naive"] * 2)]
    rows = {cells[0].text: cells[1:] for cells in table_rows(table)}
    marked = {(dataset, i) for dataset, cells in rows.items() for i, c in enumerate(cells) if c.find_all("sup")}
    # finetune's WQL and MASE on its training data (a copy of M1 quarterly) and on M1 yearly, one of whose
    # series M1 quarterly holds too (series 111 of yearly is series 122 of quarterly): the series-level check.
    assert marked == {(name, i) for name in DATASETS for i in (1, 4)}
    mark = rows[DATASETS[1]][1].find("sup")
    assert mark.text == "†" and mark.attrs["title"].startswith("in-domain: training corpus 'train'")
    assert rows[DATASETS[0]][1].find("sup").attrs["title"].startswith(
        "in-domain: series-level check: 1 of 181 series (0.6%) found in the training corpora")
    note = benchmark.find("p", **{"class": "regime-note"}).text
    assert "In-domain, not zero-shot" in note and "2 score(s)" in note
    items = [li.text for li in benchmark.find("ul", **{"class": "messages"}).find_all("li")]
    assert len(items) == 2
    assert any(text.startswith(f"finetune on {DATASETS[1]}: training corpus 'train'") and
               "same content fingerprint" in text for text in items)
    assert any(text.startswith(f"finetune on {DATASETS[0]}: series-level check: 1 of 181 series") for text in items)
    # the leaderboard says whose figures are not zero-shot
    notes = [p.text for p in section(finetune_run["page"], "leaderboard").find_all("p", **{"class": "note"})]
    assert notes == ["finetune was trained on 100% of these tasks' data (in-domain, see the Benchmark section): "
                     "its figures there are not zero-shot."]


def test_finetune_verdict_sentences_from_the_selection_record(tmp_path):
    from tsm.report.runfiles import read_finetune_selection
    from tsm.report.verdicts import finetune_verdict

    assert read_finetune_selection(tmp_path) is None
    (tmp_path / "finetune").mkdir()
    # An old record without best_score, and a key a newer trainer may add: both read.
    (tmp_path / "finetune" / MODEL_SELECTION).write_text(json.dumps(
        {"start_score": 0.9, "best_step": 40, "exported": "checkpoint-40", "metric": "composite", "beat_start": True,
         "written_by": "a newer tsm"}))
    v = finetune_verdict(read_finetune_selection(tmp_path))
    assert v.beat is True
    assert v.text == ("Fine-tuning beat the start on composite (start 0.9, best fine-tuned checkpoint at step 40): "
                      "final-checkpoint holds checkpoint-40.")
    v = finetune_verdict(ModelSelectionRecord(metric="relative_wql", exported="start", beat_start=False))
    assert v.beat is False and "did not beat the start" in v.text and "start not scored" in v.text
    # Before the run finishes the record has no decision: no verdict yet.
    ModelSelectionRecord(metric="validation_wql", history=[{"step": 0, "score": 0.5}]).write(tmp_path / "finetune")
    assert read_finetune_selection(tmp_path) is None


def test_a_model_selection_record_of_another_shape_is_a_note_naming_it(tmp_path):
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / MODEL_SELECTION).write_text(json.dumps({"history": [{"score": 1.0}]}))
    notes = notes_by_section(build_report(tmp_path, tmp_path / "report.html"))
    assert any(str(tmp_path / "finetune" / MODEL_SELECTION) in n and "not a tsm model-selection record" in n
               for n in notes["summary"]), notes["summary"]


@pytest.mark.e2e
def test_finetune_report_plots_validation_from_the_start_on(finetune_run):
    """Every evaluation the trainer recorded is in the chart, the start at step 0, whatever the scores are:
    the wrecked model's WQL is not finite on some machines (inf at step 4), and that point must be shown."""
    training = section(finetune_run["page"], "training")
    assert "validation during training" in [img.attrs.get("alt") for img in training.find_all("img")]
    stage = StageRun("finetune", finetune_run["dir"] / "finetune")
    stage.scalars = read_scalars(stage.folder / TENSORBOARD)
    chosen = json.loads((finetune_run["dir"] / "finetune" / MODEL_SELECTION).read_text())
    recorded = {e["step"]: e["score"] for e in chosen["history"]}
    assert list(recorded) == [0, 4, 8]  # the start is step 0
    logged = stage.scalars["validation/wql"]
    assert list(logged.steps) == list(recorded), "TensorBoard lacks a validation score the trainer recorded"
    figure = validation_curves([stage])
    assert [ax.get_title() for ax in figure.axes] == ["validation loss during training",
                                                      "validation wql during training"]
    [line] = [line for line in figure.axes[1].get_lines() if line.get_label() == "finetune"]
    assert list(line.get_xdata()) == list(recorded)
    finite = {step: score if np.isfinite(score) else np.nan for step, score in recorded.items()}
    assert list(line.get_ydata()) == pytest.approx(list(finite.values()), rel=1e-6, nan_ok=True)
    crosses = [line for line in figure.axes[1].get_lines() if line.get_label() == NONFINITE_LABEL]
    assert [list(c.get_xdata()) for c in crosses] == ([[s for s in recorded if np.isnan(finite[s])]]
                                                      if any(np.isnan(list(finite.values()))) else [])
    notes = " ".join(n.text for n in training.find_all("p", **{"class": "note"}))
    for step, score in recorded.items():
        if not np.isfinite(score):
            assert f"finetune wql at step {step}: {score}" in notes


@pytest.mark.parametrize(("stage1", "stage2", "expected", "good"), [
    ((0.9, 0.95), (0.85, 0.9), "Stage 2 beat seasonal naive on both aggregate relative scores: WQL 0.850 (15.0% "
     "lower), MASE 0.900 (10.0% lower); geometric mean over 9 datasets. Stage 2 is no worse than stage 1 on either "
     "(WQL 0.850 vs 0.900, MASE 0.900 vs 0.950).", True),
    ((0.908, 1.169), (0.921, 1.213), "Stage 2 beat seasonal naive on WQL but not on MASE: WQL 0.921 (7.9% lower), "
     "MASE 1.213 (21.3% higher); geometric mean over 9 datasets. Stage 2 is worse than stage 1 on WQL and MASE "
     "(WQL 0.921 vs 0.908, MASE 1.213 vs 1.169).", False),
    ((1.2, 1.3), (1.1, 1.25), "Stage 2 did not beat seasonal naive on either aggregate relative score: WQL 1.100 "
     "(10.0% higher), MASE 1.250 (25.0% higher); geometric mean over 9 datasets. Stage 2 is no worse than stage 1 "
     "on either (WQL 1.100 vs 1.200, MASE 1.250 vs 1.300).", False),
    ((0.8, 0.9), (0.82, 0.88), "Stage 2 beat seasonal naive on both aggregate relative scores: WQL 0.820 (18.0% "
     "lower), MASE 0.880 (12.0% lower); geometric mean over 9 datasets. Stage 2 is worse than stage 1 on WQL (WQL "
     "0.820 vs 0.800, MASE 0.880 vs 0.900).", False),
])
def test_verdict_gives_both_metrics_and_stage2_against_stage1(stage1, stage2, expected, good):
    from tsm.report.verdicts import benchmark_verdict

    relative = pd.DataFrame([
        {"model": "stage1", "WQL": stage1[0], "MASE": stage1[1], "datasets": 9},
        {"model": "stage2", "WQL": stage2[0], "MASE": stage2[1], "datasets": 9},
        {"model": "seasonal-naive", "WQL": 1.0, "MASE": 1.0, "datasets": 9},
    ])
    v = benchmark_verdict(relative, relative)
    assert (v.text, v.beat) == (expected, good)


def test_selection_notes_say_how_each_model_was_chosen(tmp_path):
    from tsm.report.runfiles import read_model_selections
    from tsm.report.verdicts import selection_notes

    for model, metric, exported in (("stage1", "wql", "checkpoint-400"), ("stage2", "validation_wql", "start"),
                                    ("finetune", "validation_loss", None)):
        (tmp_path / model).mkdir()
        (tmp_path / model / MODEL_SELECTION).write_text(json.dumps({"metric": metric, "exported": exported}))
    notes = selection_notes(read_model_selections(tmp_path, ["stage1", "stage2", "finetune", "seasonal-naive"]))
    assert notes == [
        "stage1: final-checkpoint holds checkpoint-400, chosen by its benchmark wql during training "
        "(benchmark_config). Where that is this benchmark, its scores here were used to choose the model and are "
        "optimistic.",
        "stage2: final-checkpoint holds the starting model, chosen by wql on held-out windows of the training "
        "corpus (not on this benchmark).",
    ]


def test_the_benchmark_section_renders_the_verdicts_it_is_given(tmp_path):
    """Finetune mode on small inputs: the comparison counts the datasets where WQL fell, and the trainer's
    verdict and the selection notes come from the records in the run folder."""
    from tsm.report.runfiles import read_finetune_selection, read_model_selections
    from tsm.report.sections import benchmark_section
    from tsm.report.verdicts import benchmark_verdict, finetune_verdict, relative_or_none, selection_notes

    scores = {("a", "start"): 0.8, ("a", "finetune"): 0.6, ("a", "seasonal-naive"): 1.0,
              ("b", "start"): 0.7, ("b", "finetune"): 0.9, ("b", "seasonal-naive"): 1.0}
    results = pd.DataFrame([{"dataset": d, "model": m, "WQL": s, "MASE": s} for (d, m), s in scores.items()])
    ModelSelectionRecord(metric="validation_wql", history=[{"step": 0, "score": 0.5}, {"step": 8, "score": 0.4}],
                         start_score=0.5, best_step=8, best_score=0.4, exported="checkpoint-8", beat_start=True,
                         verdict="beat").write(tmp_path / "finetune")
    relative = relative_or_none(results)
    tuning = finetune_verdict(read_finetune_selection(tmp_path))
    chosen = selection_notes(read_model_selections(tmp_path, ["start", "finetune", "seasonal-naive"]))
    page = parse(benchmark_section(results, relative, benchmark_verdict(relative, results), tmp_path, chosen,
                                   tuning).body)
    headlines = [p.text for p in page.root.find_all("p", **{"class": "headline"})]
    assert headlines[0].startswith("The fine-tuned model beat seasonal naive on both aggregate relative scores")
    assert headlines[1].startswith(f"{tuning.text} (the trainer's {MODEL_SELECTION})")
    improved = sum(scores[(d, "finetune")] < scores[(d, "start")] for d in ("a", "b"))
    paragraphs = [p.text for p in page.root.find_all("p")]
    assert any(text.startswith(f"Fine-tuning lowered WQL on {improved} of 2 dataset(s) compared.")
               for text in paragraphs)
    notes = [p.text for p in page.root.find_all("p", **{"class": "note"})]
    assert notes == chosen and chosen[0].startswith("finetune: final-checkpoint holds checkpoint-8, chosen by wql")


def test_the_leaderboard_names_the_tasks_whose_data_differ_from_the_published_ones(tmp_path):
    """Offline monash_tourism_yearly is not the hub's data (its seasonal naive misses the published one); the
    section renders leaderboard's decision: the task out, its reason with both figures, the rest ranked."""
    from tsm.eval.leaderboard import published_joins, read_reference
    from tsm.report.sections import leaderboard_section

    names = ["monash_m3_yearly", "monash_tourism_yearly"]
    for name in names:
        build_competition_dataset(name, tmp_path / "root")
    tasks = [t for t in yaml.safe_load((FEV_RESULTS.parent / "chronos-zeroshot-offline.yaml").read_text())["tasks"]
             if t["dataset_config"] in names]
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    summaries = evaluate_fev(["seasonal-naive"], tmp_path / "tasks.yaml", tmp_path / "root", progress=False)[1]
    reference = sorted(FEV_RESULTS.glob("*.csv"))
    page = parse(leaderboard_section(None, summaries, reference).body)

    joins = published_joins(summaries, read_reference(reference), "seasonal-naive", ["WQL", "MASE"])
    left_out = [j for j in joins if not j.joins]
    assert [j.task for j in left_out] == ["monash_tourism_yearly"]
    notes = [p.text for p in page.root.find_all("p", **{"class": "note"})]
    assert notes == [j.note(whole_task=True) for j in left_out]
    assert all(f"{m} {value:.4g}" in notes[0] for j in left_out for m, value in {**j.ours, **j.published}.items())
    rows = table_rows(page.root.find_all("table")[0])
    assert {row[0].text for row in rows} >= {"seasonal-naive", "chronos_bolt_small (published)"}
    assert {row[1].text for row in rows} == {"1"}  # ranked on the task that joins
