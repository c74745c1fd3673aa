"""A tiny cross-vocabulary case for method tests: two real tokenizers, a collated batch, random models.

The student's tokenizer is tiny_setup's word-level one (with a BOS); the
teacher's splits numbers into digits and has no BOS, so responses with
two-digit numbers tokenize differently on the two sides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jdistill import data
from jdistill.engine.defaults import base_config
from jdistill.methods import DataContext, make_method
from tests.engine import tiny_setup
from tests.methods import views

RECORDS = [
    ("what is 7 plus 8 ?", "it is 15 ."),
    ("what is 2 plus 3 ?", "it is 5 ."),
    ("what is 9 plus 9 ?", "it is 18 ."),
]


def tokenizers(root):
    texts = [p + " " + r for p, r in RECORDS]
    extra = [str(i) for i in range(19)]
    student = tiny_setup.make_tokenizer(root / "a", texts, extra_words=extra)
    return student, tiny_setup.make_tokenizer_b(root / "b", texts)


def method_config(name, **overrides):
    c = base_config(name).method
    for key, value in overrides.items():
        c[key] = value
    return c


def prepared_batch(method, s_tok, t_tok, workdir, records=RECORDS):
    """Tokenizes ``records`` for both sides, runs the method's host hook, and collates one batch."""
    texts = [data.TextExample(f"r{i}", p, r) for i, (p, r) in enumerate(records)]
    examples, _ = data.tokenize_examples(texts, s_tok, max_len=32, max_prompt_len=16, teacher_tokenizer=t_tok)
    context = DataContext(base_config(), str(workdir), s_tok, t_tok, "train")
    examples = method.prepare_examples(examples, context)
    batch = data.collate(examples, buckets=(16,), pad_id=s_tok.pad_token_id, teacher_pad_id=t_tok.pad_token_id)
    return {k: np.asarray(v) for k, v in batch.items()}


def random_models(seed, batch, s_vocab, t_vocab, s_extra_rows=0):
    """Random ``views`` sides shaped for ``batch`` (the student head may have padded rows).

    Drawn with numpy (jax.random's first compile costs seconds on a busy CPU).
    """
    rng = np.random.default_rng(seed)
    b, t = batch["input_ids"].shape
    tt = batch["teacher_input_ids"].shape[1]

    def side(length, dim, vocab):
        draw = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
        return {"hidden": draw(b, length, dim), "head": draw(dim, vocab), "embed": draw(vocab, dim)}

    return side(t, 6, s_vocab + s_extra_rows), side(tt, 8, t_vocab)


def make(name, **overrides):
    return make_method(method_config(name, **overrides))


def softmax(z):
    z = np.asarray(z, np.float64)
    finite = np.isfinite(z)
    e = np.where(finite, np.exp(z - z[finite].max()), 0.0)
    return e / e.sum()


def jitted_loss(method):
    """``f(batch, student_side, teacher_side, n) -> (loss, metrics)``, compiled once (eager ops are slow)."""

    @jax.jit
    def run(batch, student, teacher, n):
        return method.loss({}, batch, views.view(student), views.view(teacher), views.context(n))

    return run
