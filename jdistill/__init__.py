"""jdistill: knowledge distillation of large language models in JAX.

Importing the top-level package is cheap and pulls in nothing beyond the
standard library; import the sub-packages you need, e.g. ``jdistill.losses``
(needs only jax).
"""

__version__ = "0.1.0"
