"""Small fast tokenizers of the three common kinds, trained in milliseconds.

* ``byte_bpe``: GPT-2 style byte-level BPE (``Ġ`` marks a leading space; a
  multi-byte character may be split over several tokens), no BOS;
* ``metaspace``: SentencePiece-style BPE (``▁`` marks a leading space) with a BOS;
* ``wordpiece``: BERT-style WordPiece (``##`` continuations, whitespace dropped)
  with a ``[CLS]`` BOS.
"""

from __future__ import annotations

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers

CORPUS = [
    "the café serves naïve crème brûlée in Tōkyō 東京 and Zürich",
    "hello world, hello there! 42 is the answer; 1234 + 5678 = 6912",
    "emoji 🙂 and tabs\tand  double  spaces",
] * 20


def byte_bpe() -> transformers.PreTrainedTokenizerFast:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    # A small vocabulary keeps rare characters split into byte pieces.
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|eos|>", pad_token="<|eos|>")


def metaspace() -> transformers.PreTrainedTokenizerFast:
    backend = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")


def wordpiece() -> transformers.PreTrainedTokenizerFast:
    backend = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=250, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"])
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", backend.token_to_id("[CLS]"))])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]", pad_token="[PAD]")
