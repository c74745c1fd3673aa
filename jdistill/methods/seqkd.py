"""SeqKD and black-box distillation: fine-tune the student on a teacher's responses.

Sequence-level KD (Kim & Rush, 2016): the teacher answers the training
prompts (``jdistill.generate``; greedy by default, a chain-of-thought template
optional, so that the teacher's rationale and answer become the target), and
the student is trained with NLL on those responses. The teacher is not loaded
during training.

Black-box distillation is the same with responses produced elsewhere (an
API-only teacher): ``teacher_data.responses_file`` points at a JSONL of
``{prompt, response}`` records and no teacher model is needed at all.
"""

from __future__ import annotations

import os

import ml_collections

from jdistill.engine import console
from jdistill.methods.base import Method
from jdistill.methods.sft import make as make_sft

RESPONSES_FILE = "teacher_responses.jsonl"


def generation_config(config: ml_collections.ConfigDict, output_path: str) -> ml_collections.ConfigDict:
    """The ``jdistill.generate`` config that answers ``config``'s training prompts with its teacher."""
    from jdistill.teacher_data.defaults import base_config

    g = base_config()
    g.teacher.path = config.teacher.path
    g.teacher.tokenizer = config.teacher.tokenizer
    g.teacher.param_dtype = config.teacher.param_dtype
    g.teacher.compute_dtype = config.teacher.compute_dtype
    g.data.prompt_files = config.data.train_files
    g.data.format = config.data.format
    g.data.prompt_template = config.data.prompt_template
    g.data.cot_template = config.teacher_data.cot_template
    g.data.max_prompt_len = config.data.max_prompt_len
    g.generation.batch_size = config.teacher_data.batch_size
    g.generation.max_new_tokens = config.teacher_data.max_new_tokens
    g.generation.temperature = config.teacher_data.temperature
    g.generation.top_p = config.teacher_data.top_p
    g.generation.seed = config.train.seed
    g.output.path = output_path
    for axis in ("data", "fsdp", "tensor"):
        g.mesh[axis] = config.mesh[axis]
    return g


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Points the training data at the teacher's responses, generating them if needed.

    Generation writes ``workdir/teacher_responses.jsonl`` and resumes it: a rerun
    answers only the prompts still missing.
    """
    train_on_teacher_responses(config, workdir)


def train_on_teacher_responses(
    config: ml_collections.ConfigDict, workdir: str, *, file_name: str = RESPONSES_FILE,
    num_topk_logprobs: int = 0, label: str = "SeqKD",
) -> None:
    """:func:`prepare`, also for sparse KD: ``num_topk_logprobs > 0`` stores the
    teacher's top-k log-probs with each response (into ``workdir/file_name``)."""
    if config.teacher_data.responses_file:
        path = config.teacher_data.responses_file
        if not os.path.exists(path):
            raise FileNotFoundError(f"teacher_data.responses_file {path!r} does not exist.")
        console.info(f"{label}: training on the responses in {path} (no teacher model used)")
    else:
        if not config.teacher.path:
            raise ValueError(
                f"{label} needs a teacher to answer the prompts (--config.teacher.path=DIR) or responses written "
                "elsewhere (--config.teacher_data.responses_file=FILE.jsonl)."
            )
        from jdistill import teacher_data

        path = os.path.join(workdir, file_name)
        os.makedirs(workdir, exist_ok=True)
        console.info(f"{label}: the teacher answers the training prompts into {path}")
        generation = generation_config(config, path)
        generation.generation.num_topk_logprobs = int(num_topk_logprobs)
        teacher_data.run(generation)
    config.data.train_files = path
    config.data.format = "auto"  # {prompt, response} (prompt template applied) or chat {messages} records
    config.data.prompt_template = ""


def make(config: ml_collections.ConfigDict) -> Method:
    sft = make_sft(config)
    return Method(name="seqkd", loss=sft.loss, needs_teacher=False, prepare=prepare)
