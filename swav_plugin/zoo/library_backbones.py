"""Any timm or torchvision classification model as a backbone, by name, classifier removed.

``{name: timm, model: convnext_atto, ...}`` passes the other keys to ``timm.create_model``
(``num_classes=0``: timm's pooled features; ``num_features`` is timm's own). For a ViT under
multi-crop, ``dynamic_img_size: true`` lets one model take each crop resolution (its position
embeddings are interpolated), one pass per resolution as for a CNN.

``{name: torchvision, model: convnext_tiny, ...}`` passes them to
``torchvision.models.get_model`` with ``weights=None``; the model's last ``nn.Linear`` (the
classifier: ``fc``, ``classifier[-1]``, ``heads.head``, ...) becomes the identity and its input
width is ``num_features``; what precedes it stays (the dropout of MobileNet and
EfficientNet, VGG's hidden layers). GoogLeNet and Inception-v3 are built without their
auxiliary classifiers. torchvision's ViTs and MaxViT take one image size only: use timm's for
multi-crop.

No weights are downloaded: both start from random initialisation, as SwAV pretraining does.
"""

from __future__ import annotations

import difflib
from typing import Any

import torchvision
from torch import nn

from swav_plugin.host.classifiers import last_linear
from swav_plugin.host.errors import ConfigError, missing_extra
from swav_plugin.host.registry import BACKBONES

#: torchvision models with auxiliary classifiers, which a backbone leaves out.
AUXILIARY_CLASSIFIERS = ("googlenet", "inception_v3")

try:
    import timm
except ImportError:  # an optional extra: the error names it when a recipe asks for timm
    timm = None


def _unknown(library: str, model: str, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"{len(names)} models are known"
    return ConfigError(f"{library} has no model '{model}' ({hint}); pick a name its "
                       f"list_models() gives")


@BACKBONES.register("timm")
def timm_backbone(model: str, **kwargs: Any) -> nn.Module:
    """A timm model's pooled features (``num_classes=0``); ``kwargs`` go to ``create_model``."""
    if timm is None:
        raise missing_extra("backbone 'timm'", "timm", "timm")
    if not timm.is_model(model):
        raise _unknown("timm", model, timm.list_models())
    network = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
    if not getattr(network, "num_features", 0):
        raise ConfigError(f"timm model '{model}' declares no num_features; pick a classification "
                          "model")
    return network


@BACKBONES.register("torchvision")
def torchvision_backbone(model: str, **kwargs: Any) -> nn.Module:
    """A torchvision classification model with its last ``nn.Linear`` removed."""
    names = torchvision.models.list_models(module=torchvision.models)
    if model not in names:
        raise _unknown("torchvision", model, names)
    if model in AUXILIARY_CLASSIFIERS:  # their training forward returns the aux logits too
        kwargs.setdefault("aux_logits", False)
    network = torchvision.models.get_model(model, weights=None, **kwargs)
    name = last_linear(network)
    if name is None:
        raise ConfigError(f"torchvision model '{model}' has no linear classifier to remove; "
                          "pick a classification model")
    parent_name, _, attribute = name.rpartition(".")
    parent = network.get_submodule(parent_name)
    classifier = getattr(parent, attribute)
    setattr(parent, attribute, nn.Identity())
    network.num_features = classifier.in_features
    return network
