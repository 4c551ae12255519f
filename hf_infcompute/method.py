"""The paper's rules in one place: the recipes, the standard weight decay, the member rule, distillation defaults.

Plain values and functions without torch, so that the search engine and the study specification import them too.
"""

from __future__ import annotations

from hf_infcompute.errors import InputError

# Recipes: "standard" tunes learning rate and epochs at the usual weight decay; "regularized" tunes weight decay too.
RECIPES = ("standard", "regularized")
STANDARD_WEIGHT_DECAY = 0.1

# Ensemble members: "none" trains each member like the single model; "paper" doubles the epochs and halves the
# weight decay of the single model's optimum, at the same learning rate.
MEMBER_RULES = ("none", "paper")

# Distillation: "sequence" (the paper's) trains on real rows mixed with the teacher's samples, 1:1 by default;
# "token" trains on real rows against the teacher's next-token distributions. Students use weight decay 0.1.
KD_MODES = ("sequence", "token")
DISTILLATION_WEIGHT_DECAY = 0.1
SYNTHETIC_FRACTION = 0.5
KD_TEMPERATURE = 1.0
KD_ALPHA = 0.5


def member_hyperparameters(
    recipe: str, num_train_epochs: float, weight_decay: float, member_rule: str
) -> tuple[float, float]:
    """`(num_train_epochs, weight_decay)` of an ensemble member trained by `member_rule` from a single model's."""
    if member_rule not in MEMBER_RULES:
        raise InputError(f"member_rule must be one of {', '.join(MEMBER_RULES)}, got {member_rule!r}")
    if member_rule == "none":
        return num_train_epochs, weight_decay
    if recipe == "standard":
        raise InputError(
            f"the paper's member rule halves weight decay, which the standard recipe fixes at {STANDARD_WEIGHT_DECAY}; "
            "use recipe=regularized"
        )
    return 2 * num_train_epochs, weight_decay / 2
