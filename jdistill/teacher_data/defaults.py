"""The teacher-data generation config with its defaults, one comment per field.

``configs/generate.py`` and SeqKD (:mod:`jdistill.methods.seqkd`) both start
from :func:`base_config`.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.teacher = ml_collections.ConfigDict()
    c.teacher.path = ""  # Required: Hugging Face directory (config.json, *.safetensors, tokenizer).
    c.teacher.tokenizer = ""  # Tokenizer directory; empty = teacher.path.
    c.teacher.param_dtype = "bfloat16"  # Dtype the weights are stored in on device ('float32' on CPU is faster).
    c.teacher.compute_dtype = "bfloat16"  # Dtype of the activations.

    c.data = ml_collections.ConfigDict()
    c.data.prompt_files = ""  # Comma-separated local json/jsonl/parquet files with the prompts.
    c.data.format = "auto"  # 'auto' | 'prompt_response' | 'dolly' | 'messages' (see jdistill.data.prompts).
    c.data.prompt_field = "prompt"  # Prompt field of 'prompt_response' records.
    c.data.id_field = "id"  # Field with a record's id; records without one use their index.
    c.data.prompt_template = ""  # Format string with {prompt} or {instruction}/{context}; empty = default.
    c.data.cot_template = ""  # Chain-of-thought template with {prompt}, e.g. "{prompt}\nThink step by step."
    c.data.chat_template = "auto"  # 'auto' (when the tokenizer has one) | 'on' | 'off'.
    c.data.max_prompt_len = 256  # Longer prompts (in tokens, after templates) are skipped and counted.
    c.data.max_prompts = 0  # Answer only the first N prompts; 0 = all.

    c.generation = ml_collections.ConfigDict()
    c.generation.batch_size = 16  # Prompts per batch (a multiple of mesh.data x mesh.fsdp).
    c.generation.buckets = ""  # Comma-separated prompt lengths to pad to; empty = powers of two (min 16).
    c.generation.max_new_tokens = 256  # Response length limit (a response that hits it has stop='length').
    c.generation.temperature = 1.0  # 0 = greedy.
    c.generation.top_k = 0  # Keep the k most likely tokens; 0 = off.
    c.generation.top_p = 1.0  # Nucleus threshold; 1 = off.
    c.generation.min_p = 0.0  # Drop tokens below min_p x the top probability; 0 = off.
    c.generation.eos_ids = ""  # Comma-separated stop ids; empty = tokenizer + generation_config.json + config.
    c.generation.num_topk_logprobs = 0  # Also store the teacher's top-k log-probs per response token (output.topk_dir); 0 = off.
    c.generation.seed = 0  # Sampling seed (each batch folds in its first prompt's id).
    c.generation.max_batches = 0  # Stop after this many batches (a re-run continues); 0 = all.

    c.output = ml_collections.ConfigDict()
    c.output.path = ""  # Required: the JSONL file to append to (resumed when it exists).
    c.output.keep_cot_in_prompt = False  # Store the prompt with the chain-of-thought template applied.
    c.output.topk_dir = ""  # With num_topk_logprobs: the top-k store (jdistill.data.topk_store); empty = output.path minus .jsonl plus .topk.
    c.output.topk_logprobs_dtype = "float16"  # 'float16' (2 bytes per log-prob) | 'float32'.
    c.output.topk_shard_tokens = 262144  # Response tokens per store shard; the JSONL lines follow each shard's commit.

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel axis size; -1 = all devices left over.
    c.mesh.fsdp = 1  # Parameter-sharding (FSDP) axis size.
    c.mesh.tensor = 1  # Tensor-parallel axis size (heads, MLP, vocabulary).
    return c
