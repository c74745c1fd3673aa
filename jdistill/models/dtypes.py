"""The floating-point dtypes a model may store parameters in or compute in.

Dtypes are named by strings in configurations (``"float32"``, ``"bfloat16"``,
``"float16"``) so that a :class:`~jdistill.models.config.DecoderConfig` stays
hashable and serialisable. :func:`resolve_dtype` turns a name (or any value
``jnp.dtype`` accepts) into a NumPy/JAX dtype and rejects everything else with
an error that lists the valid names.
"""

import jax.numpy as jnp
import numpy as np

from jdistill.models.errors import ModelConfigError

# Supported floating-point dtypes, by canonical name.
DTYPES = {
    "float32": jnp.dtype(jnp.float32),
    "bfloat16": jnp.dtype(jnp.bfloat16),
    "float16": jnp.dtype(jnp.float16),
}

# Spellings found in Hugging Face configs (``torch_dtype``/``dtype``) and in
# user code, mapped to the canonical names above.
_ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "float": "float32",
}


def canonical_dtype_name(dtype) -> str:
    """Returns the canonical name (a key of ``DTYPES``) of ``dtype``.

    Args:
        dtype: a name such as ``"bfloat16"``/``"bf16"``/``"torch.bfloat16"`` or
            a dtype object (``jnp.bfloat16``, ``np.float32``).

    Raises:
        ModelConfigError: ``dtype`` is not one of the supported dtypes.
    """
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        name = _ALIASES.get(name, name)
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in DTYPES:
        raise ModelConfigError(f"unsupported dtype {dtype!r}; valid dtypes are {sorted(DTYPES)}")
    return name


def resolve_dtype(dtype) -> np.dtype:
    """Returns the dtype object for a supported dtype name or object."""
    return DTYPES[canonical_dtype_name(dtype)]
