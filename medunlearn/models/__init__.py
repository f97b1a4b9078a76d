"""Models: the registered classifier zoo, safe checkpoints, training and MONAI bundle export."""
from medunlearn.models.checkpoint import (
    import_state_dict,
    load_checkpoint,
    model_sha256,
    save_checkpoint,
    state_distance,
)
from medunlearn.models.zoo import MODELS, Classifier, create_model, list_models, parameter_subset, register_model

__all__ = [
    "MODELS", "Classifier", "create_model", "list_models", "parameter_subset", "register_model",
    "save_checkpoint", "load_checkpoint", "import_state_dict", "model_sha256", "state_distance",
]
