"""Benchmark: mining at web scale with a FAISS candidate generator (`qurelib.candidates`) against
exact full-corpus mining, on synthetic clustered token embeddings (`python -m qurelib.bench
--only scale`; writes figures/scale/fig_scale_cost.png + .csv and fig_scale_recall.png + .csv).

Per corpus size N, the same queries are mined three ways:
- exact: `qure.score_corpus` of every query against every image (query blocks of EXACT_BLOCK rows)
  then `qure.mine_hard_negatives`, the sets every other row is compared with;
- index "Flat": the exact FAISS index, candidates certified (identical sets by construction);
- index "IVF": inverted lists (nlist ~ sqrt(N T)), searched with a few nprobe values.
Beside the size sweep (`bench_variants`): BLIP-2's token shape T = 32, D = 256; an isotropic corpus
(no low-dimensional structure); an HNSW index over the tokens. Each row gives wall and CPU seconds
(CPU: every thread of the process, the comparable measure on a shared machine), the peak resident
memory above the phase's start (sampled from /proc every 5 ms), the index build time, the sets'
agreement with exact mining (mean Jaccard, share of queries identical) and the candidate
generator's counts (widened queries, full rows). docs/SCALE.md reads the results.
"""

from __future__ import annotations

import csv
import math
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from qurelib import candidates, qure
from qurelib.qure import MiningSpec
from qurelib.paths import FIGURES_DIR

SIZES = (10_000, 100_000, 1_000_000)  # corpus images
QUICK_SIZES = (2_000, 10_000)
N_QUERIES = 500  # queries mined at every size
TOKENS, DIM = 8, 64  # T token vectors of D dims per image (BLIP-2 has T = 32, D = 256)
INTRINSIC = 16  # the embeddings' intrinsic dimension (None: isotropic in all D dimensions)
QUERY_NOISE = 0.6  # a query's distance to its target image (sets the target's rank)
MINING = MiningSpec(window=100)  # the windowed drop rule, W = 100 images
DEPTH = 192  # candidate images per query at the first search (rank + W + 1 for a target ranked <= 91)
HITS_PER_IMAGE = 0.5  # token hits searched per candidate image, per token (T = 8: 4; 1.0 guarantees DEPTH images)
EXACT_BLOCK = 128  # queries scored at once by exact mining (a 128 x N float32 block)
NPROBES = (4, 16, 64, 256)  # IVF lists visited per query token search
EF_SEARCH = (768, 1536, 3072)  # HNSW beam widths (at least the DEPTH x hits token hits asked for)
WIDE = dict(t=32, d=256, n=10_000)  # the cost at BLIP-2's token shape, T = 32, D = 256
OUT_DIR = FIGURES_DIR / "scale"


class PeakRSS:
    """Context manager: the peak resident set size above its start, in GB (`.peak_gb`), sampled
    from /proc/self/statm every 5 ms (torch and FAISS allocate outside Python's tracemalloc)."""

    def __enter__(self):
        self._page = 4096
        self._start = self._rss()
        self._peak, self._stop = self._start, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_gb = (self._peak - self._start) / 2**30


def _measured(fn):
    """(result, wall s, CPU s of all threads, peak extra RSS GB) of fn()."""
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, mem.peak_gb


def synthetic_tokens(n: int, n_queries: int, t: int = TOKENS, d: int = DIM, *, intrinsic: int | None = INTRINSIC,
                     clusters: int = 1024, query_noise: float = QUERY_NOISE,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clustered unit token embeddings (N, T, D) float32, unit queries (Q, D) near their targets,
    and the (Q,) int64 targets, from one seeded generator (blocks of 2^16 images).

    Each image is a cluster centre plus noise (0.5) in an `intrinsic`-dimensional subspace of R^D,
    each token the image plus noise (0.3) there, plus isotropic noise (0.05) in all D dimensions;
    a query is its target image plus `query_noise` in the subspace. intrinsic=None draws all of it
    in the full D dimensions (no low-dimensional structure: the hard case for an index)."""
    g = torch.Generator().manual_seed(seed)
    k = intrinsic or d
    basis = torch.linalg.qr(torch.randn(d, k, generator=g))[0] if intrinsic else torch.eye(d)  # (D, k)
    centres = torch.randn(clusters, k, generator=g)
    tokens, images = torch.empty(n, t, d), torch.empty(n, k)
    for s in range(0, n, 2**16):
        m = min(n, s + 2**16) - s
        images[s:s + m] = centres[torch.randint(0, clusters, (m,), generator=g)] + 0.5 * torch.randn(m, k, generator=g)
        z = images[s:s + m, None] + 0.3 * torch.randn(m, t, k, generator=g)  # (m, T, k)
        tokens[s:s + m] = torch.nn.functional.normalize(z @ basis.T + 0.05 * torch.randn(m, t, d, generator=g), dim=2)
    target = torch.randint(0, n, (n_queries,), generator=g)
    query = images[target] + query_noise * torch.randn(n_queries, k, generator=g)
    return torch.nn.functional.normalize(query @ basis.T, dim=1), tokens, target


def exact_mining(query: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor, mining: MiningSpec,
                 block: int = EXACT_BLOCK) -> qure.HardNegativeSets:
    """Full-corpus mining in blocks of exactly `block` queries (the last block overlaps the one
    before it, so every scoring call has the same shape): score everything, then mine."""
    sets, fallback = [None] * len(query), np.zeros(len(query), dtype=bool)
    b = min(block, len(query))
    for s in range(0, len(query), b):
        start = min(s, len(query) - b)
        with torch.no_grad():
            scores = qure.score_corpus(query[start:start + b], tokens)  # (b, N)
        mined = qure.mine_hard_negatives(scores, target[start:start + b], mining)
        for i in range(s - start, b):
            sets[start + i], fallback[start + i] = mined[i].numpy(), bool(mined.fallback[i])
    return qure.HardNegativeSets.from_lists(sets, fallback)


def agreement(a: qure.HardNegativeSets, b: qure.HardNegativeSets) -> tuple[float, float]:
    """(mean Jaccard of the per-query sets, share of queries with identical sets in order)."""
    jac, same = [], []
    for q in range(len(a)):
        x, y = a[q].numpy(), b[q].numpy()
        union = len(np.union1d(x, y))
        jac.append(len(np.intersect1d(x, y)) / union if union else 1.0)
        same.append(np.array_equal(x, y))
    return float(np.mean(jac)), float(np.mean(same))


def nlist_for(n_tokens: int) -> int:
    """Inverted lists for n token vectors: the power of two nearest sqrt(n), at least 16."""
    return max(16, 2 ** round(math.log2(math.sqrt(n_tokens))))


def _index_row(n: int, name: str, index: candidates.CandidateIndex, build: tuple, query, tokens, target,
               reference, exact: dict, mining: MiningSpec, depth: int) -> dict:
    """Mine with `index` (built in `build` = (wall s, CPU s, peak GB)), time it and compare the
    sets with `reference` (exact mining's)."""
    hits = max(1, round(HITS_PER_IMAGE * tokens.shape[1]))
    (sets, report), wall, cpu, peak = _measured(lambda: candidates.mine_on_candidates(
        query, tokens, target, index=index, depth=depth, hits_per_image=hits, spec=mining))
    jaccard, identical = agreement(reference, sets)
    t = report.timings
    return {"N": n, "method": name, "params": index.search_params or "-", "build s": round(build[0], 2),
            "build CPU s": round(build[1], 2), "build peak GB": round(build[2], 2), "mine s": round(wall, 3),
            "mine CPU s": round(cpu, 3), "peak GB": round(peak, 2),
            "speed-up": round(exact["mine s"] / wall, 1), "CPU speed-up": round(exact["mine CPU s"] / cpu, 1),
            "speed-up incl. build": round(exact["mine s"] / (wall + build[0]), 2),
            "mean Jaccard": round(jaccard, 4), "identical": round(identical, 4),
            "widened": report.widened, "whole-tail rows": report.exact_whole_tail, "too-deep rows": report.exact_depth,
            "mean candidates": round(report.mean_candidates, 1), **{k: round(v, 3) for k, v in t.items()}}


def _exact_row(n: int, query, tokens, target, mining: MiningSpec) -> tuple[dict, qure.HardNegativeSets]:
    """Exact mining's row and sets, with the median target rank of the first 64 queries."""
    reference, wall, cpu, peak = _measured(lambda: exact_mining(query, tokens, target, mining))
    head = min(64, len(query))
    with torch.no_grad():
        scores = qure.score_corpus(query[:head], tokens)  # (64, N)
    ranks = (scores > scores[torch.arange(head), target[:head]][:, None]).sum(1).float()
    row = {"N": n, "method": "exact", "params": f"T={tokens.shape[1]} D={tokens.shape[2]} Q={len(query)}",
           "build s": 0.0, "mine s": round(wall, 3), "mine CPU s": round(cpu, 3), "peak GB": round(peak, 2),
           "mean Jaccard": 1.0, "identical": 1.0, "whole-tail rows": int(reference.fallback.sum()),
           "target rank p50/p90": f"{ranks.quantile(0.5):.0f}/{ranks.quantile(0.9):.0f}"}
    return row, reference


def bench_size(n: int, n_queries: int = N_QUERIES, t: int = TOKENS, d: int = DIM, *, mining: MiningSpec = MINING,
               depth: int = DEPTH, nprobes=NPROBES, flat: bool = True, intrinsic: int | None = INTRINSIC,
               ann: tuple | None = None, seed: int = 0) -> list[dict]:
    """Exact mining, then Flat and approximate index mining of the same queries at one corpus
    size; `ann`: ((factory, (search params, ...)), ...), default IVF{nlist_for(N T)},Flat with
    every nprobe of `nprobes`."""
    query, tokens, target = synthetic_tokens(n, n_queries, t, d, intrinsic=intrinsic, seed=seed)
    exact, reference = _exact_row(n, query, tokens, target, mining)
    rows = [exact]
    ann = ann or ((f"IVF{nlist_for(n * t)},Flat", tuple(f"nprobe={p}" for p in nprobes)),)
    for factory, sweep in ((("Flat", ("",)),) if flat else ()) + tuple(ann):
        index, *build = _measured(lambda: candidates.build_index(tokens, factory))
        for params in sweep:
            if params:
                index.set_search_params(params)
            rows.append(_index_row(n, f"index {factory.split(',')[0]}", index, build, query, tokens, target,
                                   reference, exact, mining, depth))
        del index  # one index alive at a time
    for row in rows:
        row["data"] = f"T={t} D={d} " + (f"intrinsic {intrinsic}" if intrinsic else "isotropic")
    return rows


def fit_power(ns, costs) -> tuple[float, float]:
    """(a, b) of cost = a N^b, least squares in log-log."""
    b, log_a = np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(costs, float)), 1)
    return float(np.exp(log_a)), float(b)


def _series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(N, CPU s) points per line of the cost figure: exact, Flat, each IVF nprobe, IVF build."""
    lines: dict[str, list] = {}
    for r in rows:
        name = r["method"] if r["method"] in ("exact", "index Flat") else f"IVF mining ({r['params']})"
        lines.setdefault(name, []).append((r["N"], r["mine CPU s"]))
        if r["method"].startswith("index IVF") and r["params"] == f"nprobe={NPROBES[0]}":
            lines.setdefault("IVF build", []).append((r["N"], r["build CPU s"]))
    return lines


def plot_cost(rows: list[dict], out_dir: Path = OUT_DIR) -> Path:
    """figures/scale/fig_scale_cost.png (+ .csv): mining cost against N, log-log, with the fitted
    growth exponent of every line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    table = []
    for name, points in _series(rows).items():
        ns, costs = zip(*sorted(points))
        a, b = fit_power(ns, costs) if len(ns) > 1 else (costs[0], float("nan"))
        ax.plot(ns, costs, "o-", label=f"{name}: N^{b:.2f}")
        table += [{"line": name, "N": n, "seconds": c, "fitted exponent": round(b, 3), "fitted a": a}
                  for n, c in zip(ns, costs)]
    ax.set(xscale="log", yscale="log", xlabel="corpus images N", ylabel="seconds (mining: CPU, all threads)",
           title=f"Mining {rows[0]['params'].split('Q=')[-1]} queries: exact vs FAISS candidates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "fig_scale_cost.png", dpi=120)
    _write_csv(table, out_dir / "fig_scale_cost.csv")
    return out_dir / "fig_scale_cost.png"


def plot_recall(rows: list[dict], out_dir: Path = OUT_DIR) -> Path:
    """figures/scale/fig_scale_recall.png (+ .csv): the IVF index's agreement with exact mining
    (mean Jaccard) and its CPU speed-up against the share of the inverted lists searched
    (nprobe / nlist), one line per corpus and data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(9, 3.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    table = [r for r in rows if r["method"].startswith("index IVF")]
    shares = [int(r["params"].split("=")[1]) / int(r["method"].removeprefix("index IVF")) for r in table]
    for key in dict.fromkeys((r["N"], r["data"]) for r in table):
        part = [r for r in table if (r["N"], r["data"]) == key]
        probes = [x for r, x in zip(table, shares) if (r["N"], r["data"]) == key]
        label = f"N={key[0]:,} {key[1]} ({part[0]['method'][6:]})"
        left.plot(probes, [r["mean Jaccard"] for r in part], "o-", label=label)
        right.plot(probes, [r["CPU speed-up"] for r in part], "o-", label=label)
    left.axhline(0.99, color="grey", ls=":", lw=1)
    right.axhline(50, color="grey", ls=":", lw=1)
    left.set(xscale="log", xlabel="share of the lists searched (nprobe / nlist)", ylabel="mean Jaccard of H vs exact",
             ylim=(0, 1.02))
    right.set(xscale="log", yscale="log", xlabel="share of the lists searched (nprobe / nlist)",
              ylabel="CPU speed-up vs exact mining")
    left.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "fig_scale_recall.png", dpi=120)
    _write_csv([{**{k: r[k] for k in ("N", "data", "method", "params", "mean Jaccard", "identical", "CPU speed-up",
                                        "speed-up")}, "share searched": x} for r, x in zip(table, shares)],
               out_dir / "fig_scale_recall.csv")
    return out_dir / "fig_scale_recall.png"


def _write_csv(table: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in table for k in row)))
        writer.writeheader()
        writer.writerows(table)


TABLE_COLUMNS = ("N", "data", "method", "params", "build s", "build CPU s", "mine s", "mine CPU s", "peak GB",
                 "speed-up", "CPU speed-up", "mean Jaccard", "identical", "widened", "whole-tail rows", "too-deep rows",
                 "mean candidates", "fingerprint_s", "search_s", "rescore_s", "mine_s", "exact_s",
                 "target rank p50/p90")


def write_table(rows: list[dict], path: Path) -> None:
    """The rows as a markdown table (the columns of TABLE_COLUMNS; '' where a row has none)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in TABLE_COLUMNS) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def bench_scale(quick: bool = False, out_dir: Path | None = None) -> list[dict]:
    """Every size of SIZES (QUICK_SIZES with --quick), then the wide token shape, the isotropic
    corpus and HNSW at the middle size (`bench_variants`); writes the figures, their CSVs and the
    markdown table (`write_outputs`) to `out_dir` (default figures/scale, or a fresh temporary
    folder with --quick)."""
    sizes, n_queries = (QUICK_SIZES, 100) if quick else (SIZES, N_QUERIES)
    out_dir = out_dir or (Path(tempfile.mkdtemp(prefix="qurelib-scale-")) if quick else OUT_DIR)
    rows = []
    for n in sizes:
        rows += bench_size(n, n_queries)
    rows += bench_variants(sizes[1], 2_000 if quick else WIDE["n"], n_queries)
    write_outputs(rows, out_dir)
    return rows


def bench_variants(n: int, wide_n: int, n_queries: int) -> list[dict]:
    """The rows beside the size sweep: T = 32, D = 256 at `wide_n` images; the isotropic corpus and
    an HNSW index over the tokens at `n` images."""
    rows = bench_size(wide_n, n_queries, WIDE["t"], WIDE["d"])
    rows += bench_size(n, n_queries, intrinsic=None, flat=False)
    rows += bench_size(n, n_queries, flat=False, ann=(("HNSW32", tuple(f"efSearch={e}" for e in EF_SEARCH)),))
    return [dict(r, group="variants") for r in rows]


def write_outputs(rows: list[dict], out_dir: Path) -> None:
    """fig_scale_cost (the size sweep's rows), fig_scale_recall (every IVF row) and scale_table.md
    (every row) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_cost([r for r in rows if r.get("group") != "variants"], out_dir)
    plot_recall(rows, out_dir)
    write_table(rows, out_dir / "scale_table.md")
