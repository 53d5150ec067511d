"""Text side of the CIR model: LAVIS-style caption cleaning and two tokenizers behind one interface.

* `clean_caption` reproduces LAVIS' `blip_caption` processor (lowercase, the punctuation
  `.!"()*#:;~` replaced by spaces, at most 50 words), which the released QuRe code applies
  before its BERT tokenizer.
* `WordTokenizer` is the tiny preset's word-level tokenizer over a fixed word list (Fashion-Shapes'
  `VOCABULARY`): no download, no sub-words, and no silent [UNK] for a vocabulary word (a
  transformers 5 `BertTokenizer(vocab_file=...)` can map every token to [UNK]; docs/ENVIRONMENT.md).
* `HFTokenizer` adapts a transformers tokenizer (real BLIP-2 weights ship a BERT one).

Both return `{"input_ids": (B, L) long, "attention_mask": (B, L) long}` with [CLS] first (the
BLIP-2 contrastive text embedding reads position 0), [SEP] last, padded to the batch's longest
text and truncated to `max_length` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_LAVIS_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")
_WORD = re.compile(r"[a-z0-9]+")


def clean_caption(text: str, max_words: int = 50) -> str:
    """LAVIS `blip_caption` processor: lowercase, drop `.!"()*#:;~`, squeeze spaces, cap words."""
    text = _SPACES.sub(" ", _LAVIS_PUNCT.sub(" ", text.lower())).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def _pad(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad id lists to the longest one; returns input_ids and attention_mask (B, L) long."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class WordTokenizer:
    """Word-level tokenizer: ids 0..3 are [PAD] [UNK] [CLS] [SEP], then the words in given order.

    Words are runs of `[a-z0-9]` after `clean_caption`; anything else (commas, apostrophes) is a
    separator, so every word of a vocabulary built with the same rule maps to its own id.
    """

    kind = "word"

    def __init__(self, words: Sequence[str]):
        words = list(dict.fromkeys(words))  # de-duplicate, keep order
        bad = [w for w in words if not _WORD.fullmatch(w) or w in SPECIAL_TOKENS]
        if bad:
            raise ValueError(f"WordTokenizer: words must be lowercase [a-z0-9]+ runs; got {bad[:5]}")
        self.words: list[str] = words
        self.vocab: dict[str, int] = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *words])}
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        """Words of a text after LAVIS caption cleaning."""
        return _WORD.findall(clean_caption(text))

    def __call__(self, texts: Sequence[str], max_length: int = 32) -> dict[str, torch.Tensor]:
        """Tokenize texts -> dict of (B, L) long tensors, L = min(longest, max_length)."""
        rows = []
        for text in texts:
            ids = [self.vocab.get(w, self.unk_token_id) for w in self.split(text)]
            rows.append([self.cls_token_id, *ids[: max_length - 2], self.sep_token_id])
        return _pad(rows, self.pad_token_id)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of an id row, special tokens dropped."""
        inverse = [*SPECIAL_TOKENS, *self.words]
        return " ".join(inverse[i] for i in (int(x) for x in ids) if i >= len(SPECIAL_TOKENS))

    def to_config(self) -> dict:
        """JSON-able description, rebuilt by `tokenizer_from_config`."""
        return {"kind": self.kind, "vocabulary": self.words}

    def save(self, directory: Path) -> None:
        """Nothing to write: the vocabulary lives in the checkpoint's config.json."""


class HFTokenizer:
    """A transformers tokenizer (BERT for BLIP-2) behind the WordTokenizer interface."""

    kind = "hf"

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.pad_token_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.hf)

    def __call__(self, texts: Sequence[str], max_length: int = 32) -> dict[str, torch.Tensor]:
        """Tokenize cleaned texts -> dict of (B, L) long tensors, padded to the longest."""
        out = self.hf([clean_caption(t) for t in texts], padding="longest", truncation=True,
                      max_length=max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def decode(self, ids) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)

    def to_config(self) -> dict:
        return {"kind": self.kind, "path": "tokenizer"}

    def save(self, directory: Path) -> None:
        """Write the tokenizer files into `directory / "tokenizer"`."""
        self.hf.save_pretrained(str(Path(directory) / "tokenizer"))


def tokenizer_from_config(config: dict, directory: Path | None = None):
    """Rebuild a tokenizer from `to_config()` output (and the checkpoint dir for HF files)."""
    if config.get("kind") == "word":
        return WordTokenizer(config["vocabulary"])
    if config.get("kind") == "hf":
        path = Path(directory) / config["path"]
        return HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    raise ValueError(f"unknown tokenizer config {config!r}; expected kind 'word' or 'hf'")
