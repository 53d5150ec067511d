"""qurelib: the library behind the QuRe study (ICML 2025, arXiv 2507.12416).

Modules: `qure` (the method, paper order), `kernels` (batched fast paths), `data` (dataset
adapters and the Fashion-Shapes benchmark), `model` (BLIP-2 CIR scorer), `train`, `metrics`,
`plots`, `paths`.
"""

__version__ = "0.1.0"
