"""Teacher data generation for black-box distillation and SeqKD.

``python -m jdistill.generate --config=configs/generate.py``: a teacher
answers the prompts of a dataset and :func:`run` writes ``{prompt, response}``
JSONL records (plus the teacher's top-k log-probabilities when asked) that
the training entry point reads. See ``docs/sampling.md``.
"""

from jdistill.teacher_data.run import GenerationSummary, run, validate
from jdistill.teacher_data.teacher import TeacherConfigError, load_teacher

__all__ = ["GenerationSummary", "TeacherConfigError", "load_teacher", "run", "validate"]
