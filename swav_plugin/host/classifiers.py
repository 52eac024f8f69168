"""Where a library's classification model keeps its classifier."""

from __future__ import annotations

from torch import nn


def last_linear(model: nn.Module) -> str | None:
    """The name of ``model``'s last ``nn.Linear`` submodule (``fc``, ``classifier.3``,
    ``heads.head``, ...): the classifier of a torchvision or timm model; ``None`` if none."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None
