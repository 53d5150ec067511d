"""The BLIP-2 CIR scorer: shapes, parity with transformers' own BLIP-2 paths, freezing, tokenizer,
checkpoints and the offline error for real weights (tiny preset, CPU)."""

import json
import os
from pathlib import Path

import pytest
import torch

from qurelib.model import (ModelLoadError, build_tiny, load_checkpoint, load_model, save_checkpoint)
from qurelib.model.tokenizer import WordTokenizer

WORDS = ("a", "red", "blue", "striped", "dress", "shirt", "with", "long", "sleeves", "make", "it")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(WORDS).eval()


@pytest.fixture(scope="module")
def batch(tiny):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, tiny.image_size, tiny.image_size, generator=g)
    tokens = tiny.tokenize(["make it red", "A blue, striped dress with long sleeves.", "shirt"])
    return pixels, tokens


def test_shapes_and_normalisation(tiny, batch):
    pixels, tokens = batch
    with torch.no_grad():
        image_embeds = tiny.encode_image(pixels)
        query = tiny.encode_query(pixels, **tokens)
        corpus = tiny.encode_corpus(pixels)
        text = tiny.encode_text(**tokens)
    t, d = tiny.num_query_tokens, tiny.blip2.config.image_text_hidden_size
    patch = tiny.blip2.config.vision_config.patch_size
    assert image_embeds.shape == (3, (tiny.image_size // patch) ** 2 + 1, 128)
    assert query.shape == (3, d) and corpus.shape == (3, t, d) and text.shape == (3, d)
    for emb in (query, corpus, text):
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(emb.shape[:-1]))
    scores = tiny.score(query, corpus)
    assert scores.shape == (3, 3)
    torch.testing.assert_close(scores, torch.einsum("qd,ntd->qnt", query, corpus).amax(-1))
    # cached image embeddings give the same embeddings as pixels
    torch.testing.assert_close(tiny.encode_corpus(image_embeds=image_embeds), corpus, rtol=0, atol=0)
    torch.testing.assert_close(tiny.encode_query(None, **tokens, image_embeds=image_embeds), query,
                               rtol=0, atol=0)
    assert len(set(corpus[0].sum(-1).tolist())) == t  # query tokens are not all zero-initialised


def test_corpus_path_equals_transformers_itc(tiny, batch):
    pixels, tokens = batch
    with torch.no_grad():
        out = tiny.blip2(pixel_values=pixels, **tokens, use_image_text_matching_head=False)
        ours = tiny.encode_corpus(pixels)
        text = tiny.encode_text(**tokens)
    torch.testing.assert_close(ours, out.image_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(text, out.text_embeds, rtol=1e-5, atol=1e-6)


def test_query_path_equals_transformers_itm(tiny, batch):
    pixels, tokens = batch
    captured = {}

    def keep_output(module, args, output):  # returns None: the output is left unchanged
        captured["hidden"] = output.last_hidden_state

    hook = tiny.blip2.qformer.register_forward_hook(keep_output)
    try:
        with torch.no_grad():
            out = tiny.blip2(pixel_values=pixels, **tokens, use_image_text_matching_head=True)
    finally:
        hook.remove()
    with torch.no_grad():
        hidden = tiny.query_hidden_states(pixels, **tokens)
        query = tiny.encode_query(pixels, **tokens)
    t = tiny.num_query_tokens
    torch.testing.assert_close(hidden[:, :t], captured["hidden"][:, :t], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiny.blip2.itm_head(hidden[:, :t]).mean(1), out.logits_per_image,
                               rtol=1e-5, atol=1e-6)
    expected = torch.nn.functional.normalize(tiny.blip2.text_projection(captured["hidden"][:, :t]).mean(1), dim=-1)
    torch.testing.assert_close(query, expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_qformer_not_frozen_vision(batch):
    model = build_tiny(WORDS).train()
    assert not model.blip2.vision_model.training  # a frozen tower stays in eval mode
    pixels, tokens = batch
    query = model.encode_query(pixels, **tokens)
    corpus = model.encode_corpus(pixels)
    loss = (model.score(query, corpus).diagonal() / model.temperature).mean()
    loss.backward()
    vision = model.blip2.vision_model
    assert all(p.grad is None for p in vision.encoder.parameters())
    assert all(p.grad is None for p in vision.embeddings.parameters())
    assert vision.post_layernorm.weight.grad is not None  # ln_vision trains, as in the released code
    assert model.blip2.query_tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.blip2.qformer.parameters() if p.requires_grad)
    assert model.temperature.grad is not None
    assert model.blip2.text_projection.weight.grad is not None
    assert model.blip2.vision_projection.weight.grad is not None


def test_unfrozen_vision_gets_gradients(batch):
    model = build_tiny(WORDS, freeze_vision=False).train()
    pixels, _ = batch
    model.encode_corpus(pixels).sum().backward()
    assert model.blip2.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None


def test_tokenizer_round_trips_fashion_shapes_vocabulary():
    from qurelib.data.synthetic import VOCABULARY

    tokenizer = WordTokenizer(VOCABULARY)
    ids = tokenizer([*VOCABULARY], max_length=32)["input_ids"]
    for i, word in enumerate(VOCABULARY):
        row = ids[i][ids[i] != tokenizer.pad_token_id]
        assert row.tolist() == [tokenizer.cls_token_id, tokenizer.vocab[word], tokenizer.sep_token_id]
        assert tokenizer.decode(row) == word
    sentence = " ".join(VOCABULARY[:20])
    row = tokenizer([sentence.upper() + "."], max_length=64)["input_ids"][0]
    assert tokenizer.unk_token_id not in row.tolist() and tokenizer.decode(row) == sentence
    assert tokenizer(["zebra"])["input_ids"][0, 1] == tokenizer.unk_token_id


def test_tokenize_truncates_to_32_tokens(tiny):
    tokens = tiny.tokenize(["red " * 60, "blue"])
    assert tokens["input_ids"].shape == (2, 32) and tokens["attention_mask"][1].sum() == 3


def test_save_load_bit_identical_scores(tiny, batch, tmp_path):
    pixels, tokens = batch
    with torch.no_grad():
        before = tiny.score(tiny.encode_query(pixels, **tokens), tiny.encode_corpus(pixels))
    state = {"step": 7, "rng": torch.get_rng_state()}
    save_checkpoint(tiny, tmp_path / "ckpt", extra={"epoch": 3}, state=state)
    save_checkpoint(tiny, tmp_path / "ckpt", extra={"epoch": 4}, state=state)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind
    loaded = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert loaded.extra == {"epoch": 4} and loaded.state["step"] == 7
    assert torch.equal(loaded.state["rng"], state["rng"])
    model = loaded.model
    assert model.vision_frozen and model.temperature.item() == tiny.temperature.item()
    with torch.no_grad():
        after = model.score(model.encode_query(pixels, **tokens), model.encode_corpus(pixels))
    assert torch.equal(before, after)
    assert torch.equal(load_model(tmp_path / "ckpt").tokenize(["red dress"])["input_ids"],
                       tiny.tokenize(["red dress"])["input_ids"])


def test_failed_save_leaves_previous_checkpoint(tiny, tmp_path):
    save_checkpoint(tiny, tmp_path / "ckpt", extra={"epoch": 1})
    with pytest.raises(TypeError):
        save_checkpoint(tiny, tmp_path / "ckpt", extra={"bad": object()})
    with pytest.raises(RuntimeError):
        save_checkpoint(tiny, tmp_path / "ckpt", state=_Unpicklable())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert load_checkpoint(tmp_path / "ckpt", "cpu").extra == {"epoch": 1}


def test_save_refuses_to_replace_a_foreign_directory(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_checkpoint(tiny, tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


@pytest.mark.parametrize("damage", ["no_config", "bad_json", "no_weights", "truncated_weights",
                                    "flipped_byte", "no_state", "missing_dir"])
def test_damaged_checkpoint_raises_clear_error(tiny, tmp_path, damage):
    ckpt = save_checkpoint(tiny, tmp_path / "ckpt", state={"step": 1})
    weights = ckpt / "model.safetensors"
    if damage == "no_config":
        (ckpt / "config.json").unlink()
    elif damage == "bad_json":
        (ckpt / "config.json").write_text("{ not json")
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flipped_byte":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "no_state":
        (ckpt / "train_state.pt").unlink()
    elif damage == "missing_dir":
        ckpt = tmp_path / "nowhere"
    expected = {"no_config": "config.json", "bad_json": "config.json", "no_weights": "model.safetensors",
                "truncated_weights": "model.safetensors", "flipped_byte": "model.safetensors",
                "no_state": "train_state.pt", "missing_dir": "nowhere"}[damage]
    with pytest.raises(ModelLoadError, match=expected):
        load_checkpoint(ckpt, "cpu")


def test_partial_checkpoint_through_load_model(tiny, tmp_path):
    ckpt = save_checkpoint(tiny, tmp_path / "ckpt")
    (ckpt / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(ckpt)


def test_real_weights_offline_raise_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: nothing to find
    with pytest.raises(ModelLoadError) as info:
        load_model("Salesforce/blip2-itm-vit-g", device="cpu")
    message = str(info.value)
    assert "hf download Salesforce/blip2-itm-vit-g" in message and "config.json" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(tmp_path / "not-here" / "blip2-itm-vit-g")


@pytest.mark.slow
def test_real_blip2_weights_from_local_dir():
    local = os.environ.get("QURE_BLIP2_DIR")
    if not local or not Path(local).is_dir():
        pytest.skip("set QURE_BLIP2_DIR to a local Salesforce/blip2-itm-vit-g directory")
    model = load_model(local, device="auto")
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    tokens = model.tokenize(["a dog", "a cat on a sofa"])
    with torch.no_grad():
        query = model.encode_query(pixels, **tokens)
        corpus = model.encode_corpus(pixels)
        out = model.blip2(pixel_values=pixels.to(model.device), **tokens, use_image_text_matching_head=False)
    assert query.shape == (2, 256) and corpus.shape == (2, 32, 256)
    torch.testing.assert_close(corpus, out.image_embeds.float(), rtol=2e-2, atol=2e-2)
    assert json.loads((Path(local) / "config.json").read_text())["model_type"] == "blip-2"
