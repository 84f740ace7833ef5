"""Model zoo: importing this package registers every model with `trainer.models.registry`."""

import trainer.models.dlib_resnet  # noqa: F401
import trainer.models.inception_resnet_v1  # noqa: F401
import trainer.models.mobilefacenet  # noqa: F401
from trainer.models.registry import Preprocess, create_model, list_models, model_preprocess, register_model

__all__ = ["Preprocess", "create_model", "list_models", "model_preprocess", "register_model"]
