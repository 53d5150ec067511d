"""Metrics over score matrices `scores[q, c]`; none touches a model.

    retrieval    recall@K, FashionIQ / CIRR / CIRCO protocols and their server files, the
                 all-positives metrics (P@K, recall over positives, nDCG, first false negative)
    preference   HP-FashionIQ's preference rates and the simulated judge
    checks       argument validation both use
"""

from qurelib.metrics.preference import (preference_rate, preference_report, simulated_hp_items,
                                        simulated_preference_rate)
from qurelib.metrics.retrieval import (circo_map_at_k, circo_submission, cirr_metrics, cirr_submission,
                                       fashioniq_metrics, first_false_negative_rank, mask_columns, ndcg_at_k,
                                       positive_recall_at_k, precision_at_k, recall_at_k, target_ranks)

__all__ = ["recall_at_k", "target_ranks", "mask_columns", "fashioniq_metrics", "cirr_metrics", "cirr_submission",
           "circo_map_at_k", "circo_submission", "precision_at_k", "positive_recall_at_k", "ndcg_at_k",
           "first_false_negative_rank", "preference_rate", "preference_report", "simulated_hp_items",
           "simulated_preference_rate"]
