"""What a run trains on: `TrainData`, every training query of all splits flattened, as rows into
the image cache (and the warm-up's random negatives), and `check_train_splits`, which refuses
splits that cannot train before any image is encoded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from qurelib.data.schema import CIRSplit
from qurelib.encode import ImageCache
from qurelib.train.config import TrainConfig

@dataclass
class TrainData:
    """Training queries of all splits, flattened, with rows into the image cache."""

    splits: dict[str, CIRSplit]
    texts: list[str]
    reference_rows: torch.Tensor         # (Q,) cache rows
    target_rows: torch.Tensor            # (Q,) cache rows
    corpus_rows: dict[str, torch.Tensor]  # split -> (N_s,) cache rows of its corpus
    offsets: dict[str, int] = field(default_factory=dict)  # split -> first query

    @staticmethod
    def build(splits: dict[str, CIRSplit], cache: ImageCache) -> "TrainData":
        texts, refs, targets, offsets, corpus_rows = [], [], [], {}, {}
        for name, split in splits.items():
            offsets[name] = len(texts)
            corpus_rows[name] = cache.rows(split.corpus_ids)
            local = split.target_indices()  # DatasetError if a target is missing
            targets.append(corpus_rows[name][local])
            refs.append(cache.rows([q.reference_id for q in split.queries]))
            texts += [q.modification_text for q in split.queries]
        return TrainData(dict(splits), texts, torch.cat(refs), torch.cat(targets), corpus_rows, offsets)

    def __len__(self) -> int:
        return len(self.texts)

    def random_negatives(self, gen: torch.Generator) -> torch.Tensor:
        """(Q,) cache rows: per query, uniform over its split's corpus minus the target (warm-up)."""
        out = []
        for name, split in self.splits.items():
            n = len(split.corpus_ids)
            if n < 2:
                raise ValueError(f"split {name!r}: a corpus of {n} image(s) has no negatives")
            target = split.target_indices()  # (Q_s,)
            draw = (torch.rand(len(target), generator=gen, dtype=torch.float64) * (n - 1)).long()
            draw = draw + (draw >= target).long()  # skip the target column
            out.append(self.corpus_rows[name][draw])
        return torch.cat(out)


def check_train_splits(splits: dict[str, CIRSplit], config: TrainConfig) -> None:
    """ValueError naming the split (and query) that cannot train, before any image is encoded: a
    split without queries, or, for an objective with mined negatives (`TrainConfig.mines`), a query
    whose corpus holds no image that could be its negative (a corpus of 1 image; of 2 when
    `exclude_reference` removes the other)."""
    if not splits:
        raise ValueError("train: no training splits given")
    for name, split in splits.items():
        if not split.queries:
            raise ValueError(f"train: split {name!r} has no queries")
        if not config.mines:
            continue  # in-batch negatives: other queries' targets
        index = split.corpus_index
        for q in split.queries:
            removed = config.mining.exclude_reference and q.reference_id in index and q.reference_id != q.target_id
            if len(index) - 1 - removed < 1:
                why = " once exclude_reference removes the reference" if removed else ""
                what = "Bradley-Terry loss" if config.loss == "bradley_terry" else f"objective {config.loss!r}"
                raise ValueError(f"train: split {name!r}, query {q.query_id!r}: its corpus of {len(index)} image(s) "
                                 f"holds no negative besides the target{why}; the {what} needs at "
                                 f"least {2 + removed} corpus images (or use loss='info_nce', in-batch negatives)")
