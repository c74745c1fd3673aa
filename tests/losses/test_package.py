"""Package-level promises of jdistill.losses: light imports and runnable docstring examples."""

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import jdistill.losses


def test_importing_losses_needs_only_jax():
    code = (
        "import sys, jdistill.losses; "
        "heavy = [m for m in ('flax', 'transformers', 'datasets', 'torch', 'optax', 'orbax') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MODULES = sorted(m.name for m in pkgutil.iter_modules(jdistill.losses.__path__, "jdistill.losses."))


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_kernel_has_an_example():
    for name in ("forward_kl", "reverse_kl", "js_divergence", "generalized_jsd", "skew_forward_kl",
                 "skew_reverse_kl", "total_variation", "adaptive_kl", "token_mean", "sequence_mean",
                 "cald", "cross_model_attention", "rkd_distance_loss", "rkd_angle_loss",
                 "similarity_preserving_loss", "fitnets_hint_loss", "minilm_attention_loss"):
        doc = getattr(jdistill.losses, name).__doc__
        assert ">>>" in doc, name
