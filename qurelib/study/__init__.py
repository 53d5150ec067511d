"""The study: what the notebooks call, one module per concern.

    config    StudyConfig from the notebook parameters (params/*.yaml through papermill)
    stages    00 data, 01 warm-up, 02 scores, 03 fine-tuning and the baseline
    models    the backbone, the runs and the study's model names
    cache     the image cache on disk, keyed by a fingerprint
    hardness  02 / 06 the mining audit and how hard each H is
    curves    02 / 04 the score curves' anatomy
    report    04 evaluation side by side, results files, the ablation summary, transfer benchmarks
    explore   05 one query in full; the interactive explorer
    plots     the figures (matplotlib), saved as runs/<profile>/figures/figNN_<slug>.png + .csv
    tables    tables that render in Jupyter and go to .json / .md

`from qurelib import study` gives the stage functions by name (`study.prepare_data`, ...).
"""

from qurelib.study.config import StudyConfig, study_config
from qurelib.study.explore import explorer, query_figure
from qurelib.study.report import (evaluate_runs, external_benchmarks, read_results, results_table,
                                  simulated_preferences, write_results, zero_shot_transfer)
from qurelib.study.cache import image_cache
from qurelib.study.curves import cliff_ratio_table, curve_anatomy, curve_queries
from qurelib.study.hardness import (hardness_audit, hardness_row, hardness_table, last_mining_hardness, mining_audit,
                                    pooled_sizes, tier_curves)
from qurelib.study.models import backbone, histories, load_named_model, load_run
from qurelib.study.stages import (data_summary, history_table, load_splits, prepare_data, run_baseline, run_finetune,
                                  run_warmup, split_scores)
from qurelib.study.tables import Table, save_table, to_markdown

__all__ = ["StudyConfig", "study_config", "prepare_data", "load_splits", "data_summary", "backbone", "image_cache",
           "run_warmup", "load_run", "load_named_model", "split_scores", "mining_audit", "hardness_audit",
           "hardness_row", "hardness_table", "last_mining_hardness", "tier_curves", "curve_anatomy", "cliff_ratio_table", "curve_queries",
           "pooled_sizes", "run_finetune", "run_baseline", "history_table", "histories", "evaluate_runs",
           "simulated_preferences", "results_table", "write_results", "read_results", "external_benchmarks", "zero_shot_transfer",
           "query_figure", "explorer", "Table", "save_table", "to_markdown"]
