"""Algorithm 1's loop: `train` runs the epochs (resuming or forking through `state`), each of
which sets the epoch's learning rate, re-mines H when the schedule says so (`mining`), draws the
epoch's negatives (a warm-up random negative, the sampler's, or none for in-batch objectives; a
`Draw` for the objectives beyond Bradley-Terry), makes one pass (`run_epoch`, one step per
batch; data-parallel, each rank's share of the global batch) with the loss of `batch_loss`,
optionally validates, and checkpoints."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qurelib import distributed
from qurelib.data.schema import CIRSplit
from qurelib.encode import ImageCache, autocast, build_image_cache
from qurelib.evaluate import evaluate_splits
from qurelib.files import write_json_atomic, write_text_atomic
from qurelib.model import resolve_device
from qurelib.objectives import OBJECTIVES, MultiNegativeSampler, ScoreBatch, hard_negative_scores
from qurelib.progress import progress_bar
from qurelib.provenance import environment, git_commit, split_fingerprint
from qurelib.qure import HardNegativeSets, bradley_terry_loss, info_nce_loss
from qurelib.train.config import HISTORY, LOSSES, TrainConfig
from qurelib.train.data import TrainData, check_train_splits
from qurelib.train.mining import AuxPositives, mine_with_aux, negative_sampler
from qurelib.train.seeds import AUX_SALT, dropout_seed, epoch_generator, sampler_seed
from qurelib.train.state import config_json, resume, save_epoch

@dataclass(frozen=True)
class Draw:
    """One epoch's sampled images of every training query (cache rows) for the objectives beyond
    Bradley-Terry (which takes a (Q,) tensor, one negative per query, as QuRe does)."""

    negatives: torch.Tensor                  # (Q, m) the query's negatives (mined; random in the warm-up)
    mask: torch.Tensor                       # (Q, m) bool, False = padding (|H| < m)
    aux: torch.Tensor | None = None          # (Q, p) auxiliary positives (-1: none)
    aux_mask: torch.Tensor | None = None     # (Q, p) bool, False = padding
    aux_weights: torch.Tensor | None = None  # (Q, p) float32 (0 at padding)


def batch_loss(model, data: TrainData, cache: ImageCache, ids: torch.Tensor,
               negatives: torch.Tensor | Draw | None, loss: str, gather: bool = False) -> torch.Tensor:
    """Loss of one batch of query ids (B,) under the objective named `loss` (`objectives.OBJECTIVES`):
    Bradley-Terry on (target, negative) with `negatives` (Q,) cache rows (QuRe's code path),
    in-batch InfoNCE with None (also "in_batch_hard" without hard negatives: m = 0 is InfoNCE), and
    every other objective on a `Draw` (`_objective_loss`).

    gather: data-parallel, `ids` being this rank's share of the global batch: InfoNCE's negatives
    are then the targets of the whole global batch (`distributed.gather_rows_with_grad`)."""
    if loss not in OBJECTIVES:
        raise ValueError(f"batch_loss: unknown objective {loss!r}; expected one of {LOSSES}")
    in_batch = loss == "info_nce" or (loss == "in_batch_hard" and negatives is None)
    if not in_batch and isinstance(negatives, Draw) == (loss == "bradley_terry"):
        raise ValueError(f"batch_loss: objective {loss!r} takes " + ("a (Q,) tensor of negatives, not a Draw"
                         if loss == "bradley_terry" else f"a Draw of negatives; got {type(negatives).__name__}"))
    device = cache.embeds.device
    tok = model.tokenize([data.texts[i] for i in ids.tolist()])
    reference = cache.embeds[data.reference_rows[ids].to(device)]  # (B, P, H)
    query = model.encode_query(image_embeds=reference, **tok)  # (B, D)
    if isinstance(negatives, Draw):
        return _objective_loss(model, data, cache, ids, query, negatives, loss, gather)
    if in_batch:
        target = model.encode_corpus(image_embeds=cache.embeds[data.target_rows[ids].to(device)])  # (B, T, D)
        if gather:
            every, offset = distributed.gather_rows_with_grad(target)  # (B_global, T, D)
            return info_nce_loss(query, every, model.temperature, offset=offset)
        return info_nce_loss(query, target, model.temperature)
    rows = torch.cat([data.target_rows[ids], negatives[ids]]).to(device)  # (2B,)
    images = model.encode_corpus(image_embeds=cache.embeds[rows])  # (2B, T, D)
    scores = (images * query.repeat(2, 1)[:, None, :]).sum(dim=-1).amax(dim=-1)  # (2B,) max over T
    pos, neg = scores.split(len(ids))
    return bradley_terry_loss(pos, neg, model.temperature)


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along dim 0 (an int64 index of any shape, rows may repeat), with a backward that is
    bit-reproducible on the CPU. The backward of advanced indexing (`index_put_` with
    accumulate=True) sums the gradients of repeated rows in parallel once the gathered tensor holds
    32,768 elements or more (ATen's grain size), in an order that changes from run to run with more
    than one thread; `index_select`'s backward (`index_add_`) sums them in index order, the bits of
    `torch.use_deterministic_algorithms(True)`. The forward is the same copy. Off the CPU the
    indexing stays as it is (`index_add_` is the nondeterministic one on CUDA)."""
    if x.device.type != "cpu":
        return x[index]
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def _objective_loss(model, data: TrainData, cache: ImageCache, ids: torch.Tensor, query: torch.Tensor,
                    draw: Draw, loss: str, gather: bool) -> torch.Tensor:
    """`batch_loss` on a Draw: each query's target, m negatives and p auxiliary positives, every
    distinct image encoded once, scored with Eq. 1 (max over tokens, `objectives.hard_negative_scores`),
    then `OBJECTIVES[loss]`. In-batch objectives also get the (gathered) batch's targets; a query's
    hard negative that is one of those targets is masked (it would count twice)."""
    objective, device = OBJECTIVES[loss], cache.embeds.device
    target = data.target_rows[ids]  # (B,)
    neg, mask = draw.negatives[ids], draw.mask[ids]  # (B, m)
    parts = [target[:, None], neg]
    if draw.aux is not None:
        aux_mask = draw.aux_mask[ids]  # (B, p)
        parts.append(torch.where(aux_mask, draw.aux[ids], target[:, None]))  # padding: a row never read
    unique, inverse = torch.unique(torch.cat(parts, dim=1), return_inverse=True)  # (U,), (B, 1 + m + p)
    images = model.encode_corpus(image_embeds=cache.embeds[unique.to(device)])  # (U, T, D)
    scores = hard_negative_scores(query, take_rows(images, inverse.to(device)))  # (B, 1 + m + p)
    m = neg.shape[1]
    fields = {"temperature": model.temperature, "pos_scores": scores[:, 0], "neg_scores": scores[:, 1:1 + m]}
    if objective.in_batch:
        # (B, T, D) the batch's targets
        fields["targets"], fields["offset"], columns = take_rows(images, inverse[:, 0].to(device)), 0, target
        if gather:
            fields["targets"], fields["offset"] = distributed.gather_rows_with_grad(fields["targets"])
            columns = distributed.gather_rows(target.to(device)).cpu()  # (B_global,) cache rows
        mask = mask & ~(neg[:, :, None] == columns[None, None, :]).any(dim=2)  # (B, m)
        fields["query"] = query
    fields["neg_mask"] = mask.to(device)
    if objective.aux != "none":
        b, none = len(ids), draw.aux is None  # the warm-up: no auxiliary positive yet
        fields["aux_scores"] = scores.new_zeros(b, 0) if none else scores[:, 1 + m:]  # (B, p)
        fields["aux_mask"] = torch.zeros(b, 0, dtype=torch.bool, device=device) if none else aux_mask.to(device)
        fields["aux_weights"] = scores.new_zeros(b, 0) if none else draw.aux_weights[ids].to(device)
    return objective(ScoreBatch(**fields))


def _sharded_step(model, optimizer, data: TrainData, cache: ImageCache, ids: torch.Tensor,
                  negatives: torch.Tensor | None, config: TrainConfig, params: list) -> float:
    """One data-parallel step on the global batch `ids` (B,): this rank takes its contiguous share,
    its loss is weighted by its share of B and the gradients are summed over ranks (the global
    mean). A last batch smaller than the world is computed whole by every rank, each weighted 1 / N.
    Returns this rank's part of sum(loss x queries) over the global batch."""
    world = distributed.world_size()
    whole = len(ids) < world
    mine = ids if whole else ids.tensor_split(world)[distributed.rank()]  # (b,)
    weight = 1.0 / world if whole else len(mine) / len(ids)
    with autocast(model, config.amp):
        loss = batch_loss(model, data, cache, mine, negatives, config.loss, gather=not whole)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    distributed.sum_gradients(params)
    optimizer.step()
    return float(loss.detach()) * weight * len(ids)


def run_epoch(model, optimizer, data: TrainData, cache: ImageCache, negatives: torch.Tensor | None,
              config: TrainConfig, epoch: int) -> float:
    """One pass over the shuffled training queries; returns the mean loss per query. Data-parallel,
    each global batch of `batch_size` queries is shared by the ranks (`_sharded_step`)."""
    model.train()
    order = torch.randperm(len(data), generator=epoch_generator(config.seed, epoch, salt=1))  # (Q,)
    total, count = 0.0, 0
    world = distributed.world_size()
    if world > 1:
        distributed.local_batch_size(config.batch_size, world)  # ValueError unless the world divides it
        params = [p for p in model.parameters() if p.requires_grad]
    bar = progress_bar(range(0, len(order), config.batch_size), desc=f"epoch {epoch}",
                       show=config.progress and distributed.is_main(), nested=True)
    for start in bar:
        ids = order[start:start + config.batch_size]  # (B,)
        if world > 1:
            total += _sharded_step(model, optimizer, data, cache, ids, negatives, config, params)
            count += len(ids)
            continue
        with autocast(model, config.amp):
            loss = batch_loss(model, data, cache, ids, negatives, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(ids)
        count += len(ids)
        bar.set_postfix(loss=f"{total / count:.4f}")
    if world > 1:
        total = distributed.all_reduce_sum([total])[0]
    return total / max(count, 1)


# ----------------------------------------------------------------------------- the run
def _one_epoch(model, optimizer, data: TrainData, cache: ImageCache, config: TrainConfig, epoch: int,
               sets, sampler, aux, val_splits) -> tuple[dict, HardNegativeSets | None, object, AuxPositives | None]:
    """Negatives for `epoch` (warm-up draw, re-mining or the sampler), one pass, optional validation."""
    record: dict = {"epoch": epoch, "lr": config.lr_at(epoch)}
    for group in optimizer.param_groups:
        group["lr"] = record["lr"]
    t0 = time.perf_counter()
    if config.mines_at(epoch):
        sets, found, record["mining"] = mine_with_aux(model, data, cache, config, epoch, aux=config.aux_positives > 0)
        seed = sampler_seed(config.seed, epoch)
        sampler = negative_sampler(sets, config, seed)
        if found is not None:
            aux = AuxPositives(*found, MultiNegativeSampler(found[0], config.aux_positives, seed=seed + AUX_SALT,
                                                            allow_empty=True))
    record["mining_s"] = time.perf_counter() - t0
    negatives, record["negatives"] = _draw(data, config, epoch, sampler, aux)
    if isinstance(sampler, MultiNegativeSampler):
        record["sets_below_m"] = sampler.short_counts[-1]  # queries with |H| < m at this draw
    t1 = time.perf_counter()
    record["loss"] = run_epoch(model, optimizer, data, cache, negatives, config, epoch)
    record["train_s"] = time.perf_counter() - t1
    record["queries_per_s"] = len(data) / max(record["train_s"], 1e-9)
    record["temperature"] = float(model.temperature.detach())
    last = epoch == config.epochs - 1
    if val_splits and config.eval_every and ((epoch + 1) % config.eval_every == 0 or last) \
            and distributed.is_main():  # data-parallel: rank 0 alone validates (and records)
        t2 = time.perf_counter()
        result = evaluate_splits(model, val_splits, image_cache=cache, progress=config.progress,
                                 batch_size=config.encode_batch_size)
        record["val"] = {name: {k: v for k, v in r.items() if k.startswith(("R@", "Rs@", "avg", "nDCG", "P@"))}
                         for name, r in result["per_split"].items()}
        record["val"].update({k: v for k, v in result.items() if k != "per_split"})
        record["eval_s"] = time.perf_counter() - t2
    return record, sets, sampler, aux


def _draw(data: TrainData, config: TrainConfig, epoch: int, sampler, aux: AuxPositives | None) -> tuple:
    """(the epoch's negatives as `batch_loss` takes them, how they were drawn): None for in-batch
    objectives without mined negatives; before the first re-mining one random negative per query
    (the warm-up, whatever the objective); then the sampler's draw (and the auxiliary positives')."""
    if not config.mines:
        return None, "in_batch"
    if sampler is None:
        random = data.random_negatives(epoch_generator(config.seed, epoch))  # (Q,)
        if config.loss == "bradley_terry":
            return random, "random"
        return Draw(random[:, None], torch.ones(len(random), 1, dtype=torch.bool)), "random"
    if config.loss == "bradley_terry":
        return sampler.sample(), "mined"
    negatives, mask = sampler.sample()  # (Q, m)
    if aux is None:
        return Draw(negatives, mask), "mined"
    return Draw(negatives, mask, *aux.draw()), "mined"


def train(model, splits: dict[str, CIRSplit], config: TrainConfig, run_dir: str | os.PathLike, *,
          val_splits: dict[str, CIRSplit] | None = None, image_cache: ImageCache | None = None,
          stop_epoch: int | None = None, init_from: str | os.PathLike | None = None,
          identity: dict | None = None) -> list[dict]:
    """Fine-tune `model` on `splits` (Algorithm 1), checkpointing every epoch to `run_dir`.

    Args:
        model: a CIRModel with a frozen vision tower (`load_model`, `load_checkpoint`); trained in place.
        splits: {name: CIRSplit} of training queries; each split is its own mining corpus
            (FashionIQ: one per category). Every query needs a target in its corpus.
        config: TrainConfig.
        run_dir: gets config.json, history.jsonl (one record per epoch) and checkpoint/ (the
            model after the last complete epoch plus optimizer, sampler and mined sets). If it
            already holds a checkpoint of the same config, training resumes after it (at any
            world size). Data-parallel, every rank calls `train` with the same arguments; rank 0
            alone writes, and the other ranks return a history without validation records.
        val_splits: optional {name: CIRSplit} evaluated every `config.eval_every` epochs.
        image_cache: frozen-ViT features covering every split (built here if None).
        stop_epoch: return after this many epochs in all (a later call resumes): the study's
            warm-up stage runs epochs [0, E // n_def) and the fine-tuning stage the rest.
        init_from: a run_dir whose checkpoint starts this run when run_dir has none (the warm-up
            shared by every strategy of an ablation); see `FORK_KEYS`.
        identity: what made the run besides its settings (`study.identity.run_identity`: code,
            data, backbone, world size), recorded with every checkpoint; a checkpoint of another
            identity is never resumed (ValueError naming what changed). None: not compared.
    Returns:
        The history: one dict per epoch with epoch, lr, loss, temperature, negatives ("random",
        "mined" or "in_batch"), timings (TIMING_KEYS), "mining" statistics after a re-mining
        (per split: set sizes, fallbacks, fn_rate, queries_with_fn, and "audit"), and "val".
    """
    check_train_splits(splits, config)
    if config.candidates is not None and distributed.world_size() > 1:
        raise ValueError(f"train: candidates={config.candidates!r} re-mines on one process; data-parallel training "
                         f"(world size {distributed.world_size()}) scores the gathered corpus instead: leave "
                         f"candidates None, or train on one process")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    model.to(device)
    cache = image_cache or build_image_cache(model, [*splits.values(), *(val_splits or {}).values()],
                                             progress=config.progress)
    data = TrainData.build(splits, cache)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, history, sets, sampler, aux = resume(model, optimizer, run_dir, config, init_from, identity)
    if distributed.is_main() and (start == 0 or not (run_dir / "config.json").exists()):
        summary = {name: {"queries": len(s.queries), "corpus": len(s.corpus_ids), "sha256": split_fingerprint(s)}
                   for name, s in splits.items()}
        write_json_atomic(run_dir / "config.json", {
            "train_config": config_json(config), "splits": summary, "model": getattr(model, "source", None),
            "init_from": None if init_from is None else str(init_from), "identity": identity,
            "git_commit": git_commit(), "environment": environment()})
    if start > 0 and distributed.is_main():  # the checkpoint's history is the truth: heal a cut or lost file
        write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in history))
    wall = history[-1]["wall_s"] if history else 0.0
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    stop = config.epochs if stop_epoch is None else min(stop_epoch, config.epochs)
    for epoch in progress_bar(range(start, stop), initial=start, total=config.epochs, desc="train",
                              show=config.progress and distributed.is_main()):
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=cuda):  # dropout draws depend on (seed, epoch, rank) only
            torch.manual_seed(dropout_seed(config.seed, epoch, distributed.rank()))
            record, sets, sampler, aux = _one_epoch(model, optimizer, data, cache, config, epoch, sets, sampler,
                                                    aux, val_splits)
        record["epoch_s"] = time.perf_counter() - t0
        wall += record["epoch_s"]
        record["wall_s"] = wall
        history.append(record)
        if distributed.is_main():
            save_epoch(model, optimizer, run_dir, config, epoch, history, sets, sampler, identity, aux)
    model.eval()
    return history
