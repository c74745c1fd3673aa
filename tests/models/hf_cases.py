"""Tiny random Hugging Face configs, one per covered architecture feature."""

import transformers

VOCAB = 128
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    initializer_range=0.1,
    bos_token_id=1,
    eos_token_id=2,
)


def _llama_gqa_bias():
    return transformers.LlamaConfig(**_COMMON, attention_bias=True, mlp_bias=True)


def _llama3_rope_scaling():
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    return transformers.LlamaConfig(**_COMMON, rope_parameters=rope, tie_word_embeddings=True)


def _llama_linear_rope():
    rope = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    return transformers.LlamaConfig(**{**_COMMON, "num_key_value_heads": 4}, rope_parameters=rope)


def _mistral_sliding_window():
    return transformers.MistralConfig(**_COMMON, sliding_window=4)


def _qwen2_tied():
    return transformers.Qwen2Config(**_COMMON, tie_word_embeddings=True)


def _qwen2_sliding_layers():
    # Layer 0 full attention, layer 1 a 4-token window.
    return transformers.Qwen2Config(
        **_COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1
    )


def _qwen3_qk_norm():
    return transformers.Qwen3Config(**{**_COMMON, "num_key_value_heads": 1}, head_dim=24)


def _gpt2():
    return transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=64,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
    )


def _gemma2():
    # 4 layers: local (4-token window) and global alternate; head_dim != d / H and
    # query_pre_attn_scalar != head_dim; small soft-caps so that both bite.
    return transformers.Gemma2Config(
        **{**_COMMON, "num_hidden_layers": 4},
        head_dim=24,
        query_pre_attn_scalar=20,
        sliding_window=4,
        attn_logit_softcapping=1.0,
        final_logit_softcapping=2.0,
    )


def _gemma3():
    # 6 layers: the default 5:1 pattern (layers 0-4 local, 5 global); local rope base
    # 10k, global 1M with linear scaling x8; q/k norms; untied head.
    rope = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    return transformers.Gemma3TextConfig(
        **{**_COMMON, "num_hidden_layers": 6},
        head_dim=24,
        query_pre_attn_scalar=20,
        sliding_window=4,
        rope_parameters=rope,
        final_logit_softcapping=2.0,
        tie_word_embeddings=False,
    )


def perturb_norm_weights(model):
    """Random RMSNorm weights: Gemma initialises them at 0 (``1 + w``), which would hide swapped norms."""
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


# Run on the freshly initialised transformers model of a case, before it is saved.
HF_CASE_SETUP = {"gemma2": perturb_norm_weights, "gemma3": perturb_norm_weights}


# Tiny HF configs by case name; together they cover GQA (and MQA), tied and
# untied heads, q/k/v(+o, MLP) biases, q/k norm, llama3 and linear rope
# scaling, sliding windows (on all layers or some), GPT-2's learned
# positions, Conv1D weights and LayerNorm, and Gemma 2/3 (soft-caps, post-norms,
# (1 + w) norms, scaled embeddings, GeGLU, per-layer-type rope).
HF_CASES = {
    "llama_gqa_bias": _llama_gqa_bias,
    "llama3_rope_scaling": _llama3_rope_scaling,
    "llama_linear_rope": _llama_linear_rope,
    "mistral_sliding_window": _mistral_sliding_window,
    "qwen2_tied": _qwen2_tied,
    "qwen2_sliding_layers": _qwen2_sliding_layers,
    "qwen3_qk_norm": _qwen3_qk_norm,
    "gpt2": _gpt2,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
}
