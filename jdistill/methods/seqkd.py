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

import dataclasses
import os

import ml_collections

from jdistill import console
from jdistill.methods import sft
from jdistill.methods.base import DataSpec, Method, ModelFacts
from jdistill.methods.settings import LossSettings, check_range, setting

RESPONSES_FILE = "teacher_responses.jsonl"


@dataclasses.dataclass(frozen=True)
class TeacherDataSettings:
    """How the teacher answers the training prompts before training (or where its answers already are)."""

    responses_file: str = setting("", "JSONL of {prompt, response} written elsewhere (black-box teacher); empty = generate.")
    cot_template: str = setting("", "Chain-of-thought template with {prompt} for the teacher; empty = none.")
    max_new_tokens: int = setting(128, "Teacher response length limit.")
    temperature: float = setting(0.8, "Teacher sampling temperature (DistiLLM-2's 0.8); 0 = greedy.")
    top_p: float = setting(0.95, "Nucleus threshold of the teacher's sampling (DistiLLM-2's 0.95).")
    batch_size: int = setting(32, "Prompts per generation batch.")

    def __post_init__(self):
        check_range("teacher_data.max_new_tokens", self.max_new_tokens, 1)
        check_range("teacher_data.temperature", self.temperature, 0.0)
        check_range("teacher_data.top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("teacher_data.batch_size", self.batch_size, 1)


@dataclasses.dataclass(frozen=True)
class Settings(LossSettings):
    """SeqKD: NLL on the teacher's responses to the training prompts."""

    teacher_data: TeacherDataSettings = setting(factory=TeacherDataSettings, help="The teacher's responses.")


def generation_config(config: ml_collections.ConfigDict, teacher_data: TeacherDataSettings, output_path: str,
                      num_topk_logprobs: int = 0, output: dict | None = None) -> ml_collections.ConfigDict:
    """The ``jdistill.generate`` config that answers ``config``'s training prompts with its teacher.

    ``output``: further ``output.*`` settings (the top-k store's directory, dtype, shard size).
    """
    from jdistill.teacher_data.defaults import base_config

    g = base_config()
    g.teacher.path = config.teacher.path
    g.teacher.tokenizer = config.teacher.tokenizer
    g.teacher.param_dtype = config.teacher.param_dtype
    g.teacher.compute_dtype = config.teacher.compute_dtype
    g.data.prompt_files = config.data.train_files
    g.data.format = config.data.format
    g.data.prompt_template = config.data.prompt_template
    g.data.cot_template = teacher_data.cot_template
    g.data.max_prompt_len = config.data.max_prompt_len
    g.generation.batch_size = teacher_data.batch_size
    g.generation.max_new_tokens = teacher_data.max_new_tokens
    g.generation.temperature = teacher_data.temperature
    g.generation.top_p = teacher_data.top_p
    g.generation.seed = config.train.seed
    g.generation.num_topk_logprobs = int(num_topk_logprobs)
    g.output.path = output_path
    for key, value in (output or {}).items():
        g.output[key] = value
    for axis in ("data", "fsdp", "tensor"):
        g.mesh[axis] = config.mesh[axis]
    return g


def teacher_responses(
    config: ml_collections.ConfigDict, workdir: str, teacher_data: TeacherDataSettings, *,
    file_name: str = RESPONSES_FILE, num_topk_logprobs: int = 0, label: str = "SeqKD", output: dict | None = None,
) -> DataSpec:
    """Where the teacher's responses to the training prompts are, generating them if needed.

    Generation writes ``workdir/file_name`` and resumes it: a rerun answers only
    the prompts still missing. ``num_topk_logprobs > 0`` also stores the
    teacher's top-k log-probs of each response in a top-k store (sparse KD;
    ``output`` sets its ``output.topk_*`` settings). The records are
    ``{prompt, response}`` (prompt template applied) or chat ``{messages}``.
    """
    if teacher_data.responses_file:
        path = teacher_data.responses_file
        if not os.path.exists(path):
            raise FileNotFoundError(f"method.teacher_data.responses_file {path!r} does not exist.")
        console.info(f"{label}: training on the responses in {path} (no teacher model used)")
    else:
        if not config.teacher.path:
            raise ValueError(
                f"{label} needs a teacher to answer the prompts (--config.teacher.path=DIR) or responses written "
                "elsewhere (--config.method.teacher_data.responses_file=FILE.jsonl)."
            )
        from jdistill import teacher_data as generation

        path = os.path.join(workdir, file_name)
        os.makedirs(workdir, exist_ok=True)
        console.info(f"{label}: the teacher answers the training prompts into {path}")
        generation.run(generation_config(config, teacher_data, path, num_topk_logprobs, output))
    return DataSpec(train_files=path, format="auto", prompt_template="")


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    def prepare(config, workdir):
        return teacher_responses(config, workdir, settings.teacher_data)

    return Method(name="seqkd", loss=sft.make(settings, facts).loss, needs_teacher=False, prepare=prepare,
                  packable=True)
