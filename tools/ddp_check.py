"""Data-parallel training with the model on CUDA (bf16 autocast), world 1 against world 2, both
ranks sharing one GPU through gloo (NCCL needs one GPU per rank).

    python tools/ddp_check.py OUT_DIR

Prints per run the losses, the mining statistics and whether the last mined sets agree.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import distributed_workers as W  # noqa: E402

from qurelib import distributed  # noqa: E402
from qurelib import train as T  # noqa: E402
from qurelib.data.synthetic import make_fashion_shapes  # noqa: E402
from qurelib.model import load_checkpoint  # noqa: E402


def main(out: Path) -> None:
    root = str(make_fashion_shapes(out / "fs", "smoke", seed=0))
    config = dict(epochs=3, n_def=3, batch_size=16, lr=1e-4, device="cuda", progress=False)
    for world in (1, 2):
        distributed.spawn(W.train_run, world, root, str(out / f"w{world}"), config)
    one, two = T.read_history(out / "w1"), T.read_history(out / "w2")
    for a, b in zip(one, two):
        print(f"epoch {a['epoch']} {a['negatives']}: loss w1 {a['loss']:.6f} w2 {b['loss']:.6f}",
              "mining stats equal" if a.get("mining") == b.get("mining") else "mining stats differ")
    s1 = load_checkpoint(out / "w1" / T.CHECKPOINT, device="cpu").state["sets"]
    s2 = load_checkpoint(out / "w2" / T.CHECKPOINT, device="cpu").state["sets"]
    print("last mined sets identical:", all(torch.equal(s1[k], s2[k]) for k in s1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
