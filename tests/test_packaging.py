"""What an install promises: a slim core for the loss kernels, the trainer's stack in an extra, typed."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("flax", "optax", "orbax", "transformers", "datasets", "ml_collections", "torch", "tokenizers",
         "safetensors", "absl", "tqdm", "rouge_score", "tensorboardX", "matplotlib", "chex")


def _setup_lists():
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    lists = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            lists[node.targets[0].id] = [ast.literal_eval(e) for e in node.value.elts]
    return lists


def test_the_core_install_is_jax_and_numpy():
    lists = _setup_lists()
    assert [r.split(">")[0] for r in lists["_CORE"]] == ["jax", "numpy"]
    assert not any(r.startswith("chex") for r in lists["_TRAIN"])  # declared and never imported: dropped


def test_the_kernels_import_with_every_training_package_missing():
    """An import hook makes every package of the train extra unimportable; jdistill.losses still works."""
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import jax.numpy as jnp
from jdistill import losses
s = jnp.zeros((1, 2, 4)); t = jnp.ones((1, 2, 4))
print(float(losses.token_mean(losses.forward_kl(s, t), jnp.ones((1, 2)))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) == 0.0


def test_the_package_is_typed():
    assert os.path.exists(os.path.join(REPO, "jdistill", "py.typed"))
