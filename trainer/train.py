"""The training loop: P x K batches -> embeddings -> (gather across ranks) -> mining -> triplet loss.

Deterministic from the config's seed, resumable from `output/checkpoint.pt`, TensorBoard scalars under
`output/tb`, tqdm on rank 0. Works alone or under `torchrun` (DDP).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.core.errors import ConfigError
from pipeline.core.settings import save_resolved
from trainer.batches import BatchLoader
from trainer.config import TrainConfig
from trainer.crops import CropCache
from trainer.curriculum import Curriculum, Stage
from trainer.distributed import DistContext
from trainer.losses import DistillationLoss, ThresholdLoss, TripletLoss, teacher_mean
from trainer.models import create_model, model_preprocess
from trainer.old_model_targets import old_model_targets
from trainer.pool_miner import MemoryBank, PoolMiner
from trainer.selection import training_indices
from trainer.teacher_targets import teacher_targets

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    kwargs = {"weights": "dlib"} if cfg.model.init == "dlib" else {}
    model = create_model(cfg.model.name, **kwargs)
    for name, param in model.named_parameters():
        if any(name.startswith(prefix) for prefix in cfg.optim.freeze):
            param.requires_grad_(False)
    return model


def build_curriculum(cfg: TrainConfig) -> Curriculum:
    mining = cfg.mining
    stages = [Stage(mining.miner)]
    if mining.curriculum and mining.miner != "batch_hard":
        stages.append(Stage("batch_hard"))
    return Curriculum(mining.margin, stages=stages, threshold=mining.threshold, window=mining.window,
                      min_steps=mining.min_steps, seed=cfg.seed)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the base rate."""
    warm = cfg.optim.warmup_steps
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, cfg.optim.steps - warm)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext):
        self.cfg, self.ctx = cfg, ctx
        self.out = Path(cfg.output)
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cache = CropCache.open(cfg.data.cache)
        indices = training_indices(cache, cfg.data)
        self.model = build_model(cfg)
        self.batches = BatchLoader(cache, indices, model_preprocess(cfg.model.name), cfg, rank=ctx.rank,
                                   world_size=ctx.world_size)
        self.targets = teacher_targets(cache, cfg) if cfg.distill.enabled else None
        self.distill = None
        if cfg.distill.enabled:
            centre = teacher_mean(self.targets[indices])
            self.distill = DistillationLoss(cfg.distill.mode, teacher_mean=centre)
            if cfg.model.centre_output:
                if not hasattr(self.model, "centre"):
                    raise ConfigError(f"model {cfg.model.name} has no output centre; unset model.centre_output")
                self.model.centre.copy_(centre)
        self.old_targets = None
        if cfg.compat.model is not None:
            self.old_targets, old_card = old_model_targets(cache, cfg.compat.model)
            self.compat_cosine = DistillationLoss("cosine")
            log.info("harmonic with %s (%s)", old_card.model_id, old_card.fingerprint)
            self.harmonic_with = {"model_id": old_card.model_id, "fingerprint": old_card.fingerprint}
        self.pool_miner = PoolMiner(cfg.mining.margin)
        self.pool_loss = TripletLoss(cfg.mining.margin)
        self.memory = MemoryBank(cfg.memory.size, 128) if cfg.memory.enabled else None
        self.open_set = (ThresholdLoss(cfg.open_set.threshold, cfg.open_set.margin)
                         if cfg.open_set.enabled else None)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if ctx.enabled else self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, lambda s: _lr_factor(s, cfg))
        self.curriculum = build_curriculum(cfg)
        self.step = 0
        self.writer = None
        if ctx.is_main:
            from tensorboardX import SummaryWriter  # writes TensorBoard event files, no TF stack

            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.out)
            self.writer = SummaryWriter(str(self.out / "tb"))

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "sched": self.sched.state_dict(),
            "curriculum": self.curriculum.state_dict(),
            "memory": self.memory.state_dict() if self.memory is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)  # never a half-written checkpoint

    def load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.curriculum.load_state_dict(state["curriculum"])
        if self.memory is not None and state.get("memory") is not None:
            self.memory.load_state_dict(state["memory"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", self.checkpoint_path, self.step)

    # -- the loop ----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        images, labels, rows = self.batches.batch(self.step)
        embeddings = self.ddp(images)
        all_embeddings, all_labels = self.ctx.gather(embeddings, labels)
        miner = self.curriculum.miner
        triplets = miner.mine(all_embeddings.detach(), all_labels)
        triplet_loss = self.curriculum.loss(all_embeddings, triplets).loss
        loss = triplet_loss
        record = {"loss/triplet": triplet_loss.item(), "batch/global_size": float(len(all_labels)),
                  **miner.last_stats.as_log()}
        if self.distill is not None:
            distill_loss = self.distill(embeddings, self.targets[rows])
            loss = loss + self.cfg.distill.weight * distill_loss
            record["loss/distill"] = distill_loss.item()
        loss = loss + self._open_set_term(embeddings, labels, rows, record)  # before this batch joins the memory
        loss = loss + self._memory_term(embeddings, labels, record) + self._compat_term(embeddings, labels, rows, record)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.sched.step()
        record.update(self.curriculum.step(miner.last_stats))
        record["loss/total"] = loss.item()
        record["lr"] = self.sched.get_last_lr()[0]
        return record

    def _open_set_term(self, embeddings: torch.Tensor, labels: torch.Tensor, rows, record: dict) -> torch.Tensor:
        """One threshold for all pairs of the batch with the batch, the memory and the old model's embeddings."""
        if self.open_set is None:
            return embeddings.sum() * 0.0
        pools, pool_labels = [embeddings], [labels]
        if self.memory is not None and len(self.memory):
            pools.append(self.memory.embeddings)
            pool_labels.append(self.memory.labels)
        if self.old_targets is not None:  # old templates must meet new probes at the same threshold
            pools.append(self.old_targets[rows])
            pool_labels.append(labels)
        self_pairs = torch.zeros(len(embeddings), sum(len(p) for p in pools), dtype=torch.bool,
                                 device=embeddings.device)
        self_pairs[:, :len(embeddings)] = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
        term, stats = self.open_set(embeddings, labels, torch.cat(pools), torch.cat(pool_labels), self_pairs)
        record.update({"loss/open_set": term.item(), **stats})
        return self.cfg.open_set.weight * term

    def _memory_term(self, embeddings: torch.Tensor, labels: torch.Tensor, record: dict) -> torch.Tensor:
        """Triplets with the batch's pairs and negatives from past batches; then this batch joins the memory."""
        if self.memory is None:
            return embeddings.sum() * 0.0
        term = embeddings.sum() * 0.0
        if len(self.memory):
            a, p, n = self.pool_miner.mine(embeddings, labels, embeddings, self.memory.embeddings,
                                           self.memory.labels, same_set=True)
            scored = self.pool_loss(torch.cat([embeddings, self.memory.embeddings]), (a, p, n + len(embeddings)))
            term = self.cfg.memory.weight * scored.loss
            record.update({"loss/memory": scored.loss.item(), **self.pool_miner.last_stats.as_log("memory/")})
        self.memory.push(embeddings, labels)
        return term

    def _compat_term(self, embeddings: torch.Tensor, labels: torch.Tensor, rows, record: dict) -> torch.Tensor:
        """Harmonic embeddings: new embeddings near the old model's of the same crop, and cross-model triplets
        (new anchor, old positive, old negative) so that old templates rank new probes as they should."""
        if self.old_targets is None:
            return embeddings.sum() * 0.0
        old = self.old_targets[rows]
        cosine = self.compat_cosine(embeddings, old)
        a, p, n = self.pool_miner.mine(embeddings, labels, old, old, labels, same_set=False)
        cross = self.pool_loss(torch.cat([embeddings, old]), (a, p + len(old), n + len(old)))
        record.update({"loss/compat_cosine": cosine.item(), "loss/compat_triplet": cross.loss.item()})
        return self.cfg.compat.weight * cosine + self.cfg.compat.triplet_weight * cross.loss

    def run(self, until: int | None = None) -> dict:
        """Train up to step `until` (default: the configured total), checkpointing on the way."""
        self.model.train()
        total = min(until or self.cfg.optim.steps, self.cfg.optim.steps)
        start_step, started = self.step, time.perf_counter()
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not self.ctx.is_main, unit="step")
        while self.step < total:
            record = self.train_step()
            self.step += 1
            bar.update(1)
            if self.writer and (self.step % self.cfg.log_every == 0 or self.step == total):
                for key, value in record.items():
                    self.writer.add_scalar(key, value, self.step)
                bar.set_postfix(loss=f"{record['loss/total']:.4f}", active=f"{record['mining/active_fraction']:.2f}",
                                stage=self.curriculum.stage.miner)
            if self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        elapsed = time.perf_counter() - started
        images = (self.step - start_step) * self.batches.batch_size * self.ctx.world_size
        summary = {"command": shlex.join(["python", "-m", "trainer", *sys.argv[1:]]),
                   "steps": self.step, "wall_s": round(elapsed, 1),
                   "images_per_s": round(images / max(elapsed, 1e-9), 2),
                   "final_stage": self.curriculum.stage.miner}
        if self.old_targets is not None:  # export reads it: the old card's file may since have been replaced
            summary["harmonic_with"] = self.harmonic_with
        if self.ctx.is_main:
            torch.save(self.model.state_dict(), self.out / "model.pt")
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            self.writer.close()
        return summary


def train(cfg: TrainConfig, resume: bool = False, until: int | None = None) -> dict:
    ctx = DistContext.from_env()
    try:
        trainer = Trainer(cfg, ctx)
        if resume:
            trainer.load_checkpoint()
        return trainer.run(until)
    finally:
        ctx.close()
