"""Why the widest gaps of the score curve sit at the bottom, measured on a study's data
with one of its trained models; prints numbers, writes nothing.

    .venv/bin/python tools/lower_tail.py --params params/default.yaml --model warmup_only
    .venv/bin/python tools/lower_tail.py --params params/default.yaml --model info_nce --windows 50,100,200

Per training split: the mean gap per tenth of the ranking (relative to the row's mean gap), where
the steepest drop below the target lies, whether the same images sit at the bottom of every curve,
and where each drop rule's H sits and what it is made of (`audit.hardness_stats`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from qurelib import anatomy, audit, study
from qurelib.qure import MiningSpec, mine_hard_negatives
from qurelib.study.config import FIELDS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "params" / "default.yaml")
    ap.add_argument("--model", default="warmup_only", help="a model name of the study (load_named_model)")
    ap.add_argument("--windows", default="50,100,200",
                    help="drop windows to audit, comma-separated (a count of images, or a fraction like 0.02)")
    args = ap.parse_args(argv)
    specs = [MiningSpec.parse(text) for text in ["drops", "drops-paper", "drops-scale_free"] +
             [f"drops-w{w.strip()}" for w in args.windows.split(",") if w.strip()] +
             ["after_target_top_k-k100", "all"]]  # a bad window is named here, before anything is loaded
    base = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"  # every parameter; profiles override
    params = yaml.safe_load(base.read_text()) | (yaml.safe_load(args.params.read_text()) or {})
    cfg = study.study_config(**{k: params[k] for k in FIELDS})
    splits = study.load_splits(cfg, "train")
    model = study.load_named_model(cfg, args.model)
    scores = study.split_scores(model, splits, study.image_cache(cfg, model, progress=False), progress=False)
    for name, split in splits.items():
        s, target = scores[name], split.target_indices()
        print(f"== {name}: {s.shape[0]} queries x {s.shape[1]} corpus images, model {args.model}")
        print("mean gap per tenth of the ranking / mean gap:",
              " ".join(f"{g:.2f}" for g in anatomy.gaps_by_decile(s)))
        steep = anatomy.steepest_drop_position(s, target)
        steep = steep[~np.isnan(steep)]
        print(f"steepest drop below the target: median position {np.median(steep):.2f} of the corpus; "
              f"in the bottom tenth for {100 * (steep > 0.9).mean():.0f} % of the queries")
        low = anatomy.persistent_low_images(s, share=0.05)
        print(f"bottom 5 % of each curve held by the corpus's 5 % lowest-on-average images: "
              f"{100 * low['overlap']:.0f} % (unrelated bottoms: ~5 %); spread of images' mean z: "
              f"{low['mean_z_spread']:.2f}")
        ranks = audit.score_ranks(s)
        distance = audit.attribute_distances(split.attributes, split.corpus_ids, target)
        levels = len(audit.attribute_names(split.attributes)) + 1 if distance is not None else None
        if distance is not None:
            corpus = audit.corpus_composition(distance, target, levels)
            print(f"{'corpus':26s} composition by distance 0..: " + " / ".join(f"{v:.1f}" for v in corpus.values()))
        for spec in specs:
            sets = mine_hard_negatives(s, target, spec)
            h = audit.hardness_stats(sets, ranks, distance, levels)
            comp = "unknown" if h["composition"] is None else " / ".join(f"{v:.1f}" for v in h["composition"].values())
            print(f"{str(spec):26s} |H| mean {h['size_mean']:7.1f}  rank median {h['rank_median']:.2f} "
                  f"(p10 {h['rank_p10']:.2f}, p90 {h['rank_p90']:.2f})  composition {comp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
