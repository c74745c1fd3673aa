"""Installs jdistill: knowledge distillation of large language models in JAX."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

# Lower bounds are the releases jdistill is tested with; the APIs it relies on
# (jax.make_mesh with axis types, jax.shard_map, flax.nnx, orbax v0 managers,
# transformers without Flax models) are not present in older ones.
#
# The core install is the loss kernels (`jdistill.losses`): jax and numpy only,
# for researchers who import them into their own JAX code. Training, the demo,
# generation and evaluation need the `train` extra.
_CORE = [
    "jax>=0.10",
    "numpy>=1.26",
]

_TRAIN = [
    "flax>=0.12",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12",
    "transformers>=5.0",
    "datasets>=5.0",
    "ml-collections>=1.1",
    "safetensors>=0.6",
    "tokenizers>=0.22",
    "absl-py>=2.1",
    "tqdm>=4.66",  # progress bars
    "rouge-score>=0.1.2",  # ROUGE-L as the DSKD / DistiLLM papers compute it
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.8",  # the report's curves
    "scipy>=1.12",  # the demo's paired confidence interval (already required by jax)
]

_EXTRAS = {
    "train": _TRAIN,
    # torch is pinned: on the project machines `torch==2.13.0` resolves to a
    # local CPU build, while an unpinned requirement pulls a multi-GB CUDA
    # build. It is only used by the tests, as an independent reference.
    # import-linter checks the layer contracts of `.importlinter`.
    "test": _TRAIN + ["pytest>=8", "torch==2.13.0", "import-linter>=2.1", "peft>=0.17"],  # peft: the LoRA adapter export's reference
    # Optional Weights & Biases logging (--config.logging.wandb=true); the suite fakes it when absent.
    "wandb": _TRAIN + ["wandb>=0.19"],
    "tpu": _TRAIN + ["jax[tpu]>=0.10"],
    "cuda": _TRAIN + ["jax[cuda12]>=0.10"],
}

setuptools.setup(
    name="jdistill",
    version="0.1.0",
    description="Knowledge distillation for large language models in JAX/Flax.",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["jdistill", "jdistill.*"]),
    package_data={"jdistill": ["py.typed"]},
    install_requires=_CORE,
    extras_require=_EXTRAS,
)
