"""Issue 18, item 4: the saved config and the resume check, --config.help, the truncation warning,
the demo comparison's inputs, and the real-model presets of every config."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from jdistill import data as data_lib
from jdistill import demo, methods
from jdistill.demo import assets
from jdistill.engine import config_checks, config_file, config_help, presets, run_record, trainer
from jdistill.engine.defaults import base_config
from jdistill.engine.run_setup import ConfigError, warn_truncation
from tests.engine import tiny_setup
from tests.repo_configs import CONFIGS_DIR

REPO = os.path.dirname(CONFIGS_DIR)
TRAINING_CONFIGS = sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                          if f.endswith(".py") and f[:-3] not in ("evaluate", "generate"))
ENV = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}


def load_module(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}_hygiene", os.path.join(CONFIGS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat(config):
    return dict(config_help.flat_items(config))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("hygiene"))


# ----------------------------------------------------------------------------- --config.help


def _defaults_comments_by_regex() -> dict:
    """The reference: each ``c.<group>.<key> = ...  # comment`` line of engine/defaults.py, read as text,
    and each ``g.<key> = ...  # comment`` line (the LoRA group) as ``student.lora.<key>`` / ``teacher.lora.<key>``."""
    path = os.path.join(REPO, "jdistill", "engine", "defaults.py")
    pattern = re.compile(r"^\s*c\.(\w+)\.(\w+) = .*?  # (.+)$")
    lora_pattern = re.compile(r"^\s*g\.(\w+) = .*?  # (.+)$")
    out = {}
    for line in open(path, encoding="utf-8"):
        match = pattern.match(line.rstrip("\n"))
        if match:
            out[f"{match.group(1)}.{match.group(2)}"] = match.group(3).strip()
        match = lora_pattern.match(line.rstrip("\n"))
        if match:
            for model in ("student", "teacher"):
                out[f"{model}.lora.{match.group(1)}"] = match.group(2).strip()
    return out


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
@pytest.mark.parametrize("preset", [None, "real"])
def test_help_prints_every_field_with_its_comment(name, preset):
    config = load_module(name).get_config(preset)
    text = config_help.render(config)
    lines = {line.split(" = ", 1)[0]: line for line in text.splitlines() if " = " in line}
    reference = _defaults_comments_by_regex()
    method_help = {key: help_ for key, _, help_ in methods.settings_help(config.method.name)}
    for key, value in flat(config).items():
        assert key in lines, f"{key} is not printed"
        line = lines[key]
        assert "(no description)" not in line, line
        comment = line.split("  # ", 1)[1]
        if key in reference:
            assert reference[key] in comment, (key, comment)
        elif key in method_help:
            assert method_help[key] and method_help[key] in comment, (key, comment)
        else:
            assert key == "method.name", key
        shown = "<required>" if value is None else repr(value)
        assert line.startswith(f"{key} = {shown}"), line


def test_every_shared_field_has_a_comment_in_defaults():
    reference = _defaults_comments_by_regex()
    assert set(config_help.shared_field_comments()) == set(reference)
    assert all(config_help.shared_field_comments()[k] == v for k, v in reference.items())


@pytest.mark.slow
def test_config_help_on_the_command_line_prints_the_resolved_config_and_exits(tmp_path):
    args = [sys.executable, "-m", "jdistill.main", "--config=configs/kd.py:real", "--config.help",
            "--config.optimizer.learning_rate=1e-4", "--config.method.kd_rate=0.3", f"--workdir={tmp_path / 'w'}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("# configs/kd.py:real with 2 override(s): every field")
    assert any(re.match(r"optimizer\.learning_rate = 0\.0001 +# Peak learning rate of the student \(AdamW\)\. "
                        r"\(default: 1e-05\)$", line) for line in lines)
    assert any(re.match(r"method\.kd_rate = 0\.3 +# Weight of the distillation term", line) for line in lines)
    assert any(re.match(r"teacher\.path = <required> +# REQUIRED: set --config\.teacher\.path\.", line)
               for line in lines)
    assert not os.path.exists(tmp_path / "w")  # nothing was run


# ----------------------------------------------------------------------------- presets


def _short(value: float) -> str:
    """5e-4 as the docstrings write it."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _sentinel(value):
    return {str: "LEAKED", int: -12345, float: -12345.0}[type(value)]


def _marked_demo(monkeypatch):
    """``demo.apply_defaults`` with every value it sets replaced by a sentinel; returns the fields it sets."""
    original = demo.apply_defaults
    touched = {}

    def marked(config):
        before = flat(config)
        config = original(config)
        for key, value in flat(config).items():
            if before[key] != value:
                group, field = key.rsplit(".", 1)
                config[group][field] = _sentinel(value)
                touched[key] = value
        return config

    monkeypatch.setattr(demo, "apply_defaults", marked)
    return touched


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_the_real_preset_replaces_every_demo_setting(name, monkeypatch):
    module = load_module(name)
    demo_config, real = module.get_config(), module.get_config("real")
    assert flat(module.get_config("demo")) == flat(demo_config)
    values = flat(real)
    assert not [k for k, v in values.items() if isinstance(v, str) and v.startswith("demo:")]
    assert values["student.path"] is None and values["data.train_files"] is None  # required
    assert values["teacher.path"] == ("" if name in ("sft", "self_distill") else None)  # no teacher is loaded
    # Every setting the demo sizes for its tiny models is set again by the preset (none leaks through).
    touched = _marked_demo(monkeypatch)
    marked = flat(module.get_config("real"))
    assert len(touched) >= 10
    assert not [k for k in touched if marked[k] in ("LEAKED", -12345)], f"{name}:real keeps demo settings"
    assert values["train.steps"] == 0 and values["train.epochs"] >= 1
    assert values["data.max_len"] >= 512 and values["data.max_prompt_len"] >= 256
    if name != "online_kd":
        assert values["teacher.param_dtype"] == values["teacher.compute_dtype"] == "bfloat16"
    for key in ("method.sampling.max_new_tokens", "method.teacher_data.max_new_tokens"):
        if key in values:
            assert values[key] == 0 or values[key] >= 128, (key, values[key])
    # The learning rate, batch size and epochs are the ones the docstring gives for the preset.
    doc = module.__doc__
    section = doc[doc.index(f"``configs/{name}.py:real``"):]
    words = " ".join(section.split())
    assert f"learning rate {_short(values['optimizer.learning_rate'])}" in words, words[:400]
    assert re.search(rf"\b{values['train.batch_size']} (sequences|prompts) per step", words), words[:400]
    assert re.search(rf"\b{values['train.epochs']} epochs?\b", words), words[:400]
    assert f"--config=configs/{name}.py:real" in words
    # The method settings are the demo config's, except what the preset sizes for real models.
    for key, value in flat(demo_config).items():
        if key.startswith("method.") and "max_new_tokens" not in key and key not in (
                "method.attention_weight", "method.ema_decay"):
            assert values[key] == value, key
    config_checks.validate_config(config_with_paths(real), check_paths=False)


def config_with_paths(config):
    for key in ("student.path", "data.train_files", "teacher.path", "teacher.extra_paths"):
        group, field = key.split(".")
        if config[group][field] is None:
            config[group][field] = "/given"
    return config


def test_an_unknown_preset_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match=r"Unknown config preset 'rael': use --config=configs/<name>.py for the "
                                         r"demo or --config=configs/<name>.py:real for real checkpoints\."):
        load_module("kd").get_config("rael")
    with pytest.raises(SystemExit) as exit_status:
        config_file.exit_on_unknown_override(["main", "--config=configs/kd.py:rael"])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.startswith("jdistill: Unknown config preset 'rael'")
    assert presets.preset(None) == presets.preset("") == "demo"


def test_a_real_preset_without_paths_stops_before_anything_is_loaded(tmp_path):
    config = load_module("kd").get_config("real")
    with pytest.raises(ConfigError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value).startswith(
        "Required settings are not set: data.train_files, student.path, teacher.path. This config has no default "
        "for them")
    assert ("add --config.data.train_files=... --config.student.path=... --config.teacher.path=..."
            in str(error.value))
    assert not os.path.exists(tmp_path / "work")


@pytest.mark.slow
def test_a_real_preset_without_paths_on_the_command_line(tmp_path):
    args = [sys.executable, "-m", "jdistill.main", "--config=configs/sft.py:real", f"--workdir={tmp_path / 'w'}",
            "--config.student.path=/models/student"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert out.returncode == 1
    assert out.stderr.splitlines()[0].startswith(
        "jdistill: error: Required settings are not set: data.train_files. This config has no default for them")


# ----------------------------------------------------------------------------- the saved config


def test_config_hash_and_changed_fields():
    config = base_config("kd")
    as_dict = run_record.plain(config)
    reference = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    assert run_record.config_hash(as_dict) == reference.hexdigest()
    changed = base_config("kd")
    changed.optimizer.learning_rate = 2e-5
    changed.logging.every = 3  # exempt: how the run is watched
    changed.train.allow_config_change = True  # exempt
    changed.method.kd_rate = 0.9
    assert run_record.changed_fields(as_dict, run_record.plain(changed)) == {
        "method.kd_rate": [0.5, 0.9], "optimizer.learning_rate": [1e-5, 2e-5]}
    other = run_record.changed_fields(as_dict, run_record.plain(base_config("sft")))
    assert other["method.name"] == ["kd", "sft"] and other["method.divergence"] == ["forward_kl", "<absent>"]


def test_a_fresh_run_replaces_a_saved_config_without_a_checkpoint(tmp_path):
    run_record.save(str(tmp_path), run_record.plain(base_config("sft")))
    config = base_config("kd")
    assert run_record.check_and_save(config, str(tmp_path), resume_step=None) == {}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["method"]["name"] == "kd" and saved["sha256"] == run_record.config_hash(saved["config"])


@pytest.mark.slow
def test_a_resume_with_another_config_names_the_changes(setup, tmp_path):
    workdir = str(tmp_path / "work")
    settings = {"train.steps": 4, "train.checkpoint_every": 2, "eval.generate": False}
    first = tiny_setup.tiny_config(setup, "kd", **settings)
    trainer.run(first, workdir, max_steps_this_run=2)
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert saved["config"] == json.loads(json.dumps(first.to_dict()))
    assert saved["sha256"] == hashlib.sha256(
        json.dumps(first.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    changed = tiny_setup.tiny_config(setup, "kd", **settings, **{"optimizer.learning_rate": 1e-3,
                                                                   "method.kd_rate": 0.7})
    with pytest.raises(run_record.ConfigChangedError) as error:
        trainer.run(changed, workdir)
    assert str(error.value) == (
        f"The workdir {workdir} holds a run (checkpoint of step 2) started with another config; changed: "
        "method.kd_rate 0.5 -> 0.7, optimizer.learning_rate 0.003 -> 0.001. Resume with the saved config "
        f"({workdir}/config.json), use a new --workdir, or pass --config.train.allow_config_change=true to resume "
        "with the new values (recorded in metrics.jsonl).")

    with changed.unlocked():
        changed.train.allow_config_change = True
    result = trainer.run(changed, workdir)
    assert result.steps == 4
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    change = [r for r in records if r["split"] == "config_change"]
    assert len(change) == 1 and change[0]["step"] == 2
    assert change[0]["changed"] == {"method.kd_rate": [0.5, 0.7], "optimizer.learning_rate": [0.003, 0.001]}
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert saved["config"]["optimizer"]["learning_rate"] == 0.001
    report = open(os.path.join(workdir, "report.md")).read()
    assert "- **config changed on resume**: method.kd_rate 0.5 -> 0.7, optimizer.learning_rate" in report


# ----------------------------------------------------------------------------- truncation


def test_truncation_past_five_percent_is_a_loud_warning(setup, capsys):
    tokenizer = setup["tokenizer"]
    records = tiny_setup.arithmetic_records(40)
    long_prompt = "what is 1 plus 2 ? " * 4
    for record in records[:3]:
        record["prompt"] = long_prompt.strip()  # 3 of 40 (7.5%) do not fit
    examples, _ = data_lib.to_text_examples(records)
    limits = dict(max_len=20, max_prompt_len=12)
    # The reference: which records do not fit, counted with the tokenizer directly.
    too_long = [r for r in records if len(tokenizer(r["prompt"])["input_ids"]) > limits["max_prompt_len"]
                or len(tokenizer(r["prompt"])["input_ids"]) + len(tokenizer(r["response"], add_special_tokens=False)
                                                                 ["input_ids"]) + 1 > limits["max_len"]]
    assert len(too_long) == 3
    kept, stats = data_lib.tokenize_examples(examples, tokenizer, **limits, policy="truncate")
    assert (stats.truncated, stats.dropped, stats.examples, len(kept)) == (3, 0, 40, 40)
    kept, stats = data_lib.tokenize_examples(examples, tokenizer, **limits, policy="drop")
    assert (stats.truncated, stats.dropped, len(kept)) == (0, 3, 37)

    data_config = base_config("kd").data
    data_config.max_len, data_config.max_prompt_len, data_config.truncation = 20, 12, "drop"
    message = warn_truncation("training", stats.truncated, stats.examples, data_config, dropped=stats.dropped)
    assert message == (
        "truncation touched 3 of 40 training records (7.5%: 3 dropped) at data.max_len=20 / data.max_prompt_len=12 "
        "tokens. Raise --config.data.max_len / --config.data.max_prompt_len (or change --config.data.truncation, "
        "now 'drop') unless that is intended.")
    out = capsys.readouterr().out.splitlines()
    assert out == ["[jdistill] " + "!" * 78, f"[jdistill] WARNING: {message}", "[jdistill] " + "!" * 78]
    assert warn_truncation("training", 2, 40, data_config) is None  # 5% is within the few percent allowed
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- the demo comparison


def test_the_demo_comparison_is_skipped_when_its_inputs_are_overridden():
    from jdistill.main import demo_inputs_overridden

    config = load_module("kd").get_config()
    assert demo_inputs_overridden(config, ["main", "--config=configs/kd.py", "--config.train.steps=5"]) == []
    with config.unlocked():
        config.data.train_files = "mine.jsonl"
        config.teacher.path = "demo:teacher_b"  # another demo asset: still the demo
    argv = ["main", "--config=configs/kd.py", "--config.data.train_files=mine.jsonl",
            "--config.teacher.path=demo:teacher_b"]
    assert demo_inputs_overridden(config, argv) == ["data.train_files"]


def _fake_demo_cache(root, setup):
    """A demo cache whose assets are the tiny set-up's (so ``demo:`` paths resolve without building anything)."""
    cache = root / f"demo-{assets.VERSION}"
    (cache / "data").mkdir(parents=True)
    shutil.copytree(setup["teacher"], cache / "teacher")
    shutil.copytree(setup["student"], cache / "student")
    shutil.copytree(setup["student"], cache / "tokenizer_a")  # the student directory holds its tokenizer
    records = tiny_setup.arithmetic_records(48)
    for split, rows in (("train", records), ("validation", tiny_setup.arithmetic_records(8, seed=1)),
                        ("test", tiny_setup.arithmetic_records(8, seed=2))):
        tiny_setup.write_jsonl(cache / "data" / f"{split}.jsonl", rows)
    return root


TINY_OVERRIDES = ["--config.train.steps=2", "--config.train.batch_size=8", "--config.eval.batch_size=8",
                  "--config.eval.max_new_tokens=4", "--config.data.max_len=32", "--config.data.max_prompt_len=16",
                  "--config.data.buckets=16,32", "--config.optimizer.warmup_steps=0", "--config.logging.every=1",
                  "--config.logging.progress_bar=false", "--config.logging.tensorboard=false",
                  "--config.train.checkpoint_every=0", "--config.eval.every=0"]


@pytest.mark.slow
def test_the_demo_comparison_runs_on_the_demo_only(setup, tmp_path):
    """End to end on the command line with a demo cache of tiny models: the comparison (and its reference lines in
    the curves) on the demo's own data; no comparison once the training data is overridden."""
    cache = _fake_demo_cache(tmp_path / "cache", setup)
    env = {**ENV, "JDISTILL_CACHE": str(cache)}
    base = [sys.executable, "-m", "jdistill.main", "--config=configs/kd.py", *TINY_OVERRIDES]
    demo_run = subprocess.run(base + [f"--workdir={tmp_path / 'demo'}"], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=900)
    assert demo_run.returncode == 0, demo_run.stderr[-3000:]
    assert "Held-out demo test split" in demo_run.stdout
    # The paired difference printed under the table is the rows' difference (rounded to 2 decimals each).
    rouge = {row.split("|")[1].strip(): float(row.split("|")[2]) for row in demo_run.stdout.splitlines()
             if row.startswith("| student") or row.startswith("| teacher")}
    paired = re.search(r"Distilled minus SFT-only, paired over the test examples: ([+-][0-9.]+) ROUGE-L "
                       r"\(95% CI ([+-][0-9.]+) to ([+-][0-9.]+), 8 paired examples\)", demo_run.stdout)
    assert paired, demo_run.stdout[-2000:]
    mean, low, high = map(float, paired.groups())
    assert mean == pytest.approx(rouge["student, distilled (kd)"] - rouge["student, SFT only"], abs=0.02)
    assert low <= mean <= high
    references = json.loads((tmp_path / "demo" / "references.json").read_text())
    assert set(references) == {"teacher (test split)", "student, SFT only (test split)"}

    overridden = subprocess.run(base + [f"--workdir={tmp_path / 'mine'}", f"--config.data.train_files={setup['train']}"],
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert overridden.returncode == 0, overridden.stderr[-3000:]
    assert "Held-out demo test split" not in overridden.stdout
    assert ("the demo comparison is skipped: data.train_files set on the command line" in overridden.stdout)
    assert "Demo comparison" not in (tmp_path / "mine" / "report.md").read_text()
