"""A training run's settings: `TrainConfig` (validated on construction; its schedule, `period`,
`mines_at` and `lr_at`) and the names the rest of `qurelib.train` shares: the objectives
(`LOSSES`), the history's timing fields, a run directory's files (`CHECKPOINT`, `HISTORY`) and the
settings that may differ on resume (`NOT_RESUME_KEYS`), that runs saved before them lack
(`ADDED_KEYS`) and that a fork may change (`FORK_KEYS`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qurelib.objectives import AUX_SCHEMES, OBJECTIVES
from qurelib.qure import MiningSpec, as_spec

LOSSES = tuple(OBJECTIVES)  # the objectives by name (`objectives.OBJECTIVES`)
TIMING_KEYS = ("wall_s", "epoch_s", "mining_s", "train_s", "queries_per_s", "eval_s")
CHECKPOINT = "checkpoint"
HISTORY = "history.jsonl"
NOT_RESUME_KEYS = frozenset({"device", "progress", "encode_batch_size"})  # may differ on resume
# Settings added after runs were saved: a saved config without one was trained under its default.
ADDED_KEYS = ("negatives", "aux_positives", "aux_weighting", "aux_decay", "aux_width", "candidates", "candidate_search")
# May differ between a warm-up run and a fork of it (`init_from`): they act only from the first
# re-mining on, and a fork must start before it.
# The objective and its settings too: the warm-up draws one random negative per query whatever the
# objective (QuRe's warm-up), so every objective of the grid forks the same warm-up.
FORK_KEYS = frozenset({"mining", "loss", "negatives", "aux_positives", "aux_weighting", "aux_decay", "aux_width",
                       "audit", "eval_every", "candidates", "candidate_search"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the released FashionIQ config (docs/METHOD.md, section 10)."""

    epochs: int = 30                 # E (released: FashionIQ 30, CIRR 50)
    n_def: int = 6                   # number of H definitions; H is redefined every E // n_def epochs
    batch_size: int = 32             # queries per step
    lr: float = 5e-6                 # initial lr (released: FIQ 5e-6, CIRR 1e-5); cosine to lr/100
    weight_decay: float = 0.05       # AdamW
    seed: int = 1000                 # released random_seed
    loss: str = "bradley_terry"      # objective by name (objectives.OBJECTIVES): "bradley_terry" (QuRe) |
    #                                  "info_nce" (in-batch baseline) | "multi_negative" | "in_batch_hard" |
    #                                  "aux_positive" | "aux_positive_weighted"
    negatives: int = 1               # m: mined negatives per query per step (bradley_terry: 1; in_batch_hard: 0 is
    #                                  InfoNCE)
    aux_positives: int = 0           # p: auxiliary positives per query per step (aux_positive*: >= 1; otherwise 0)
    aux_weighting: str = "none"      # auxiliary positives' weights: "none" (1 each, aux_positive) | "rank" | "score"
    aux_decay: float = 0.5           # "rank": weight decay ** (rank distance below the target)
    aux_width: float = 0.0           # "score": weight exp(-(s+ - s_a) / width); 0 = the temperature at re-mining
    warmup: bool = True              # first E // n_def epochs: random negatives from corpus \ target
    mining: MiningSpec = MiningSpec()  # which H (a MiningSpec or its text): QuRe as released, "drops"
    audit: tuple[MiningSpec, ...] = ()  # other specs whose sets are audited at each re-mining
    candidates: str | None = None    # re-mine from a FAISS index of the corpus's token vectors, its factory
    #                                  string ("Flat": exact, the same sets; "IVF64,Flat", "HNSW32", ...:
    #                                  `candidates.build_index`), rebuilt at every re-mining; None: score
    #                                  the whole corpus. Needs a spec that reads the head of the curve
    #                                  (a window, or the top-k family), no audit, no auxiliary positives
    candidate_search: str = ""       # the index's search parameters, e.g. "nprobe=16"
    eval_every: int = 0              # validate every this many epochs (and at the end); 0 = never
    device: str = "auto"             # "auto" | "cpu" | "cuda"
    amp: bool = True                 # bf16 autocast on CUDA
    encode_batch_size: int = 256     # batch size when encoding for mining / evaluation
    progress: bool = True            # tqdm bars

    def __post_init__(self):
        def whole(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)
        checks = [(whole(self.epochs) and self.epochs >= 1, "epochs", "an int >= 1"),
                  (whole(self.n_def) and self.n_def >= 1, "n_def", "an int >= 1"),
                  (whole(self.batch_size) and self.batch_size >= 1, "batch_size", "an int >= 1"),
                  (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr",
                   "a finite number > 0"),
                  (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay",
                   "a number >= 0"),
                  (self.loss in LOSSES, "loss", f"one of {LOSSES}"),
                  (whole(self.eval_every) and self.eval_every >= 0, "eval_every", "an int >= 0 (0 = never)"),
                  (whole(self.encode_batch_size) and self.encode_batch_size >= 1, "encode_batch_size",
                   "an int >= 1")]
        bad = [f"{name} must be {what}, got {getattr(self, name)!r}" for ok, name, what in checks if not ok]
        bad += [] if bad else self._objective_problems()
        try:  # the text form is accepted and stored as the spec
            object.__setattr__(self, "mining", as_spec(self.mining))
        except ValueError as err:
            bad.append(f"mining: {err}")
        try:
            if isinstance(self.audit, (str, MiningSpec)):
                raise ValueError(f"audit must be a list of mining specs, got {self.audit!r}")
            object.__setattr__(self, "audit", tuple(as_spec(spec) for spec in self.audit))
        except (TypeError, ValueError) as err:
            bad.append(f"audit: {err}")
        bad += [] if bad else self._candidate_problems()
        if bad:
            raise ValueError(f"TrainConfig: {'; '.join(bad)}")

    def _candidate_problems(self) -> list[str]:
        """What re-mining from a candidate index cannot do with these settings, naming the field."""
        if self.candidates is None:
            return [] if self.candidate_search == "" else \
                [f"candidate_search={self.candidate_search!r} needs candidates (an index factory string)"]
        if not isinstance(self.candidates, str) or not self.candidates.strip():
            return [f"candidates must be a FAISS factory string such as 'Flat' (or None); got {self.candidates!r}"]
        out = []
        if self.mining.whole_curve:
            out.append(f"candidates: mining {str(self.mining)!r} needs the whole curve; give it a window "
                       f"(e.g. {str(self.mining.replace(window=0.02)) if self.mining.strategy == 'drops' else 'top_k-k20'!r}) "
                       f"or leave candidates None")
        if self.audit:
            out.append("candidates: the audit scores the whole corpus; leave audit empty with candidates")
        if OBJECTIVES[self.loss].aux != "none":
            out.append(f"candidates: loss={self.loss!r} reads auxiliary positives from the whole curve; "
                       f"use it without candidates")
        return out

    def _objective_problems(self) -> list[str]:
        """What the objective's settings get wrong, each naming its field."""
        objective, m, p = OBJECTIVES[self.loss], self.negatives, self.aux_positives
        whole = [isinstance(x, int) and not isinstance(x, bool) for x in (m, p)]
        least = {"none": 1, "one": 1, "m": 0 if objective.in_batch else 1}[objective.negatives]
        most = {"none": 1, "one": 1, "m": None}[objective.negatives]
        width = self.aux_width
        checks = [(whole[0] and m >= least and (most is None or m <= most), "negatives",
                   f"{'exactly 1' if most == 1 else f'an int >= {least}'} for loss={self.loss!r}"
                   + (" (it draws no mined negative; leave the default)" if objective.negatives == "none" else "")),
                  (whole[1] and (p >= 1 if objective.aux != "none" else p == 0), "aux_positives",
                   f"{'an int >= 1' if objective.aux != 'none' else '0'} for loss={self.loss!r}"),
                  (self.aux_weighting in (AUX_SCHEMES if objective.aux == "weighted" else ("none",)), "aux_weighting",
                   f"one of {AUX_SCHEMES if objective.aux == 'weighted' else ('none',)} for loss={self.loss!r}"),
                  (isinstance(self.aux_decay, (int, float)) and 0 < self.aux_decay <= 1, "aux_decay",
                   "a number in (0, 1]"),
                  (isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width)
                   and width >= 0, "aux_width", "a finite number >= 0 (0: the temperature)")]
        return [f"{name} must be {what}, got {getattr(self, name)!r}" for ok, name, what in checks if not ok]

    @property
    def mines(self) -> bool:
        """Whether the objective trains on mined negatives (and so re-mines H): every objective but
        InfoNCE, and in-batch + hard with m = 0 (which is InfoNCE)."""
        return OBJECTIVES[self.loss].negatives != "none" and self.negatives > 0

    @property
    def period(self) -> int:
        """Epochs between two definitions of H (released: E // n_def; at least 1)."""
        return max(1, self.epochs // self.n_def)

    def mines_at(self, epoch: int) -> bool:
        """Algorithm 1: redefine H at e % period == 0, except e == 0 under warm-up."""
        return self.mines and epoch % self.period == 0 and (epoch > 0 or not self.warmup)

    def lr_at(self, epoch: int) -> float:
        """Released per-epoch cosine from lr to lr / 100 (config min_lr is ignored there too)."""
        low = self.lr / 100.0
        return (self.lr - low) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs)) + low
