"""qurelib: the library behind the QuRe study (ICML 2025, arXiv 2507.12416).

Layers, each importing only from those above it in this list:

    paths, files, provenance   repository paths, atomic writes, git commit and data fingerprints
    kernels                    batched fast paths (a leaf: arrays in, arrays out)
    qure                       the method in the paper's order; dispatches to kernels
    data/                      dataset adapters into one schema, and the Fashion-Shapes benchmark
    model/                     the BLIP-2 Q-Former CIR model, its tiny preset, checkpoints, loading
    metrics/                   retrieval and preference metrics over score matrices
    encode                     image cache, encoding and scoring a split
    audit                      what mined sets hold (false negatives), one pooling over splits
    evaluate                   every metric of a model on a split; HP-FashionIQ
    train                      TrainConfig (the library's defaults) and Algorithm 1, resumable
    study/                     what the notebooks call: config, stages, report, explore, plots, tables
    bench/                     `make bench`
"""

__version__ = "0.1.0"
