"""QuRe's training procedure (Algorithm 1, App. A) as the released code runs it, resumable.

    E = config.epochs, period = max(1, E // n_def)
    for e in 0..E-1:
        lr_e = (lr - lr/100) * 0.5 * (1 + cos(pi e / E)) + lr/100        # per-epoch cosine
        if e == 0 and warmup:        H = corpus \\ {target}                 # warm-up (random negatives)
        elif e % period == 0:        H = mine_hard_negatives(current model)  # within each split's corpus
        one negative per query from H (NegativeSampler), Bradley-Terry loss (Eqs. 2-3), AdamW
        checkpoint + one line of history.jsonl

`loss="info_nce"` is the contrastive baseline (CLIP4Cir / SPRC): same data, schedule and model,
in-batch negatives, no mining. `loss` names any objective of `objectives.OBJECTIVES`: beside
Bradley-Terry (QuRe's code path, one negative from `NegativeSampler`) and InfoNCE, the target
against m mined negatives ("multi_negative", `negatives` = m, drawn by `MultiNegativeSampler`),
InfoNCE plus each query's own m mined negatives ("in_batch_hard"; m = 0 is InfoNCE), and the
target plus `aux_positives` auxiliary positives (the images between the target and H, mined
beside H at each re-mining) against the negatives ("aux_positive", uniform; "aux_positive_weighted",
by rank or score). Every objective's warm-up is QuRe's: one random negative per query. A step
encodes each distinct image once and scores with Eq. 1 (`batch_loss`).

The vision tower is frozen, so images are encoded once per run
(`encode.build_image_cache`) and only the Q-Former, projections, ViT layer-norm and temperature
train. On CUDA the forward runs under bf16 autocast (the released code: fp16 + GradScaler).

Resume: `train` on a `run_dir` holding a checkpoint continues after its last complete epoch. Every
random draw of epoch e (query order, warm-up negatives, dropout) comes from generators seeded by
(config.seed, e) (`seeds`), and the sampler, optimizer and mined sets are in the checkpoint, so an
interrupted-then-resumed run ends with the same weights and history (bar timing fields) as an
uninterrupted one.

Data-parallel (`torchrun --nproc_per_node=N`, `qurelib.distributed`): every rank holds the whole
model, optimizer, image cache, sampler and mined sets (replicated, identical), and takes a
contiguous share of each global batch of `batch_size` queries (batch_size / N each); gradients
are summed over ranks with each rank's loss weighted by its share, so a step is the single
process's step on the same global batch up to float reduction order. InfoNCE gathers the global
batch's target embeddings (gradient back to the rank that computed them), so its negatives are
the global batch. Re-mining shards the query and corpus encoding, the scoring of each rank's
queries against the gathered corpus, and the mining itself; the sets are gathered in query order.
Rank 0 alone writes config.json, checkpoints and history; resume works at any world size.

The modules, each importing only those above it:

    seeds    every random stream of a run, from (seed, epoch)
    config   TrainConfig, its validation and schedule, and the constants the others share
    data     TrainData (the training queries as image-cache rows), check_train_splits
    mining   re-mining H (and the auxiliary positives) with the current model; the samplers
    state    config.json, checkpoints, resume and fork checks, history.jsonl (and its CLI)
    loop     Draw, batch_loss, run_epoch and train (Algorithm 1's loop)

This package re-exports the names other code uses (`from qurelib.train import TrainConfig, train`);
the seed helpers, the samplers' factory and the checkpoint writer and reader stay in their modules.
"""

from qurelib.train.config import (ADDED_KEYS, CHECKPOINT, FORK_KEYS, HISTORY, LOSSES, NOT_RESUME_KEYS, TIMING_KEYS,
                                  TrainConfig)
from qurelib.train.data import TrainData, check_train_splits
from qurelib.train.loop import Draw, batch_loss, run_epoch, train
from qurelib.train.mining import AuxPositives, auxiliary_positives, gather_sets, mine_splits, mine_with_aux
from qurelib.train.seeds import AUX_SALT
from qurelib.train.state import (config_differences, config_json, fork_problems, identity_differences, main,
                                 read_history, restore_history)

__all__ = ["ADDED_KEYS", "AUX_SALT", "CHECKPOINT", "FORK_KEYS", "HISTORY", "LOSSES", "NOT_RESUME_KEYS", "TIMING_KEYS",
           "AuxPositives", "Draw", "TrainConfig", "TrainData", "auxiliary_positives", "batch_loss",
           "check_train_splits", "config_differences", "config_json", "fork_problems", "gather_sets",
           "identity_differences", "main", "mine_splits", "mine_with_aux", "read_history", "restore_history",
           "run_epoch", "train"]
