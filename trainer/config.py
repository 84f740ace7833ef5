"""Training configuration (configs/train_*.yaml), validated like every other config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.core.settings import Section


class DataConfig(Section):
    cache: Path = Field(description="aligned-crop cache written by `python -m trainer prepare`")
    # Identity-disjoint validation: people named in these folds of this pairs file are left out of training.
    holdout_pairs: Path | None = None
    holdout_folds: list[int] = []
    min_images: int = Field(2, ge=2, description="identities with fewer images cannot form positives")


class BatchConfig(Section):
    identities: int = Field(16, ge=2, description="P identities per batch")
    images_per_identity: int = Field(4, ge=2, description="K images per identity")


class MiningConfig(Section):
    margin: float = Field(0.2, gt=0, description="alpha: the one owner of the triplet margin")
    miner: Literal["semihard", "batch_hard", "batch_all"] = "semihard"
    # Curriculum: after `miner`, move to batch-hard negatives once the mean active-triplet fraction
    # over `window` steps falls below `threshold`.
    curriculum: bool = True
    threshold: float = Field(0.1, ge=0, le=1)
    window: int = Field(50, ge=1)
    min_steps: int = Field(0, ge=0)


class OptimConfig(Section):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    steps: int = Field(1000, ge=1)
    warmup_steps: int = Field(50, ge=0)
    freeze: list[str] = Field([], description="parameter-name prefixes kept frozen (fine-tuning)")


class AugmentConfig(Section):
    """Mirrors trainer.augment.AugmentConfig, which validates the values."""

    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    shift: float = 0.05
    scale: float = 0.05
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)
    grayscale_p: float = 0.05


class DistillConfig(Section):
    enabled: bool = False
    mode: Literal["centred_cosine", "cosine", "relational"] = "centred_cosine"
    weight: float = Field(1.0, ge=0)
    teacher: Literal["dlib_resnet"] = "dlib_resnet"


class MemoryConfig(Section):
    """Cross-batch memory: semi-hard negatives also from the last `size` embeddings (trainer.pool_miner)."""

    enabled: bool = False
    size: int = Field(2048, ge=1, description="embeddings kept from past batches")
    weight: float = Field(1.0, ge=0, description="weight of the memory's triplet term")


class CompatConfig(Section):
    """Harmonic embeddings: stay comparable with an older model's embeddings of the same faces, so a gallery
    enrolled with that model keeps matching this one's probes (the card then lists it in `harmonic_with`)."""

    model: Path | None = Field(None, description="the older model's card (JSON); unset: no compatibility terms")
    weight: float = Field(1.0, ge=0, description="1 - cos(new, old) of the same crop")
    triplet_weight: float = Field(1.0, ge=0, description="cross-model triplets: new anchor, old positive/negative")


class OpenSetConfig(Section):
    """One cosine threshold for every pair (trainer.losses.ThresholdLoss): triplets order each anchor's own scores,
    but an open-set gallery names a stranger whenever any score passes one global threshold."""

    enabled: bool = False
    threshold: float = Field(0.87, gt=-1, lt=1, description="cosine of the operating point (about FAR 3e-5)")
    margin: float = Field(0.05, ge=0, lt=1, description="negatives kept below threshold - margin/2, "
                                                       "positives above threshold + margin/2")
    weight: float = Field(1.0, ge=0)


class ModelConfig(Section):
    name: str = "mobilefacenet"
    init: Literal["random", "dlib"] = "random"
    # Re-centre outputs on the teacher's mean embedding (models with a `centre` buffer, e.g. dlib_resnet):
    # a dlib-initialised student then starts exactly at its centred distillation target.
    centre_output: bool = False


class TrainConfig(Section):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    batch: BatchConfig = BatchConfig()
    mining: MiningConfig = MiningConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    distill: DistillConfig = DistillConfig()
    memory: MemoryConfig = MemoryConfig()
    compat: CompatConfig = CompatConfig()
    open_set: OpenSetConfig = OpenSetConfig()
    seed: int = 0
    threads: int = Field(0, ge=0)
    output: Path = Path("runs/train")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
