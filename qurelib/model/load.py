"""`load_model`: a name or path -> CIRModel. The kinds of source are tried in a fixed order, the
catch-all last:

    "tiny"                      the tiny preset, random init (`modeling.build_tiny`), its word
                                tokenizer over a dataset's vocabulary.txt when `vocabulary` is given
    a qurelib checkpoint dir    `checkpoint.load_checkpoint`
    "lavis:<path>" or a .pth    a LAVIS BLIP-2 / released QuRe state dict (`lavis.load_lavis_model`)
    anything else               real BLIP-2 retrieval weights: a local transformers dir or a hub id
                                (never downloaded at run time unless HF_HUB_OFFLINE=0 and online)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

from qurelib.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from qurelib.model.lavis import PREFIX as LAVIS_PREFIX
from qurelib.model.lavis import is_lavis_source, load_lavis_model
from qurelib.model.modeling import CIRModel, ModelLoadError, build_tiny, resolve_device
from qurelib.model.tokenizer import HFTokenizer


def load_model(name_or_path: str | os.PathLike, *, device: str = "auto", freeze_vision: bool = True,
               vocabulary: str | os.PathLike | None = None) -> CIRModel:
    """A CIRModel from "tiny", a checkpoint dir, a local BLIP-2 dir or a hub id (e.g. Salesforce/blip2-itm-vit-g).

    vocabulary: for "tiny" only, a generated dataset's folder or its vocabulary.txt (`read_vocabulary`):
    the tokenizer's words (default: the discrete Fashion-Shapes vocabulary; the continuous variant's
    words would otherwise all be [UNK]). Checkpoints carry their own tokenizer.
    Raises ModelLoadError (with what to download and where) when nothing can be loaded offline.
    """
    name = str(name_or_path)
    if name == "tiny":
        model = build_tiny(None if vocabulary is None else read_vocabulary(vocabulary), freeze_vision=freeze_vision)
    elif is_checkpoint(name):
        model = load_checkpoint(name, "cpu", freeze_vision=freeze_vision).model
    elif is_lavis_source(name):
        model = load_lavis_model(name.removeprefix(LAVIS_PREFIX), freeze_vision=freeze_vision)
    else:  # the catch-all: real BLIP-2 weights
        model = load_hf_blip2(name, freeze_vision)
    return model.to(resolve_device(device)).eval()


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of a generated dataset's tokenizer, in file order: `path`/vocabulary.txt (or `path`
    itself when it is that file), one word a line, as `synthetic.make_fashion_shapes` writes it."""
    path = Path(path).expanduser()
    file = path / "vocabulary.txt" if path.is_dir() else path
    try:
        words = [w for w in file.read_text(encoding="utf-8").splitlines() if w]
    except OSError as error:
        raise ModelLoadError(f"read_vocabulary: cannot read {file} ({error.strerror or error}); expected a "
                             f"dataset folder with vocabulary.txt, one word a line "
                             f"(make_fashion_shapes writes it)") from None
    if not words:
        raise ModelLoadError(f"read_vocabulary: {file} holds no words (expected one word a line)")
    return words


def is_checkpoint(name: str) -> bool:
    """Whether `name` is a directory written by `save_checkpoint` (or a damaged one)."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return False
    if (path / "config.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            return json.loads((path / "config.json").read_text()).get("format") == CHECKPOINT_FORMAT
        return True  # unreadable config.json: let load_checkpoint name the problem
    return (path / "model.safetensors").is_file() or (path / "train_state.pt").is_file()


_HF_HELP = (
    "Real BLIP-2 weights are never downloaded at run time. On a machine with network run\n"
    "    hf download {name} --local-dir /path/to/{leaf}\n"
    "(or `huggingface-cli download ...`; or pre-fill the hub cache, ~/.cache/huggingface/hub),\n"
    "then call load_model('/path/to/{leaf}'). That directory must hold: config.json (model_type\n"
    "'blip-2', a Blip2ForImageTextRetrieval checkpoint such as Salesforce/blip2-itm-vit-g),\n"
    "model.safetensors or model.safetensors.index.json + its shards, and the tokenizer files\n"
    "(tokenizer_config.json with vocab.txt and/or tokenizer.json, special_tokens_map.json)."
)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe so an unreachable hub fails in seconds instead of hanging in retries."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_hf_blip2(name: str, freeze_vision: bool = True) -> CIRModel:
    """Real BLIP-2 retrieval weights + their tokenizer from a local dir, the hub cache or the hub."""
    path = Path(name).expanduser()
    is_dir = path.is_dir()
    if not is_dir and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"load_model: no such directory {path}.\n" + _HF_HELP.format(
            name="Salesforce/blip2-itm-vit-g", leaf=path.name or "blip2-itm-vit-g"))
    source = str(path) if is_dir else name
    local_only = is_dir or _offline() or not _hub_reachable()
    try:
        blip2, info = Blip2ForImageTextRetrieval.from_pretrained(
            source, local_files_only=local_only, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError, EnvironmentError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        where = "offline (HF_HUB_OFFLINE=1 or no network)" if local_only else "from the hub"
        raise ModelLoadError(f"load_model: cannot load BLIP-2 weights {name!r} {where}: {reason}\n"
                             + _HF_HELP.format(name=name if not is_dir else "Salesforce/blip2-itm-vit-g",
                                               leaf=path.name or "blip2-itm-vit-g")) from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("itm_head")]
    if missing:
        raise ModelLoadError(f"load_model: {name!r} is not a BLIP-2 retrieval checkpoint (missing "
                             f"{missing[:4]}...); use e.g. Salesforce/blip2-itm-vit-g.")
    return CIRModel(blip2.float(), HFTokenizer(tokenizer), freeze_vision=freeze_vision,
                    backend="hf-blip2", source=name)
