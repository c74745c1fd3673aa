"""Datasets → token batches for the student (and the teacher when vocabularies differ).

* :mod:`jdistill.data.records`: files → (prompt, response) text, with counted skips;
* :mod:`jdistill.data.tokenize`: text → token ids with the prompt masked out of the loss
  (chat records: every assistant turn trained, :mod:`jdistill.data.chat`);
* :mod:`jdistill.data.batching`: deterministic, bucketed, resumable batches;
* :mod:`jdistill.data.packing`: a batch's examples packed into fewer rows with segment ids;
* :mod:`jdistill.data.topk_store`: a teacher's top-k log-probs per trained token, sharded and memory-mapped.
"""

from jdistill.data.batching import BatchSource, DataPosition, collate, default_buckets, fixed_size_batches
from jdistill.data.packing import PACKING_MODES, collate_packed
from jdistill.data.records import FORMATS, DataError, SkipReport, TextExample, load_records, to_text_examples
from jdistill.data.tokenize import TokenizedExample, TokenizedSide, tokenize_examples

__all__ = [
    "FORMATS",
    "PACKING_MODES",
    "BatchSource",
    "DataError",
    "DataPosition",
    "SkipReport",
    "TextExample",
    "TokenizedExample",
    "TokenizedSide",
    "collate",
    "collate_packed",
    "default_buckets",
    "fixed_size_batches",
    "load_records",
    "to_text_examples",
    "tokenize_examples",
]
