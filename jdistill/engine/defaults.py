"""The shared training configuration with its defaults, one comment per field.

Every file in ``configs/`` starts from :func:`base_config` with its method's
name: the groups here are what every method shares; the ``method`` group holds
that method's own settings, declared in its module (:mod:`jdistill.methods`).
Every key can be overridden from the command line (``--config.train.steps=100``,
``--config.method.skew_alpha=0.2``).
"""

from __future__ import annotations

import difflib

import ml_collections

from jdistill import methods


def base_config(method: str) -> ml_collections.ConfigDict:
    """Every shared setting at its default, and the ``method`` group of method ``method``."""
    c = ml_collections.ConfigDict()

    c.teacher = ml_collections.ConfigDict()
    c.teacher.path = ""  # Hugging Face directory (config.json + *.safetensors) of the teacher.
    c.teacher.tokenizer = ""  # Tokenizer directory; empty = teacher.path.
    c.teacher.param_dtype = "bfloat16"  # Dtype the teacher's weights are stored in on device.
    c.teacher.compute_dtype = "bfloat16"  # Dtype of the teacher's activations.
    c.teacher.attention = "auto"  # 'auto' (splash on TPU, cuDNN on GPU, xla_chunked) | 'reference' | 'xla_chunked' | 'cudnn' | 'pallas'.
    c.teacher.layers = "auto"  # Teacher block weights in the step: 'stacked' (lax.scan over [L, ...]) | 'per_layer' (no per-step slicing copies; frozen teacher, off-policy methods) | 'auto' (per_layer on CPU where possible).
    c.teacher.lora = lora_group()  # LoRA of a teacher trained in the step (online distillation): float32 adapters on the teacher.param_dtype base.
    c.teacher.extra_paths = ""  # Comma-separated HF directories of more frozen teachers, for methods that take several (same dtypes and attention as teacher.*).
    c.teacher.extra_tokenizers = ""  # Comma-separated tokenizer directories of those teachers, in order; empty or an empty entry = that teacher's path.

    c.student = ml_collections.ConfigDict()
    c.student.path = ""  # Hugging Face directory of the student's initial weights.
    c.student.tokenizer = ""  # Tokenizer directory; empty = student.path.
    c.student.param_dtype = "float32"  # Master weights (and optimizer state) dtype.
    c.student.compute_dtype = "float32"  # 'bfloat16' for mixed precision with fp32 master weights.
    c.student.remat = "none"  # Rematerialisation of decoder blocks: 'none' | 'full' | 'dots'.
    c.student.attention = "auto"  # Attention implementation, as teacher.attention (docs/models.md).
    c.student.lora = lora_group()  # LoRA of the student: adapters in student.param_dtype on a frozen base.

    c.data = ml_collections.ConfigDict()
    c.data.train_files = ""  # Comma-separated json/jsonl/parquet files (or one hub dataset id).
    c.data.eval_files = ""  # Held-out files; empty = hold out eval_fraction of the training records.
    c.data.eval_fraction = 0.05  # Share of training records held out when eval_files is empty.
    c.data.format = "auto"  # 'auto' | 'dolly' | 'prompt_response' | 'messages'.
    c.data.prompt_template = ""  # Format string with {instruction}/{context} or {prompt}; empty = default.
    c.data.max_len = 512  # Longest prompt + response in tokens.
    c.data.max_prompt_len = 256  # Longest prompt in tokens (prompts keep their end).
    c.data.truncation = "truncate"  # 'truncate' (counted) or 'drop' (counted) for examples that do not fit.
    c.data.on_bad_record = "skip"  # 'skip' (counted, reported) or 'error' for malformed records.
    c.data.buckets = ""  # Comma-separated padded lengths; empty = powers of two up to max_len.
    c.data.packing = "auto"  # Pack examples into shared rows (segment ids): 'auto' (if the method allows), 'on', 'off'.
    c.data.lm_files = ""  # Unlabelled text (.txt, or records with 'text') for an LM term; empty = none.
    c.data.lm_coef = 1.0  # Weight of that LM cross-entropy added to every step's loss (a pretraining-text LM term).

    # The method's own settings, with their defaults and help lines, come from its module
    # (jdistill.methods.<name>.Settings); --config.method.<field> overrides them.
    c.method = methods.method_config(method)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-5  # Peak learning rate of the student (AdamW).
    c.optimizer.method_learning_rate = 1e-3  # Peak learning rate of the method's own parameters.
    c.optimizer.teacher_learning_rate = 0.0  # Peak learning rate of a teacher trained in the step; 0 = learning_rate.
    c.optimizer.warmup_steps = 0  # Linear warmup steps; then cosine decay to min_lr_ratio * peak.
    c.optimizer.warmup_ratio = 0.0  # Warmup as a fraction of the run's steps ; 0 = warmup_steps.
    c.optimizer.min_lr_ratio = 0.0  # Final learning rate / peak (the papers' scripts: cosine to 1e-7, ~0).
    c.optimizer.weight_decay = 0.01  # AdamW decoupled weight decay, kernels and embeddings (the papers' scripts: 0.01).
    c.optimizer.b1 = 0.9  # AdamW beta1.
    c.optimizer.b2 = 0.999  # AdamW beta2.
    c.optimizer.eps = 1e-8  # AdamW epsilon.
    c.optimizer.grad_clip = 1.0  # Global gradient-norm clip; 0 disables it.

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel axis size; -1 = all devices left over.
    c.mesh.fsdp = 1  # Parameter-sharding (FSDP) axis size.
    c.mesh.tensor = 1  # Tensor-parallel axis size (heads, MLP, vocabulary).

    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False  # Call jax.distributed.initialize() (multi-host TPU/GPU).
    c.distributed.coordinator_address = ""  # host:port; empty = discovered (Cloud TPU, Slurm, k8s).
    c.distributed.num_processes = 0  # With coordinator_address: the number of processes.
    c.distributed.process_id = -1  # With coordinator_address: this process's index.

    c.train = ml_collections.ConfigDict()
    c.train.steps = 0  # Training steps (a skipped step counts); 0 = epochs * steps per epoch.
    c.train.epochs = 1  # Used when steps is 0.
    c.train.batch_size = 8  # Global examples per optimizer step (all devices, all micro-batches).
    c.train.grad_accum = 1  # Micro-batches per optimizer step; batch_size must divide evenly.
    c.train.seed = 0  # Seeds initialisation, shuffling and sampling.
    c.train.checkpoint_every = 500  # Steps between checkpoints (and at the end); 0 = only at the end.
    c.train.keep_checkpoints = 2  # Checkpoints kept.
    c.train.checkpoint_dir = ""  # Where checkpoints go (local or gs://...); empty = workdir/checkpoints.
    c.train.max_bad_steps = 5  # Consecutive skipped steps (non-finite loss, gradient or teacher) that stop the run.
    c.train.max_bad_fraction = 0.1  # Share of the run's steps that may be skipped; one more stops the run.
    c.train.export_hf = True  # Write the final student as a Hugging Face directory (workdir/student_hf).
    c.train.xla_options = "auto"  # XLA options of the train step: 'auto' (per-platform defaults, jdistill.engine.compiler_options), 'none', or key=value,key=value.
    c.train.allow_config_change = False  # Resume although the config differs from workdir/config.json (recorded in metrics.jsonl).

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0  # Steps between evaluations; 0 = only at the end; -1 = once per epoch.
    c.eval.batch_size = 8  # Examples per evaluation batch (global).
    c.eval.max_examples = 256  # Evaluate on at most this many held-out examples.
    c.eval.generate = True  # Also sample responses and score ROUGE-L and exact match.
    c.eval.max_new_tokens = 128  # Generation length limit.
    c.eval.temperature = 0.0  # 0 = greedy; the papers sample at 1.0 (top_p 1, top_k 0).
    c.eval.top_p = 1.0  # Nucleus threshold.
    c.eval.top_k = 0  # 0 = no top-k filter.
    c.eval.num_samples = 1  # Sampling seeds averaged (the papers use 5).

    c.logging = ml_collections.ConfigDict()
    c.logging.every = 10  # Steps between metric records (JSONL, TensorBoard).
    c.logging.tensorboard = True  # Also write TensorBoard event files to workdir/tensorboard.
    c.logging.progress_bar = True  # A tqdm progress bar with loss, tokens/s and the time left.
    c.logging.wandb = False  # Also log to Weights & Biases (pip install 'jdistill[wandb]'; WANDB_MODE=offline works offline).
    c.logging.wandb_project = "jdistill"  # W&B project.
    c.logging.wandb_entity = ""  # W&B entity (user or team); empty = your default entity.
    c.logging.wandb_name = ""  # W&B run name; empty = the workdir's name.
    c.logging.reference_runs = ""  # Comma-separated [name=]path of earlier runs' workdirs (or jdistill.evaluate results) drawn as reference lines in curves.png.
    return c


def lora_group() -> ml_collections.ConfigDict:
    """LoRA settings of one model (:mod:`jdistill.models.lora`, docs/training.md); rank 0 = no LoRA.

    The comments are the fields' help lines (:mod:`jdistill.engine.config_help` reads them).
    """
    g = ml_collections.ConfigDict()
    g.rank = 0  # LoRA rank r; 0 = no LoRA (every weight trains). Only the adapters train, sit in the optimizer and are checkpointed.
    g.alpha = 16.0  # LoRA alpha: the update is (alpha / rank) * A @ B (PEFT's lora_alpha).
    g.dropout = 0.0  # Dropout on the adapters' input during training, in [0, 1) (PEFT's lora_dropout).
    g.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Comma-separated regexes matched against the end of dense-layer paths as the sharding rules name them (blocks/attn/q_proj, blocks/mlp/up_proj, lm_head).
    g.base_dtype = ""  # Dtype of the frozen base weights; empty = the model's param_dtype; 'bfloat16' = a QLoRA-style low-precision base.
    g.export = "both"  # 'merged' (<model>_hf with W + (alpha/r) A B folded in) | 'adapter' (a PEFT adapter directory <model>_lora) | 'both'.
    return g


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def unknown_key_message(config: ml_collections.ConfigDict, key: str) -> str | None:
    """``None`` if ``key`` (dotted) exists in ``config``, else an error naming the valid keys."""
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, ml_collections.ConfigDict) and part in node:
            node = node[part]
            continue
        parent = ".".join(parts[:depth])
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        where = f"under '{parent}'" if parent else "at the top level"
        hint = difflib.get_close_matches(part, valid, n=1)
        suggestion = f" Did you mean '{'.'.join(parts[:depth] + [hint[0]])}'?" if hint else ""
        return f"Unknown config key '{key}'.{suggestion} Valid keys {where}: {', '.join(valid) or '(none)'}."
    return None
