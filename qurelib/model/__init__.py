"""The CIR model: BLIP-2's Q-Former scorer on transformers, its tiny preset, checkpoints and loading.

    modeling     CIRModel (encode_image / encode_query / encode_corpus / score), the tiny preset
    tokenizer    LAVIS caption cleaning; the tiny word tokenizer and a transformers adapter
    checkpoint   save_checkpoint / load_checkpoint (safetensors + config.json, atomic, sha256)
    load         load_model: "tiny", a checkpoint dir, real BLIP-2 weights
    pretrain     image <-> description pretraining of the tiny backbone
"""

from qurelib.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, verify_checkpoint
from qurelib.model.load import load_model
from qurelib.model.modeling import CIRModel, ModelLoadError, build_tiny, resolve_device, tiny_blip2_config

__all__ = ["CIRModel", "ModelLoadError", "build_tiny", "tiny_blip2_config", "resolve_device", "load_model",
           "Checkpoint", "load_checkpoint", "save_checkpoint", "verify_checkpoint"]
