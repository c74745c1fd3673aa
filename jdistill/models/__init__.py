"""Decoder models: one Flax NNX decoder for every supported family.

Public API:

* :func:`load_pretrained` / :func:`save_pretrained`: Hugging Face directories
  (``config.json`` + safetensors) to and from a :class:`Decoder`;
* :func:`create_model` (alias :func:`from_config`): random initialisation;
* :func:`config_from_hf_dir`: read a directory's :class:`DecoderConfig`;
* :class:`Decoder`, :class:`DecoderOutput`, :class:`KVCache`;
* sharding: :func:`make_mesh`, :class:`ShardingConfig`, :func:`shard_model`,
  :func:`state_shardings`, :func:`model_shardings`, :func:`batch_sharding`,
  :func:`kv_cache_shardings`;
* :data:`FAMILIES`, the registry of supported HF architectures;
* :func:`attend` and :data:`ATTENTION_IMPLEMENTATIONS`: the attention kernel
  interface (``reference``, ``xla_chunked``, ``cudnn``, ``pallas``).

See ``docs/models.md``.
"""

from jdistill.models.attention_impl import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from jdistill.models.attention_impl import attend, segment_ids_from_mask
from jdistill.models.config import DecoderConfig, RopeScaling
from jdistill.models.decoder import Decoder, create_model
from jdistill.models.dtypes import DTYPES
from jdistill.models.errors import CheckpointError, ModelConfigError
from jdistill.models.families import FAMILIES, Family
from jdistill.models.hf_io import config_from_hf_dir, load_pretrained, save_pretrained
from jdistill.models.kv_cache import KVCache, init_kv_cache
from jdistill.models.output import DecoderOutput
from jdistill.models.sharding import (
    MESH_AXES,
    ShardingConfig,
    batch_sharding,
    kv_cache_shardings,
    make_mesh,
    model_shardings,
    shard_model,
    state_shardings,
)

# ``from_config`` reads better at some call sites; same function.
from_config = create_model

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "DTYPES",
    "FAMILIES",
    "MESH_AXES",
    "CheckpointError",
    "Decoder",
    "DecoderConfig",
    "DecoderOutput",
    "Family",
    "KVCache",
    "ModelConfigError",
    "RopeScaling",
    "ShardingConfig",
    "attend",
    "batch_sharding",
    "config_from_hf_dir",
    "create_model",
    "from_config",
    "init_kv_cache",
    "kv_cache_shardings",
    "load_pretrained",
    "make_mesh",
    "model_shardings",
    "save_pretrained",
    "segment_ids_from_mask",
    "shard_model",
    "state_shardings",
]
