"""3D or 2D: what ``medseg train --config auto`` (the default) trains under a budget.

nnU-Net trains its 3D configuration by default. Under a time budget on a slow device the 3D
network can get too few optimiser steps to learn anything, while the 2D one, many times
cheaper per step, gets enough: then the 2D configuration trains. The choice is made from
the step times :func:`medseg.train.autoplan.fit_plan` measured for both configurations on
this device and is recorded with its reason in the fold's ``plan.json``
(``auto.configuration``).
"""

from __future__ import annotations

from medseg.preprocess.plan import Plan
from medseg.train.autoplan import STEPS_TARGET, Budget, Candidate, expected_steps

#: ``--config auto`` trains 2D when the 3D network would reach less than this share of
#: STEPS_TARGET (1: when no 3D network reaches the target). Measured on ct_headneck
#: (docs/benchmarks.md): 15 min on the AMD 2-core CPU, validation fold: 3D (510 steps) Dice
#: 0 on every organ, 2D (3794 steps) 0.555; 30 min, test cases: 3D (868 steps) 0.266 vs 2D
#: (5848) 0.606 on the AMD CPU, and 3D (1981 steps, ~2600 expected: over half the target)
#: 0.530 vs 2D (6977) 0.642 on a faster Intel one; BraTS held-out case 0, 15 min: 3D (405
#: steps) whole tumour 0.797 vs 2D (3463) 0.884. Half the target (the first rule) let the
#: 3D network train on the faster CPU and lose 0.11.
AUTO_2D_BELOW = 1.0


def planned_steps(plan: Plan, name: str, budget: Budget) -> int | None:
    """Optimiser steps the fitted configuration ``name`` is expected to reach in the budget
    (None without a budget or a measured step time)."""
    config = plan.configuration(name)
    seconds = plan.auto.get("measured", {}).get(budget.device, {}).get(
        Candidate(config.filters[0], config).key)
    if budget.minutes is None or seconds is None:
        return None
    return expected_steps(budget.minutes, seconds)


def pick_configuration(plan: Plan, budget: Budget) -> tuple[str, str]:
    """The configuration ``"auto"`` trains, from a ``plan`` fitted to ``budget`` (both
    configurations), and why.

    3D (nnU-Net's default) unless the budget is too short for it on this device: when its
    fitted network is expected to reach fewer than :data:`AUTO_2D_BELOW` of the
    :data:`STEPS_TARGET` steps and the 2D one reaches more, 2D trains instead.
    """
    if "2d" not in plan.configurations or budget.minutes is None:
        return "3d", "3d: nnU-Net's default (no time budget)"
    steps = {name: planned_steps(plan, name, budget) for name in ("3d", "2d")}
    if steps["3d"] is None or steps["2d"] is None:
        return "3d", "3d: nnU-Net's default (step times not measured)"
    short = steps["3d"] < AUTO_2D_BELOW * STEPS_TARGET and steps["2d"] > steps["3d"]
    why = (f"~{steps['3d']} steps of 3D vs ~{steps['2d']} of 2D expected in "
           f"{budget.minutes:g} min on {budget.device}: ")
    if short:
        return "2d", why + (f"3D would reach fewer than {AUTO_2D_BELOW * STEPS_TARGET:.0f} "
                            "steps, 2D trains (a longer budget or a faster device trains 3D)")
    return "3d", why + "3D trains (nnU-Net's default)"
