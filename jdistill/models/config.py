"""The one configuration type shared by every decoder family.

A :class:`DecoderConfig` holds every architectural knob the jdistill decoder
understands; each family (``jdistill.models.families``) maps Hugging Face
``config.json`` files to and from it. The config is a frozen, hashable
dataclass so that it can be closed over by ``jax.jit`` and used as a static
argument.
"""

import dataclasses

from jdistill.models.activations import ACTIVATIONS
from jdistill.models.attention_impl import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from jdistill.models.dtypes import canonical_dtype_name
from jdistill.models.errors import ModelConfigError
from jdistill.models.norms import NORMS
from jdistill.models.remat import REMAT_POLICIES

POSITION_EMBEDDINGS = ("rope", "learned")
# Rope types understood by ``jdistill.models.rope`` ("default" means no
# scaling and is represented by ``rope_scaling=None``).
ROPE_SCALING_TYPES = ("linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Rotary-embedding frequency scaling.

    Attributes:
        rope_type: ``"linear"`` (all frequencies divided by ``factor``) or
            ``"llama3"`` (Llama 3.1 wavelength-dependent scaling).
        factor: the scaling factor.
        low_freq_factor: llama3 only.
        high_freq_factor: llama3 only.
        original_max_position_embeddings: llama3 only; the pre-training
            context length.
    """

    rope_type: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None

    def __post_init__(self):
        if self.rope_type not in ROPE_SCALING_TYPES:
            raise ModelConfigError(
                f"unsupported rope scaling type {self.rope_type!r}; supported "
                f"types are {['default', *ROPE_SCALING_TYPES]}"
            )
        if self.rope_type == "llama3":
            missing = [
                name
                for name in (
                    "low_freq_factor",
                    "high_freq_factor",
                    "original_max_position_embeddings",
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise ModelConfigError(f"llama3 rope scaling needs {missing}")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture and numerics of a decoder-only transformer.

    Attributes:
        model_type: the family that reads and writes this model's checkpoints
            (a key of ``jdistill.models.families.FAMILIES``).
        vocab_size: number of token embeddings (``V``).
        hidden_size: model width (``d``).
        num_layers: number of transformer blocks.
        num_heads: query heads (``H``).
        num_kv_heads: key/value heads (``K``); ``H`` must be a multiple.
        head_dim: per-head width (``D``); need not equal ``d / H``.
        mlp_dim: MLP inner width (``F``).
        norm_type: ``"rms"`` (RMSNorm) or ``"layer"`` (LayerNorm with bias).
        norm_eps: epsilon of every norm.
        activation: MLP activation (a key of
            ``jdistill.models.activations.ACTIVATIONS``).
        gated_mlp: ``down(act(gate(x)) * up(x))`` when true, else
            ``down(act(up(x)))``.
        position_embedding: ``"rope"`` or ``"learned"`` (absolute table).
        max_position_embeddings: size of the learned table; informational for
            rope models.
        rope_theta: rope base wavelength.
        rope_scaling: optional :class:`RopeScaling`.
        qkv_bias: biases on the q/k/v projections.
        o_bias: bias on the attention output projection.
        mlp_bias: biases on the MLP projections.
        qk_norm: RMSNorm over ``head_dim`` on queries and keys before rope.
        attention_scale: softmax temperature; ``None`` means ``head_dim**-0.5``.
        tie_word_embeddings: the LM head is the transposed embedding table.
        sliding_window: attention window in tokens (a query attends to the
            ``sliding_window`` most recent positions, itself included), or
            ``None`` for full causal attention.
        sliding_window_layers: per-layer flags saying which layers use the
            window; ``None`` means all layers (when ``sliding_window`` is set).
        local_rope_theta: rope base of the layers that use the sliding window
            (Gemma 3's local layers); ``None`` means every layer uses
            ``rope_theta`` and ``rope_scaling``. When set, the windowed layers
            use ``local_rope_theta`` with ``local_rope_scaling`` and the other
            layers ``rope_theta`` with ``rope_scaling``.
        local_rope_scaling: optional :class:`RopeScaling` of the windowed
            layers (needs ``local_rope_theta``).
        norm_unit_offset: RMSNorms (final, per-block and q/k) multiply by
            ``1 + scale`` instead of ``scale``, and their scales initialise at
            0 (Gemma). RMSNorm only.
        post_norms: each block also normalises the attention output and the
            MLP output before adding them to the residual stream
            (``blocks/attn_post_norm``, ``blocks/mlp_post_norm``; Gemma 2/3).
        scale_embeddings: multiply the token embeddings by
            ``sqrt(hidden_size)`` (rounded to the compute dtype and applied in
            it, as transformers does; Gemma).
        attn_logit_softcap: when set, attention scores are soft-capped,
            ``tanh(s / cap) * cap``, after the scale and before the mask
            (Gemma 2).
        final_logit_softcap: when set, the LM-head logits are soft-capped,
            ``tanh(z / cap) * cap`` (Gemma 2). Losses that compute logits from
            ``hidden_states`` and ``lm_head_weight()`` must apply it too (the
            fused losses take it as ``logit_softcap``).
        bos_token_id, eos_token_id, pad_token_id: special tokens, kept for
            round trips to Hugging Face (``eos_token_id`` may be a tuple).
        init_std: standard deviation of the random initialisation.
        param_dtype: dtype parameters are stored in.
        dtype: dtype activations are computed in (softmax and norms always
            run in float32).
        remat: rematerialisation policy of each block (a key of
            ``jdistill.models.remat.REMAT_POLICIES``).
        attention_impl: how attention is computed (one of
            ``jdistill.models.attention_impl.IMPLEMENTATIONS``): ``"auto"``
            (Pallas splash attention on TPU, cuDNN flash attention on GPU for
            float16/bfloat16, the memory-efficient ``"xla_chunked"``
            otherwise), ``"reference"`` (dense scores), ``"xla_chunked"``,
            ``"cudnn"``, ``"pallas"`` or ``"pallas_interpret"``. Not part of
            the Hugging Face config.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    norm_type: str = "rms"
    norm_eps: float = 1e-6
    activation: str = "silu"
    gated_mlp: bool = True
    position_embedding: str = "rope"
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    attention_scale: float | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    sliding_window_layers: tuple[bool, ...] | None = None
    local_rope_theta: float | None = None
    local_rope_scaling: RopeScaling | None = None
    norm_unit_offset: bool = False
    post_norms: bool = False
    scale_embeddings: bool = False
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    init_std: float = 0.02
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        # Normalise dtype spellings so equal configs compare and hash equal.
        object.__setattr__(self, "param_dtype", canonical_dtype_name(self.param_dtype))
        object.__setattr__(self, "dtype", canonical_dtype_name(self.dtype))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if self.sliding_window_layers is not None:
            object.__setattr__(
                self, "sliding_window_layers", tuple(bool(x) for x in self.sliding_window_layers)
            )
        self._validate()

    def _validate(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "mlp_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelConfigError(f"{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        choices = {
            "norm_type": tuple(NORMS),
            "position_embedding": POSITION_EMBEDDINGS,
            "remat": tuple(REMAT_POLICIES),
            "activation": tuple(ACTIVATIONS),
            "attention_impl": ATTENTION_IMPLEMENTATIONS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ModelConfigError(
                    f"unsupported {name} {getattr(self, name)!r}; valid values are {list(valid)}"
                )
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ModelConfigError(f"sliding_window must be positive, got {self.sliding_window}")
        if (
            self.sliding_window_layers is not None
            and len(self.sliding_window_layers) != self.num_layers
        ):
            raise ModelConfigError(
                f"sliding_window_layers has {len(self.sliding_window_layers)} "
                f"entries for {self.num_layers} layers"
            )
        for name in ("attn_logit_softcap", "final_logit_softcap", "local_rope_theta"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ModelConfigError(f"{name} must be positive or None, got {value!r}")
        if self.local_rope_scaling is not None and self.local_rope_theta is None:
            raise ModelConfigError("local_rope_scaling needs local_rope_theta")
        if self.local_rope_theta is not None and self.position_embedding != "rope":
            raise ModelConfigError("local_rope_theta needs position_embedding='rope'")
        if self.norm_unit_offset and self.norm_type != "rms":
            raise ModelConfigError(f"norm_unit_offset needs norm_type='rms', got {self.norm_type!r}")

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query heads, ``H * D``."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads, ``K * D``."""
        return self.num_kv_heads * self.head_dim

    def layer_uses_window(self) -> tuple[bool, ...]:
        """Per-layer flags: does layer ``i`` use the sliding window?"""
        if self.sliding_window is None:
            return (False,) * self.num_layers
        if self.sliding_window_layers is None:
            return (True,) * self.num_layers
        return self.sliding_window_layers

    def layer_uses_local_rope(self) -> tuple[bool, ...]:
        """Per-layer flags: does layer ``i`` use ``local_rope_theta``/``local_rope_scaling``?"""
        if self.local_rope_theta is None:
            return (False,) * self.num_layers
        return self.layer_uses_window()

    def replace(self, **changes) -> "DecoderConfig":
        """Returns a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
