"""Tiny-backbone pretraining: the contrastive loss, and a few-step smoke run of the real entry point
on a generated smoke-profile Fashion-Shapes (checkpoint written, reused, and the report filled)."""

import math

import pytest
import torch
import torch.nn.functional as F

from qurelib.model import load_checkpoint
from qurelib.model.pretrain import contrastive_loss, main, pretrain_tiny


def test_contrastive_loss_multi_positive():
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(3, 16, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 1, 2])
    aligned = text[labels][:, None].expand(4, 2, 16)          # every image matches its own text
    random = F.normalize(torch.randn(4, 2, 16, generator=g), dim=-1)
    t = torch.tensor(0.07)
    assert contrastive_loss(aligned, text, labels, t) < contrastive_loss(random, text, labels, t)
    # one text per image and one image per text: the plain symmetric CLIP loss
    image = F.normalize(torch.randn(3, 2, 16, generator=g), dim=-1)
    sim = torch.einsum("btd,ud->but", image, text).amax(-1) / t
    clip = (F.cross_entropy(sim, torch.arange(3)) + F.cross_entropy(sim.T, torch.arange(3))) / 2
    torch.testing.assert_close(contrastive_loss(image, text, torch.arange(3), t), clip)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    from qurelib.data.synthetic import make_fashion_shapes

    return make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)


@pytest.fixture(scope="module")
def pretrained(smoke_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "tiny"
    model, report = pretrain_tiny(smoke_data, out, epochs=1, batch_size=64, seed=0, device="cpu",
                                  progress=False)
    return out, model, report


def test_pretrain_smoke_writes_and_reuses_checkpoint(smoke_data, pretrained):
    out, model, report = pretrained
    assert not report["reused"] and report["train_images"] > 200
    assert 0.0 <= report["val_top1"] <= 1.0 and report["val_descriptions"] > 1
    assert math.isclose(report["chance_top1"], 1 / report["val_descriptions"])
    assert {"val_colour_acc", "val_pattern_acc", "val_category_acc"} <= set(report)
    assert model.vision_frozen and model.temperature.item() == pytest.approx(0.07)
    ckpt = load_checkpoint(out, "cpu")
    assert ckpt.extra["pretrain_report"]["val_top1"] == report["val_top1"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ckpt.model.state_dict().values()))
    again, report2 = pretrain_tiny(smoke_data, out, epochs=1, batch_size=64, device="cpu", progress=False)
    assert report2["reused"] and report2["val_top1"] == report["val_top1"]


def test_pretrain_cli_reuses_matching_checkpoint(smoke_data, pretrained, capsys):
    out, _, report = pretrained
    assert main(["--data", str(smoke_data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "64", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert '"reused": true' in printed and f'"val_top1": {report["val_top1"]}' in printed
