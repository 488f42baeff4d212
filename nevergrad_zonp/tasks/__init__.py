"""Training and benchmark tasks (models, data, losses); import the submodules for the others."""

from .attack import (
    AttackProblem,
    AttackSet,
    attack_problems,
    attack_success_rate,
    l1_penalty,
    margin_loss,
    margin_loss_per_setting,
    margins,
    train_attack_classifier,
)
from .onn import onn_classifier_task

__all__ = [
    "AttackProblem",
    "AttackSet",
    "attack_problems",
    "attack_success_rate",
    "l1_penalty",
    "margin_loss",
    "margin_loss_per_setting",
    "margins",
    "onn_classifier_task",
    "train_attack_classifier",
]
