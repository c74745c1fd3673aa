"""Package-level promises of jdistill.losses: light imports and runnable docstring examples.

The examples themselves run as doctests that pytest collects from ``jdistill/losses``
(``--doctest-modules`` and ``testpaths`` in ``pytest.ini``).
"""

import subprocess
import sys

import jdistill.losses


def test_importing_losses_needs_only_jax():
    code = (
        "import sys, jdistill.losses; "
        "heavy = [m for m in ('flax', 'transformers', 'datasets', 'torch', 'optax', 'orbax') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_pytest_collects_the_docstring_examples(pytestconfig):
    """The examples run as doctests collected by pytest itself (pytest.ini), with no arguments as in CI."""
    assert pytestconfig.option.doctestmodules
    assert "jdistill/losses" in pytestconfig.getini("testpaths")
    assert "ELLIPSIS" in pytestconfig.getini("doctest_optionflags")


def test_every_public_kernel_has_an_example():
    for name in ("forward_kl", "reverse_kl", "js_divergence", "generalized_jsd", "skew_forward_kl",
                 "skew_reverse_kl", "total_variation", "adaptive_kl", "token_mean", "sequence_mean",
                 "cald", "cross_model_attention", "rkd_distance_loss", "rkd_angle_loss",
                 "similarity_preserving_loss", "fitnets_hint_loss", "minilm_attention_loss",
                 # cross-vocabulary kernels
                 "uld_distance", "sorted_l1_distance", "sorted_probs_desc", "pad_vocabulary", "gather_positions",
                 "project_teacher_logits", "mined_kd", "segment_log_mean_exp", "segment_chain_rule", "merge_spans",
                 "teacher_segments", "unmatched_ids", "gold_distance", "bucket_distance"):
        doc = getattr(jdistill.losses, name).__doc__
        assert ">>>" in doc, name
