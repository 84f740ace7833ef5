"""Mining curriculum: start with FaceNet's semi-hard negatives, move to harder ones as training settles.

The signal is the batch's active fraction (`MiningStats.active_fraction`: the share of all valid
triplets with positive loss). While it is high, semi-hard negatives give plenty of gradient and avoid
the collapse that hardest negatives cause early on (Schroff et al., §3.2). When its mean over a
moving window falls below `threshold`, the curriculum advances to the next stage: a harder miner
and/or a larger margin.

The margin α has one owner, the config value given as `margin`; a stage only scales it
(`margin_scale`), and the curriculum builds the stage's miner *and* loss from the same scaled
value so the two can never disagree.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from pipeline.core.errors import ConfigError
from trainer.losses import TripletLoss
from trainer.miners import MINERS, MiningStats, create_miner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    miner: str  # a name in trainer.miners.MINERS
    margin_scale: float = 1.0  # this stage's margin = config margin × margin_scale
    options: Mapping[str, object] = field(default_factory=dict)  # extra miner arguments, e.g. select


DEFAULT_STAGES = (Stage("semihard"), Stage("batch_hard"))


class Curriculum:
    """Holds the current stage's miner and loss; `step()` feeds it one batch's active fraction.

    Usage per batch: `triplets = cur.miner.mine(emb.detach(), labels)`; `out = cur.loss(emb, triplets)`;
    `record = cur.step(cur.miner.last_stats)`; log `record` (e.g. to TensorBoard). A stage advances at
    most once per `window` steps, after at least `min_steps` steps in it; the last stage is final.
    """

    def __init__(
        self,
        margin: float,
        stages: Sequence[Stage] = DEFAULT_STAGES,
        threshold: float = 0.1,
        window: int = 50,
        min_steps: int = 0,
        seed: int = 0,
    ):
        _check(stages, threshold, window, min_steps)
        self.base_margin = float(margin)
        self.stages = tuple(stages)
        self.threshold, self.window, self.min_steps = threshold, window, min_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self._recent: deque[float] = deque(maxlen=window)
        self._enter(0, steps_in_stage=0)

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def margin(self) -> float:
        return self.base_margin * self.stage.margin_scale

    def step(self, stats: MiningStats | float) -> dict[str, float]:
        """Record one batch; returns the log record (stage and margin are those for the next batch)."""
        active = stats.active_fraction if isinstance(stats, MiningStats) else float(stats)
        self._recent.append(active)
        self.steps += 1
        self.steps_in_stage += 1
        mean = sum(self._recent) / len(self._recent)
        advance = (
            self.stage_index + 1 < len(self.stages)
            and len(self._recent) == self.window
            and self.steps_in_stage >= self.min_steps
            and mean < self.threshold
        )
        if advance:
            self._enter(self.stage_index + 1, steps_in_stage=0)
            log.info(
                "curriculum: step %d, active fraction %.3f < %.3f over %d steps: stage %d (%s, margin %.3f)",
                self.steps, mean, self.threshold, self.window, self.stage_index, self.stage.miner, self.margin,
            )
        return {
            "curriculum/stage": float(self.stage_index),
            "curriculum/margin": self.margin,
            "curriculum/active_fraction": active,
            "curriculum/active_fraction_mean": mean,
            "curriculum/advanced": float(advance),
        }

    def state_dict(self) -> dict:
        return {
            "stage_index": self.stage_index,
            "steps": self.steps,
            "steps_in_stage": self.steps_in_stage,
            "recent": list(self._recent),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.steps = int(state["steps"])
        self._enter(int(state["stage_index"]), steps_in_stage=int(state["steps_in_stage"]))
        self._recent.extend(state["recent"])
        self.generator.set_state(state["generator"])

    def _enter(self, index: int, steps_in_stage: int) -> None:
        """Switch to stage `index`: new miner and loss at the stage's margin, fresh window."""
        if not 0 <= index < len(self.stages):
            raise ConfigError(f"curriculum stage {index} does not exist; there are {len(self.stages)}")
        self.stage_index = index
        self.steps_in_stage = steps_in_stage
        self._recent.clear()
        options = dict(self.stage.options)
        if self.stage.miner == "semihard":
            options.setdefault("generator", self.generator)
        self.miner = create_miner(self.stage.miner, self.margin, **options)
        self.loss = TripletLoss(self.margin)


def _check(stages: Sequence[Stage], threshold: float, window: int, min_steps: int) -> None:
    if not stages:
        raise ConfigError("curriculum needs at least one stage")
    for stage in stages:
        if stage.miner not in MINERS:
            raise ConfigError(f"curriculum stage miner {stage.miner!r} unknown; known: {', '.join(sorted(MINERS))}")
        if not stage.margin_scale >= 0:
            raise ConfigError(f"curriculum margin_scale must be >= 0, got {stage.margin_scale!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"curriculum threshold is an active fraction in [0, 1], got {threshold!r}")
    if window < 1 or min_steps < 0:
        raise ConfigError(f"curriculum needs window >= 1 and min_steps >= 0, got {window} and {min_steps}")
