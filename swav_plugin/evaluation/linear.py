"""Fast linear probe on frozen, cached features: multinomial logistic regression by L-BFGS.

Features are standardised with the training statistics. A small sweep over the L2 weight
decay is scored on a held-out fraction of the training split; the best value is then fitted
on the whole training split and evaluated once on the test split. The objective is
``mean cross-entropy + weight_decay / 2 · ||W||²`` (the bias is not decayed), i.e.
scikit-learn's ``LogisticRegression(C=1 / (weight_decay · N))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LinearProbeResult:
    """Test accuracy (%) of the final fit, and the sweep that chose its weight decay."""

    top1: float
    top5: float
    weight_decay: float
    validation_top1: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "weight_decay": self.weight_decay,
            "validation_top1": {str(k): v for k, v in self.validation_top1.items()},
        }


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 200,
    device: str | torch.device = "cpu",
) -> nn.Linear:
    """Full-batch L-BFGS fit of a linear classifier (see the module docstring)."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be 0 or more, got {weight_decay}")
    x, y = features.to(device, torch.float32), labels.to(device)
    model = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter,
                                  history_size=20, tolerance_grad=1e-6,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.5 * weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.cpu()


@torch.no_grad()
def accuracy(model: nn.Linear, features: Tensor, labels: Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in %."""
    logits = model(features.float())
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return 100.0 * hits[:, 0].float().mean().item(), 100.0 * hits.any(1).float().mean().item()


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    weight_decays: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 200,
    device: str | torch.device = "cpu",
) -> LinearProbeResult:
    """Sweep the weight decay on a held-out split, refit the best on all of train, test once."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if not weight_decays:
        raise ValueError("weight_decays must list at least one value")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(validation_fraction * len(order)))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit_x, val_x = _standardise(train_features[fit_idx].float(), train_features[val_idx].float())
    scores = {}
    for wd in weight_decays:
        model = fit_logistic(fit_x, train_labels[fit_idx], num_classes, wd, max_iter, device)
        scores[wd] = accuracy(model, val_x, train_labels[val_idx])[0]
    best = max(weight_decays, key=lambda wd: scores[wd])  # ties: the first listed
    train_x, test_x = _standardise(train_features.float(), test_features.float())
    model = fit_logistic(train_x, train_labels, num_classes, best, max_iter, device)
    top1, top5 = accuracy(model, test_x, test_labels)
    return LinearProbeResult(top1, top5, best, scores)
