"""qurelib: the library behind the QuRe study (ICML 2025, arXiv 2507.12416).

Layers, each importing only from those above it in this list:

    paths, files, provenance   repository paths, atomic writes, git commit and data fingerprints
    mining_spec                which H a query gets: MiningSpec, one text form (a leaf)
    kernels                    batched fast paths (arrays in, arrays out)
    qure                       the method in the paper's order; dispatches to kernels
    data/                      dataset adapters into one schema, and the Fashion-Shapes benchmark
    model/                     the BLIP-2 Q-Former CIR model, its tiny preset, checkpoints, loading
    metrics/                   retrieval and preference metrics over score matrices
    encode                     image cache, encoding and scoring a split
    candidates                 mining from a FAISS candidate index, rescored exactly
    audit                      what mined sets hold (false negatives), one pooling over splits
    evaluate                   every metric of a model on a split; HP-FashionIQ
    train/                     TrainConfig (the library's defaults) and Algorithm 1, resumable: config, seeds,
                               data, mining, state, loop
    study/                     what the notebooks call: config, stages, models, cache, hardness, curves,
                               report, explore, lab, grid, plots, tables, identity, seeds, digest
    bench/                     `make bench`
"""

__version__ = "0.1.0"
