"""``python -m jdistill.evaluate``: scores against transformers (PyTorch) and rouge-score computed here."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from rouge_score import rouge_scorer

from jdistill.engine import scoring
from tests.engine import tiny_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    setup = tiny_setup.make_setup(root, n_train=8, n_eval=6)
    records = tiny_setup.arithmetic_records(6, seed=1)
    records[0]["references"] = [records[0]["response"], "it is a number ."]  # a second valid answer
    setup["test"] = str(tiny_setup.write_jsonl(root / "test.jsonl", records))
    setup["records"] = records
    return setup


def config_for(setup, **overrides):
    c = scoring.base_config()
    c.models = f"{setup['teacher']},{setup['student']}"
    c.names = "teacher,student"
    c.reference_teacher = setup["teacher"]
    c.data.files = setup["test"]
    c.data.max_len, c.data.max_prompt_len = 32, 16
    c.generation.max_new_tokens = 6
    c.generation.num_samples = 2
    c.batch_size = 8
    for key, value in overrides.items():
        *groups, field = key.split(".")
        node = c
        for group in groups:
            node = node[group]
        node[field] = value
    return c


def torch_reference(model_dir, teacher_dir, records, tokenizer):
    """CE and KL(teacher || model) per response token, and greedy ROUGE-L (best over references)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    teacher = transformers.AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    ce_sum = kl_sum = tokens = 0.0
    rouge = []
    for record in records:
        prompt = tokenizer(record["prompt"])["input_ids"]
        response = tokenizer(record["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            log_q = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].double(), -1)
            log_p = torch.log_softmax(teacher(ids).logits[0, len(prompt) - 1 : -1].double(), -1)
            targets = torch.tensor(response)
            ce_sum += float(-log_q.gather(1, targets[:, None]).sum())
            kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
            tokens += len(response)
            out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
        references = record.get("references", [record["response"]])
        rouge.append(max(100 * scorer.score(r, text)["rougeL"].fmeasure for r in references))
    return ce_sum / tokens, kl_sum / tokens, float(np.mean(rouge))


def test_scores_match_transformers_and_rouge_score(setup, tmp_path):
    rows = scoring.run(config_for(setup, output=str(tmp_path / "scores.json")))
    assert [r["model"] for r in rows] == ["teacher", "student"]
    for row, path in zip(rows, (setup["teacher"], setup["student"])):
        ce, kl, rouge = torch_reference(path, setup["teacher"], setup["records"], setup["tokenizer"])
        np.testing.assert_allclose([row["ce"], row["teacher_kl"]], [ce, kl], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(row["rougeL_greedy"], rouge, rtol=1e-6)
        assert row["perplexity"] == pytest.approx(np.exp(ce), rel=1e-6) and row["examples"] == 6
        assert len(row["rougeL_per_seed"]) == 2 and row["rougeL_sampled_std"] >= 0
    assert rows[0]["teacher_kl"] == pytest.approx(0.0, abs=1e-6)  # the teacher against itself
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert [r["model"] for r in saved["results"]] == ["teacher", "student"]


def test_the_best_reference_counts():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert scoring.best_rouge_l("it is a number .", ["it is 7 .", "it is a number ."], scorer) == 100.0
    assert scoring.best_rouge_l("banana", ["it is 7 ."], scorer) == 0.0


def test_bad_settings_name_the_fix(setup, tmp_path):
    with pytest.raises(scoring.ScoringError, match="set --config.models"):
        scoring.run(config_for(setup, models=""))
    with pytest.raises(scoring.ScoringError, match="is not a directory"):
        scoring.run(config_for(setup, models=str(tmp_path / "nope"), names=""))
    with pytest.raises(scoring.ScoringError, match="config.names has 1 labels for 2 models"):
        scoring.run(config_for(setup, names="one"))


@pytest.mark.slow
def test_the_command_line_prints_the_table(setup, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jdistill.evaluate", "--config=configs/evaluate.py",
         f"--config.models={setup['student']}", "--config.names=student", f"--config.data.files={setup['test']}",
         "--config.data.max_len=32", "--config.data.max_prompt_len=16", "--config.generation.max_new_tokens=4",
         "--config.generation.num_samples=0", "--config.batch_size=8"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| model | rougeL_greedy | exact_match_greedy | ce | perplexity |" in out.stdout
