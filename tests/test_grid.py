"""qurelib.study.grid: the index re-mining table read from the runs' histories."""

from qurelib.study import grid


def _history(sizes, fn, index=None, avg=50.0):
    """A run's history: a warm-up epoch, then one record per re-mining with the given |H| means."""
    records = [{"epoch": 0}]
    for e, size in enumerate(sizes, 1):
        stats = {"queries": 10, "size_mean": size, "size_max": 9, "fallbacks": 0, "fn_rate": fn}
        if index:
            stats["candidates"] = {"index": index[0], "search": index[1]}
        records.append({"epoch": e, "mining": {"dress": stats}, "mining_s": 2.0 * e})
    records[-1]["val"] = {"avg": avg, "nDCG@10": 70.0}
    return records


def test_index_remining_table_compares_every_re_mining_with_the_exact_run(monkeypatch, tmp_path):
    histories = {grid.INDEX_EXACT_RUN: _history([5.0, 6.0], 4.0),
                 "index_flat": _history([5.0, 6.0], 4.0, ("Flat", "")),
                 "index_ivf": _history([5.0, 6.5], 3.5, ("IVF16,Flat", "nprobe=4"), avg=49.0),
                 "index_missing": []}
    monkeypatch.setattr(grid, "read_history", lambda path: histories[path.name])
    rows = {r["run"]: r for r in grid.index_remining_table(tmp_path, ["index_flat", "index_ivf", "index_missing"])}
    assert rows[grid.INDEX_EXACT_RUN]["index"] == "none (full scores)"
    assert rows["index_flat"]["sets' statistics as exact"] is True
    assert rows["index_ivf"]["sets' statistics as exact"] is False  # the second re-mining differs
    assert rows["index_ivf"]["index"] == "IVF16,Flat (nprobe=4)" and rows["index_ivf"][grid.AVG] == 49.0
    assert rows["index_flat"]["mining s / re-mining"] == 3.0  # (2 + 4) / 2
    assert rows["index_missing"]["note"] == "not trained"
