"""The study: what the notebooks call, one module per concern.

    config    StudyConfig from the notebook parameters (params/*.yaml through papermill)
    stages    00 data, 01 backbone / image cache / warm-up, 02 mining audit, 03 fine-tuning
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
from qurelib.study.stages import (backbone, cliff_ratio_table, curve_anatomy, curve_queries, data_summary, hardness_audit, hardness_row,
                                  hardness_table, histories, history_table, image_cache, last_mining_hardness,
                                  load_named_model, load_run, load_splits, mining_audit, pooled_sizes, prepare_data,
                                  run_baseline, run_finetune, run_warmup, split_scores, tier_curves)
from qurelib.study.tables import Table, save_table, to_markdown

__all__ = ["StudyConfig", "study_config", "prepare_data", "load_splits", "data_summary", "backbone", "image_cache",
           "run_warmup", "load_run", "load_named_model", "split_scores", "mining_audit", "hardness_audit",
           "hardness_row", "hardness_table", "last_mining_hardness", "tier_curves", "curve_anatomy", "cliff_ratio_table", "curve_queries",
           "pooled_sizes", "run_finetune", "run_baseline", "history_table", "histories", "evaluate_runs",
           "simulated_preferences", "results_table", "write_results", "read_results", "external_benchmarks", "zero_shot_transfer",
           "query_figure", "explorer", "Table", "save_table", "to_markdown"]
