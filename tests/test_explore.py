"""qurelib.study.explore: a query row outside the split is named, not an IndexError."""

import pytest
import torch

from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
from qurelib.study.explore import query_figure


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)
    return load_fashion_shapes(root, "val")["dress"]


@pytest.mark.parametrize("query", [99, -1, 1.0, True])
def test_a_query_outside_the_split_is_named(split, query):
    scores = torch.zeros(len(split.queries), len(split.corpus_ids))
    with pytest.raises(ValueError, match=f"query={query!r}: expected a query row in 0..{len(split.queries) - 1}"):
        query_figure(split, scores, query, "drops")
