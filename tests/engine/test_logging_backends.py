"""Issue 18, item 5: the Weights & Biases backend (a fake ``wandb`` module, or the real one offline when
installed), TensorBoard's config text and sample generations, and the report's curves."""

import glob
import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np
import pytest

from jdistill.engine import report, trainer
from jdistill.engine.defaults import base_config
from jdistill.engine.metrics_writer import MetricsWriter, read_metrics
from jdistill.engine.run_setup import ConfigError
from tests.engine import tiny_setup


# ----------------------------------------------------------------------------- a fake wandb


class FakeTable:
    def __init__(self, columns, data):
        self.columns, self.data = list(columns), [list(row) for row in data]


class FakeConfig(dict):
    def update(self, values, allow_val_change=False):
        assert allow_val_change
        super().update(values)


class FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.config, self.logged, self.defined, self.finished = kwargs, FakeConfig(), [], [], False

    def log(self, values):
        self.logged.append(dict(values))

    def define_metric(self, name, step_metric=None):
        self.defined.append((name, step_metric))

    def finish(self):
        self.finished = True


def fake_wandb():
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init, module.Table = init, FakeTable
    return module


# ----------------------------------------------------------------------------- TensorBoard events


def tensorboard_events(directory):
    """Every event of the event files in ``directory``: tensorboard's own reader when installed, else the
    TFRecord framing (length, CRC, payload, CRC) parsed here with tensorboardX's Event protobuf."""
    files = sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*")))
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        return [event for path in files for event in EventFileLoader(path).Load()]
    from tensorboardX.proto import event_pb2

    events = []
    for path in files:
        raw = open(path, "rb").read()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack("<Q", raw[offset:offset + 8])
            payload = raw[offset + 12: offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def scalars_and_texts(events):
    scalars, texts = {}, {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars[(value.tag, event.step)] = value.simple_value
            elif value.metadata.plugin_data.plugin_name == "text":
                texts.setdefault(value.tag, []).append((event.step, value.tensor.string_val[0].decode("utf-8")))
            elif value.tensor.float_val:
                scalars[(value.tag, event.step)] = value.tensor.float_val[0]
    return scalars, texts


# ----------------------------------------------------------------------------- one tiny run, every sink


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    setup = tiny_setup.make_setup(tmp_path_factory.mktemp("logging"))
    module = fake_wandb()
    saved = sys.modules.get("wandb")
    sys.modules["wandb"] = module
    try:
        config = tiny_setup.tiny_config(setup, "kd", **{
            "train.steps": 4, "eval.every": 2, "logging.every": 1, "logging.tensorboard": True,
            "logging.wandb": True, "logging.wandb_project": "tests"})
        workdir = str(tmp_path_factory.mktemp("run"))
        result = trainer.run(config, workdir)
    finally:
        if saved is None:
            sys.modules.pop("wandb")
        else:
            sys.modules["wandb"] = saved
    return config, result, module.runs


@pytest.mark.slow
def test_wandb_gets_the_same_scalars_as_metrics_jsonl(logged_run):
    config, result, runs = logged_run
    (run,) = runs
    assert run.init_kwargs["project"] == "tests" and run.init_kwargs["resume"] == "allow"
    assert run.init_kwargs["name"] == os.path.basename(result.workdir) and run.init_kwargs["entity"] is None
    assert run.init_kwargs["id"] == open(os.path.join(result.workdir, "wandb_run_id")).read().strip()
    assert ("*", "step") in run.defined and run.finished
    saved = json.load(open(os.path.join(result.workdir, "config.json")))
    assert dict(run.config) == saved["config"]
    records = [r for r in read_metrics(os.path.join(result.workdir, "metrics.jsonl")) if r["split"] in ("train", "eval")]
    scalars = [entry for entry in run.logged if not any(isinstance(v, FakeTable) for v in entry.values())]
    assert len(scalars) == len(records) == 4 + 2
    for record, entry in zip(records, scalars):
        expected = {f"{record['split']}/{k}": v for k, v in record.items() if k not in ("step", "split", "time")}
        assert entry == {**expected, "step": record["step"]}
    samples = [(entry["step"], entry["eval/samples"]) for entry in run.logged if "eval/samples" in entry]
    assert [step for step, _ in samples] == [2, 4]
    table = samples[-1][1]
    assert table.columns == ["prompt", "reference", "prediction"] and 1 <= len(table.data) <= 5
    assert table.data[0][1] == tiny_setup.arithmetic_records(8, seed=1)[0]["response"]


@pytest.mark.slow
def test_tensorboard_gets_the_scalars_the_config_and_samples(logged_run):
    config, result, _ = logged_run
    scalars, texts = scalars_and_texts(tensorboard_events(os.path.join(result.workdir, "tensorboard")))
    records = [r for r in read_metrics(os.path.join(result.workdir, "metrics.jsonl")) if r["split"] in ("train", "eval")]
    for record in records:
        for key, value in record.items():
            if key not in ("step", "split", "time"):
                np.testing.assert_allclose(scalars[(f"{record['split']}/{key}", record["step"])], value, rtol=1e-6)
    (config_text,) = [text for tag, entries in texts.items() if tag.startswith("config") for _, text in entries]
    assert "    optimizer.learning_rate = 0.003" in config_text
    assert "# Peak learning rate of the student (AdamW)." in config_text
    assert "method.divergence = 'forward_kl'" in config_text and "# Any jdistill.losses divergence name." in config_text
    sample_entries = [entry for tag, entries in texts.items() if tag.startswith("eval/samples") for entry in entries]
    assert sorted(step for step, _ in sample_entries) == [2, 4]
    text = sample_entries[-1][1]
    assert text.startswith("| prompt | reference | prediction |\n|---|---|---|\n| ")
    assert tiny_setup.arithmetic_records(8, seed=1)[0]["response"] in text


@pytest.mark.slow
def test_the_run_records_its_loss_terms_and_draws_them(logged_run):
    _, result, _ = logged_run
    records = read_metrics(os.path.join(result.workdir, "metrics.jsonl"))
    named = [r for r in records if r["split"] == "loss_terms"]
    assert len(named) == 1 and named[0]["step"] == 1 and named[0]["names"] == ["ce", "kd"]
    assert report.loss_terms(records) == ["ce", "kd"]
    figure = report.curves_figure(records)
    titles = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert [line.get_label() for line in titles["loss terms (train)"].get_lines()] == ["ce", "kd"]
    assert "learning rate" in titles and "eval ROUGE-L" in titles


def test_wandb_needs_the_package(tmp_path, monkeypatch):
    from jdistill.engine.wandb_logger import WandbLogger

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"logging.wandb=true needs the wandb package: pip install 'jdistill\[wandb\]'"):
        WandbLogger(base_config("kd").logging, str(tmp_path), {}, resumed=False)


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    from jdistill.engine.wandb_logger import WandbLogger

    module = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    settings = base_config("kd").logging
    first = WandbLogger(settings, str(tmp_path), {"a": 1}, resumed=False)
    resumed = WandbLogger(settings, str(tmp_path), {"a": 2}, resumed=True)
    fresh = WandbLogger(settings, str(tmp_path), {"a": 3}, resumed=False)
    ids = [run.init_kwargs["id"] for run in module.runs]
    assert ids[0] == ids[1] != ids[2] and all(len(i) == 8 for i in ids)
    writer = MetricsWriter(str(tmp_path), tensorboard=False, wandb=first)
    writer.write(3, {"loss": 1.5}, split="train")
    writer.write_event(3, "config_change", {"changed": {"optimizer.learning_rate": [1e-5, 2e-5]}})
    writer.close()
    assert module.runs[0].logged[0] == {"train/loss": 1.5, "step": 3}
    event = module.runs[0].logged[1]["events/config_change"]
    assert event.data == [["changed", repr({"optimizer.learning_rate": [1e-5, 2e-5]})]] and module.runs[0].finished
    del resumed, fresh


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (the 'wandb' extra)")
def test_the_real_wandb_package_offline(tmp_path, monkeypatch):
    from jdistill.engine.wandb_logger import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    writer = MetricsWriter(str(tmp_path), tensorboard=False,
                           wandb=WandbLogger(base_config("kd").logging, str(tmp_path), {"x": 1}, resumed=False))
    writer.write(1, {"loss": 2.0}, split="train")
    writer.write_samples(1, [{"prompt": "p", "reference": "r", "prediction": "q"}])
    writer.close()
    assert glob.glob(str(tmp_path / "wandb" / "offline-run-*"))


# ----------------------------------------------------------------------------- the curves


def _records():
    records = [{"step": 0, "split": "loss_terms", "names": ["ce", "kd", "aligned"]}]
    for step in range(1, 7):
        records.append({"step": step, "split": "train", "loss": 3.0 / step, "ce": 2.0 / step, "kd": 1.0 / step,
                        "aligned": 0.5, "grad_norm": 1.0, "finite": 1.0, "data_source": 1.0,
                        "learning_rate": 1e-3 * step / 6, "tokens_per_s": 100.0})
    for step in (3, 6):
        records.append({"step": step, "split": "eval", "loss": 2.0 / step, "ce": 1.5 / step, "kd": 0.5 / step,
                        "student_ce": 1.5 / step, "rougeL": 10.0 * step, "exact_match": 5.0 * step})
    return records


def test_the_curves_show_terms_learning_rate_and_references():
    references = {"teacher (test split)": {"rougeL": 73.1, "exact_match": 70.0},
                  "sft": {"rougeL": 57.3, "exact_match": 45.7, "student_ce": 0.4}}
    figure = report.curves_figure(_records(), references=references)
    axes = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert set(axes) == {"loss", "loss terms (train)", "learning rate", "eval student CE",
                         "eval ROUGE-L", "eval exact match"}

    def lines(title):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes[title].get_lines()}

    loss = lines("loss")
    assert set(loss) == {"train loss", "eval loss"} and loss["eval loss"] == ([3, 6], [2.0 / 3, 2.0 / 6])
    terms = lines("loss terms (train)")
    assert list(terms) == ["ce", "kd", "aligned"]  # the method's terms, not the engine's or the feed's keys
    assert terms["ce"] == (list(range(1, 7)), [2.0 / s for s in range(1, 7)])
    np.testing.assert_allclose(lines("learning rate")["learning rate"][1], [1e-3 * s / 6 for s in range(1, 7)])
    rouge = lines("eval ROUGE-L")
    assert rouge["this run"] == ([3, 6], [30.0, 60.0])
    assert rouge["teacher (test split)"][1] == [73.1, 73.1] and rouge["sft"][1] == [57.3, 57.3]
    assert set(lines("eval student CE")) == {"this run", "sft"}
    assert all(axes[t].get_legend() is not None for t in axes)


def test_loss_terms_without_a_record_are_the_train_metrics_the_evaluations_share():
    records = [r for r in _records() if r["split"] != "loss_terms"]
    assert report.loss_terms(records) == ["ce", "kd"]


def test_reference_runs_read_an_earlier_run_and_evaluate_results(tmp_path):
    sft = tmp_path / "sft"
    sft.mkdir()
    writer = MetricsWriter(str(sft), tensorboard=False)
    writer.write(5, {"loss": 1.0, "student_ce": 0.9, "rougeL": 40.0}, split="eval")
    writer.write(10, {"loss": 0.8, "student_ce": 0.7, "rougeL": 50.0, "exact_match": 30.0}, split="eval")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"results": [
        {"model": "teacher", "rougeL_greedy": 70.0, "exact_match_greedy": 60.0, "ce": 0.5, "rougeL_sampled": 1.0},
        {"model": "sft", "rougeL_greedy": 50.0, "exact_match_greedy": 30.0, "ce": 0.7}]}))
    references = report.reference_runs(f"SFT={sft},eval={scores}")
    assert references == {
        "SFT": {"loss": 0.8, "student_ce": 0.7, "rougeL": 50.0, "exact_match": 30.0},
        "eval: teacher": {"rougeL": 70.0, "exact_match": 60.0, "student_ce": 0.5},
        "eval: sft": {"rougeL": 50.0, "exact_match": 30.0, "student_ce": 0.7}}
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in _records())
    report.write_report(str(workdir), title="t", summary={}, results=[], references=references)
    assert report.load_references(str(workdir)) == references
    assert report.add_references(str(workdir), {"teacher": {"rougeL": 80.0}}) == str(workdir / "curves.png")
    assert set(report.load_references(str(workdir))) == set(references) | {"teacher"}
