"""Exceptions raised by ``jdistill.models`` for bad configurations or checkpoints.

Both derive from :class:`ValueError`, so callers that only care about "the
input was wrong" can catch that.
"""


class ModelConfigError(ValueError):
    """A model configuration is invalid or asks for something unsupported.

    Raised for unknown architectures/``model_type``, unsupported rope scaling,
    unsupported dtype names and inconsistent sizes.
    """


class CheckpointError(ValueError):
    """A checkpoint directory does not match the model it should describe.

    Raised for missing or unexpected tensors, shape mismatches, unsupported
    storage dtypes and missing files. The message names the offending tensor.
    """
