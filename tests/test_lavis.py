"""The LAVIS converter: parity with salesforce-lavis on the golden fixture (written by
tools/lavis_parity.py with LAVIS itself; no LAVIS needed here), the load_model routes, checkpoint
round-trips, and the strict loader's errors (each names the key or the file)."""

import json
from pathlib import Path

import pytest
import torch

from qurelib.model import lavis
from qurelib.model.lavis import (fixture_differences, fixture_outputs, load_lavis_model, merge_vision_tower,
                           read_lavis_state_dict)
from qurelib.model import ModelLoadError, load_model, save_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "lavis_tiny"
META = json.loads((FIXTURE / "fixture.json").read_text())
TOLERANCE = 1e-5  # the acceptance bound


@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURE / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def state():
    return read_lavis_state_dict(FIXTURE / "model.pth")


@pytest.fixture
def fixture_env(monkeypatch):
    """What load_model needs for the tiny fixture: its vocabulary, and its 16-wide heads (the
    fixture's widths 48 and 32 are split into 3 and 2 heads; real models use 64-wide heads)."""
    monkeypatch.setenv(lavis.BERT_DIR_ENV, str(FIXTURE / "tokenizer"))
    monkeypatch.setattr(lavis, "HEAD_DIM", 16)


def load(path, **kwargs):
    return load_lavis_model(path, tokenizer_dir=FIXTURE / "tokenizer", vision_heads=META["vision"]["heads"],
                            qformer_heads=META["qformer"]["heads"], **kwargs)


def outputs(model, expected):
    return fixture_outputs(model, expected, META["texts"])


def save_state(state, path, wrap=False):
    torch.save({"model": state, "epoch": 3} if wrap else state, path)
    return path


# -- parity ------------------------------------------------------------------------------------

def test_equals_salesforce_lavis_on_the_fixture():
    diffs = fixture_differences(FIXTURE)
    assert diffs["input_ids"] == 0 and diffs["attention_mask"] == 0  # blip_caption + BERT + [DEC]
    for name in ("vision_features", "query_embeds", "target_embeds", "scores"):
        assert diffs[name] <= TOLERANCE, (name, diffs[name])


def test_sizes_and_temperature_come_from_the_checkpoint():
    model = load(FIXTURE / "model.pth")
    config = model.blip2.config
    assert model.backend == "lavis" and model.image_size == META["vision"]["image_size"]
    assert config.vision_config.num_hidden_layers == META["vision"]["blocks"]
    assert config.vision_config.hidden_act == "quick_gelu"
    assert config.qformer_config.cross_attention_frequency == META["qformer"]["cross_attention_freq"]
    assert config.qformer_config.vocab_size == META["qformer"]["vocab"] == len(model.tokenizer)
    assert model.num_query_tokens == META["qformer"]["query_tokens"]
    assert model.temperature.item() == pytest.approx(META["temperature"])
    assert model.vision_frozen and not model.blip2.vision_model.embeddings.pre_layernorm.weight.requires_grad
    assert torch.count_nonzero(model.blip2.vision_model.embeddings.patch_embedding.bias) == 0


def test_block_count_is_read_not_assumed(state, tmp_path, expected):
    """LAVIS versions build 21, 22 or 23 ViT blocks: a file with one block fewer loads as such."""
    last = META["vision"]["blocks"] - 1
    fewer = {k: v for k, v in state.items() if not k.startswith(f"visual_encoder.transformer.resblocks.{last}.")}
    model = load(save_state(fewer, tmp_path / "fewer.pth"))
    assert model.blip2.config.vision_config.num_hidden_layers == last
    assert outputs(model, expected)["scores"].shape == expected["scores"].shape


# -- load_model routes and formats ---------------------------------------------------------------

def test_load_model_takes_lavis_prefix_plain_pth_and_lavis_format(fixture_env, state, expected, tmp_path):
    reference = outputs(load_model(f"lavis:{FIXTURE / 'model.pth'}", device="cpu"), expected)
    assert (reference["scores"] - expected["scores"]).abs().max() <= TOLERANCE
    wrapped = save_state(state, tmp_path / "checkpoint_best.pth", wrap=True)  # LAVIS's {"model": ...}
    model = load_model(str(wrapped), device="cpu")
    assert model.backend == "lavis"
    assert torch.equal(outputs(model, expected)["scores"], reference["scores"])


def test_checkpoint_round_trip_is_bit_identical(fixture_env, expected, tmp_path):
    model = load_model(str(FIXTURE / "model.pth"), device="cpu")
    save_checkpoint(model, tmp_path / "ckpt")
    again = load_model(str(tmp_path / "ckpt"), device="cpu")
    assert lavis.has_vision_pre_layernorm(again.blip2) and again.backend == "lavis"
    assert again.temperature.item() == model.temperature.item()
    assert len(again.tokenizer) == len(model.tokenizer)
    before, after = outputs(model, expected), outputs(again, expected)
    for name in ("input_ids", "query_embeds", "target_embeds", "scores"):
        assert torch.equal(before[name], after[name]), name


def test_merge_vision_tower_for_lavis_checkpoints_saved_without_it(state, expected, tmp_path):
    """LAVIS's trainer drops frozen weights: the ViT comes from clip_vit_L.pth (no prefix, more
    blocks than BLIP-2 uses, CLIP's ln_post / proj), merged once."""
    blocks = META["vision"]["blocks"]
    qformer_only = {k: v for k, v in state.items() if not k.startswith("visual_encoder.")}
    path = save_state(qformer_only, tmp_path / "blip2_pretrained.pth", wrap=True)
    with pytest.raises(ModelLoadError, match=r"(?s)no vision tower.*merge-vit"):
        load(path)
    clip = {k.removeprefix("visual_encoder."): v for k, v in state.items() if k.startswith("visual_encoder.")}
    extra_block = {k.replace(f"resblocks.{blocks - 1}.", f"resblocks.{blocks}."): v.clone()
                   for k, v in clip.items() if f"resblocks.{blocks - 1}." in k}
    width = META["vision"]["width"]
    clip.update(extra_block, **{"ln_post.weight": torch.ones(width), "proj": torch.zeros(width, 8)})
    merged = merge_vision_tower(path, save_state(clip, tmp_path / "clip_vit.pth"), tmp_path / "full.pth",
                                blocks=blocks)
    ours = outputs(load(merged), expected)
    assert (ours["scores"] - expected["scores"]).abs().max() <= TOLERANCE
    with pytest.raises(ModelLoadError, match="fewer than the 9"):
        merge_vision_tower(path, tmp_path / "clip_vit.pth", tmp_path / "bad.pth", blocks=9)


# -- the strict loader's errors ------------------------------------------------------------------

def broken(state, tmp_path, drop=(), add=None, name="broken.pth"):
    changed = {k: v for k, v in state.items() if k not in drop}
    changed.update(add or {})
    return save_state(changed, tmp_path / name)


def test_missing_tensor_is_named(state, tmp_path):
    key = "Qformer.bert.encoder.layer.1.output_query.dense.weight"
    with pytest.raises(ModelLoadError, match=rf"missing: '{key}'"):
        load(broken(state, tmp_path, drop=[key]))


def test_missing_block_tensor_is_named(state, tmp_path):
    key = "visual_encoder.transformer.resblocks.1.attn.in_proj_weight"
    with pytest.raises(ModelLoadError, match=rf"missing: '{key}'"):
        load(broken(state, tmp_path, drop=[key]))


def test_missing_temperature_is_named(state, tmp_path):
    with pytest.raises(ModelLoadError, match="'temp'"):
        load(broken(state, tmp_path, drop=["temp"]))


def test_unknown_tensor_is_named(state, tmp_path):
    with pytest.raises(ModelLoadError, match=r"does not: 'Qformer\.bert\.pooler\.dense\.weight'"):
        load(broken(state, tmp_path, add={"Qformer.bert.pooler.dense.weight": torch.zeros(32, 32)}))


def test_wrong_shape_is_named(state, tmp_path):
    wrong = state["text_proj.weight"].T.contiguous()
    with pytest.raises(ModelLoadError, match=r"wrong shape: 'text_proj\.weight' is \(32, 16\)"):
        load(broken(state, tmp_path, add={"text_proj.weight": wrong}))


def test_eva_vit_g_dict_given_for_vit_l_is_refused(state, tmp_path):
    eva = {k: v for k, v in state.items() if not k.startswith("visual_encoder.")}
    eva.update({"visual_encoder.cls_token": torch.zeros(1, 1, 1408),
                "visual_encoder.patch_embed.proj.weight": torch.zeros(1408, 3, 14, 14),
                "visual_encoder.blocks.0.attn.qkv.weight": torch.zeros(3 * 1408, 1408)})
    with pytest.raises(ModelLoadError, match=r"EVA ViT-g.*'visual_encoder\.blocks\.0\.attn\.qkv\.weight'"):
        load(save_state(eva, tmp_path / "vitg.pth"))


def test_qformer_for_another_vit_width_is_refused(state, tmp_path):
    """A ViT-g-trained Q-Former (1408-wide cross-attention) over a ViT-L-style tower."""
    add = {f"Qformer.bert.encoder.layer.{i}.crossattention.self.{kv}.weight": torch.zeros(32, 64)
           for i in (0, 2) for kv in ("key", "value")}
    with pytest.raises(ModelLoadError, match=r"64-wide image features.*crossattention\.self\.key\.weight"):
        load(broken(state, tmp_path, add=add))


def test_truncated_file_is_named(tmp_path):
    data = (FIXTURE / "model.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"cannot read {path}"):
        load(path)


def test_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelLoadError, match=rf"{path} is not a state dict"):
        load(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no LAVIS checkpoint file"):
        load_model(f"lavis:{tmp_path / 'nothing.pth'}")


def test_tokenizer_files_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.delenv(lavis.BERT_DIR_ENV, raising=False)
    with pytest.raises(ModelLoadError, match=r"vocab\.txt.*" + str(tmp_path)):
        load_lavis_model(FIXTURE / "model.pth", tokenizer_dir=tmp_path, vision_heads=3, qformer_heads=2)


def test_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    with pytest.raises(ModelLoadError, match=r"7 tokens with \[DEC\].*word_embeddings"):
        load_lavis_model(FIXTURE / "model.pth", tokenizer_dir=tmp_path, vision_heads=3, qformer_heads=2)


def test_heads_that_do_not_divide_the_width_are_refused():
    with pytest.raises(ModelLoadError, match="vision_heads="):
        load_lavis_model(FIXTURE / "model.pth", tokenizer_dir=FIXTURE / "tokenizer")  # 48 // 64 = 0 heads


def test_key_rules_read_both_ways():
    for key in ("Qformer.bert.encoder.layer.4.crossattention.self.value.bias",
                "visual_encoder.transformer.resblocks.22.attn.in_proj_weight", "text_proj.weight",
                "Qformer.bert.embeddings.LayerNorm.weight", "visual_encoder.ln_pre.bias"):
        converted = lavis.convert_lavis_state_dict({key: torch.zeros(2)})
        assert [lavis.lavis_key(k) for k in converted] == [key]


def test_notebook_04_compares_a_checkpoint_named_by_path(fixture_env):
    """`-p compare lavis:/path/model.pth` evaluates a released QuRe checkpoint directly."""
    import yaml

    from qurelib import study
    from qurelib.paths import PARAMS_DIR
    from qurelib.study.config import FIELDS

    smoke = {k: v for k, v in yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text()).items() if k in FIELDS}
    cfg = study.study_config(**{**smoke, "device": "cpu"})
    model = study.load_named_model(cfg, f"lavis:{FIXTURE / 'model.pth'}")
    assert model.backend == "lavis" and model.vision_frozen


def test_no_vocabulary_anywhere_is_named_not_a_five_token_tokenizer(tmp_path, monkeypatch):
    """transformers 5 builds a tokenizer of its special tokens alone from an empty Hugging Face cache
    instead of raising; the error must be the missing vocab.txt and where to put it."""
    from qurelib.model.lavis import BERT_DIR_ENV, lavis_tokenizer

    monkeypatch.delenv(BERT_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=f"(?s)vocab.txt.*{BERT_DIR_ENV}=DIR"):
        lavis_tokenizer(checkpoint=tmp_path / "model.pth")
