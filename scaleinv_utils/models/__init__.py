"""Which models the book compares, how to load them, and the demo zoo trained here.

The public names live in submodules and are re-exported here (``su.models.load_model``):
:mod:`~.catalogue` (what each model is), :mod:`~.loaders` (loading for feature
extraction), :mod:`~.zoo` (the demo zoo's table), :mod:`~.demo_models` (tokenizer,
architectures, corpus), :mod:`~.training` (the training command) and
:mod:`~.evaluation` (held-out quality).
"""
from . import catalogue, demo_models, evaluation, loaders, training, zoo
from .catalogue import (KINDS, MAX_MODELS_ENV, ModelInfo, limit_models, list_models, model_info,
                        models_table, resolve_name)
from .demo_models import (DEMO_ARCHITECTURE, VISION_ATTRIBUTES, WEIGHTS_JSON, WordTokenizer,
                          build_demo_module, demo_corpus, demo_weights_dir, read_weights_json)
from .evaluation import attribute_probes, demo_quality, evaluate_retrieval, zero_shot_classify
from .loaders import LoadedModel, load_model, weights_mode
from .training import train_demo_models

__all__ = [
    "ModelInfo", "LoadedModel", "WordTokenizer", "KINDS", "list_models", "model_info",
    "models_table", "resolve_name", "limit_models", "MAX_MODELS_ENV", "load_model", "weights_mode", "train_demo_models",
    "evaluate_retrieval", "zero_shot_classify", "demo_quality", "attribute_probes",
    "demo_weights_dir", "read_weights_json", "demo_corpus", "build_demo_module",
    "DEMO_ARCHITECTURE", "VISION_ATTRIBUTES", "WEIGHTS_JSON", "zoo",
]
