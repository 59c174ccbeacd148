"""PyTorch reference of the Cheems and Doge variants cheems loads (MODEL.md), used to train and check checkpoints.

`load(path)` builds a model from a checkpoint folder, `save(model, config, path)` writes one; `Model.forward` gives
final-norm hidden states and `Model.logits` the LM head. `check_fixtures.py` proves agreement with the golden
fixtures before anything trained with this code is trusted.
"""
from .config import RefConfig, detect_variant, from_json
from .io import load, save, write_atomic, write_json
from .model import Cache, Model, init_weights, parametrize_for_training, remove_training_parametrization

__all__ = ["Cache", "Model", "RefConfig", "detect_variant", "from_json", "init_weights", "load",
           "parametrize_for_training", "remove_training_parametrization", "save", "write_atomic", "write_json"]
