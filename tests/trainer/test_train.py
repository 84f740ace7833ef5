"""The training loop end to end on a tiny real crop cache: steps, resume, DDP with 2 gloo ranks, export."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.model_card import load_card
from pipeline.core.settings import load_config
from pipeline.detect import MTCNN
from trainer.config import TrainConfig
from trainer.crops import CropCache
from trainer.export import export
from trainer.prepare import prepare
from trainer.selection import training_indices

REPO = Path(__file__).resolve().parents[2]
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon", "Jean_Chretien"]


@pytest.fixture(scope="module")
def tiny_cache(shared_data, tmp_path_factory) -> Path:
    """112x112 crops of 6 LFW people x 4 images (symlinked tree; nothing copied)."""
    root = tmp_path_factory.mktemp("tree")
    for name in PEOPLE:
        (root / name).mkdir()
        for image in sorted((shared_data / "lfw" / "images" / name).glob("*.jpg"))[:4]:
            (root / name / image.name).symlink_to(image)
    out = tmp_path_factory.mktemp("cache") / "crops"
    summary = prepare(root, out, size=(112, 112), detector=MTCNN(engine="torch"), progress=False)
    assert summary.crops == 24
    return out


def _config(cache: Path, out: Path, **overrides) -> TrainConfig:
    data = {"data": {"cache": str(cache)}, "model": {"name": "mobilefacenet"},
            "batch": {"identities": 3, "images_per_identity": 2}, "optim": {"steps": 4, "warmup_steps": 1},
            "output": str(out), "log_every": 1, "checkpoint_every": 2, "threads": 1}
    for key, value in overrides.items():
        section, leaf = key.split("__")
        data.setdefault(section, {})[leaf] = value
    return TrainConfig.model_validate(data)


def _run(cfg: TrainConfig, resume: bool = False, until: int | None = None) -> dict:
    from trainer.train import train

    return train(cfg, resume=resume, until=until)


def test_train_writes_weights_logs_and_is_deterministic(tiny_cache, tmp_path):
    first = _run(_config(tiny_cache, tmp_path / "a"))
    _run(_config(tiny_cache, tmp_path / "b"))
    assert first["steps"] == 4 and first["images_per_s"] > 0
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed must give the same weights"
    assert list((tmp_path / "a" / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars written"
    assert (tmp_path / "a" / "config.resolved.yaml").is_file()


def test_resume_continues_to_the_same_weights(tiny_cache, tmp_path):
    straight = _run(_config(tiny_cache, tmp_path / "straight"))
    _run(_config(tiny_cache, tmp_path / "resumed"), until=2)  # as if stopped after step 2
    resumed = _run(_config(tiny_cache, tmp_path / "resumed"), resume=True)
    assert straight["steps"] == resumed["steps"] == 4
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "resume must land where a straight run does"


def test_holdout_folds_remove_their_people(tiny_cache, shared_data, tmp_path):
    cache = CropCache.open(tiny_cache)
    cfg = _config(tiny_cache, tmp_path, data__holdout_pairs=str(shared_data / "lfw" / "pairs_shared_folds.txt"),
                  data__holdout_folds=list(range(1, 8)))
    # Every person of every fold held out: only people named in no pair may remain.
    from trainer.selection import holdout_identities

    held = holdout_identities(cfg.data)
    kept = {cache.identities[label] for label in cache.labels[training_indices(cache, cfg.data)]} \
        if not set(PEOPLE) <= held else set()
    assert not kept & held


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_ranks_gather_before_mining(tiny_cache, tmp_path):
    """torchrun-style: 2 CPU processes; mining sees both ranks' embeddings, weights stay in sync."""
    cfg = _config(tiny_cache, tmp_path / "ddp", optim__steps=2)
    config_file = tmp_path / "ddp.json"
    config_file.write_text(cfg.model_dump_json())
    script = (
        "import json, sys, torch; from trainer.config import TrainConfig; from trainer.train import Trainer;"
        "from trainer.distributed import DistContext;"
        "cfg = TrainConfig.model_validate_json(open(sys.argv[1]).read()); ctx = DistContext.from_env();"
        "t = Trainer(cfg, ctx); rec = t.train_step();"
        "w = torch.cat([p.detach().flatten() for p in t.model.parameters()]);"
        "print(json.dumps({'rank': ctx.rank, 'global': rec['batch/global_size'], 'w': float(w.sum())})); ctx.close()"
    )
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(config_file)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    local = cfg.batch.identities * cfg.batch.images_per_identity
    assert all(r["global"] == 2 * local for r in results), results
    assert abs(results[0]["w"] - results[1]["w"]) < 1e-4, "DDP ranks must hold the same weights after a step"


def test_export_writes_onnx_and_card_with_parity(tiny_cache, tmp_path):
    run = tmp_path / "run"
    _run(_config(tiny_cache, run, optim__steps=1))
    card_path = export(run, tmp_path / "models" / "tiny.onnx", model_id="tiny")
    card = load_card(card_path)
    assert card.architecture == "mobilefacenet" and card.input_size == (112, 112)
    assert card.metrics["export_parity_max_abs_diff"] < 1e-4
    assert len(card.fingerprint) == 16 and (tmp_path / "models" / "tiny.onnx").is_file()


def _cosine_to(card_path: Path, run: Path, cache: Path) -> float:
    """Mean cosine between the run's embeddings and the carded model's embeddings of the same crops."""
    from trainer.export import load_run
    from trainer.old_model_targets import old_model_targets

    crops = CropCache.open(cache)
    old, _ = old_model_targets(crops, card_path)
    _, model = load_run(run)
    images = (crops.crops[:].astype("float32") - 127.5) / 128.0
    with torch.inference_mode():
        new = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    return float(torch.nn.functional.cosine_similarity(new, old).mean())


def test_compat_term_makes_a_new_model_harmonic_with_the_old(tiny_cache, tmp_path):
    """Harmonic training pulls a fresh network (another seed) toward the old model's embeddings of the same
    faces; the memory bank's term joins the loss once a batch is remembered."""
    _run(_config(tiny_cache, tmp_path / "old", optim__steps=2))
    old_card = export(tmp_path / "old", tmp_path / "models" / "old.onnx", model_id="old")
    common = {"optim__steps": 16, "optim__lr": 1e-3}
    another_seed = {"seed": 7}
    _run(_config(tiny_cache, tmp_path / "plain", **common).model_copy(update=another_seed))
    harmonic = _config(tiny_cache, tmp_path / "harmonic", compat__model=str(old_card), compat__weight=10.0,
                       memory__enabled=True, memory__size=32, **common)
    _run(harmonic.model_copy(update=another_seed))
    events = list((tmp_path / "harmonic" / "tb").glob("events.out.tfevents.*"))
    logged = b"".join(path.read_bytes() for path in events)
    assert b"loss/memory" in logged and b"loss/compat_cosine" in logged, "both terms joined the loss"
    with_compat = _cosine_to(old_card, tmp_path / "harmonic", tiny_cache)
    without = _cosine_to(old_card, tmp_path / "plain", tiny_cache)
    assert with_compat > without + 0.1, (with_compat, without)
    # Its card says which model its embeddings are harmonic with, even once that card's file is replaced.
    old_fingerprint = load_card(old_card).fingerprint
    old_card.write_text("replaced")
    new = load_card(export(tmp_path / "harmonic", tmp_path / "models" / "new.onnx", flip_average=True))
    assert new.harmonic_with == [old_fingerprint] and new.accepts(old_fingerprint) and new.flip_average
    assert new.training["compat"]["fingerprint"] == old_fingerprint and new.training["memory"]["size"] == 32
    assert load_card(export(tmp_path / "plain", tmp_path / "models" / "plain.onnx")).harmonic_with == []


def test_open_set_term_brings_strangers_under_its_threshold(tiny_cache, tmp_path):
    """One threshold for every pair of the batch, the memory and the old model's embeddings: trained with it,
    fewer stranger pairs score above it than trained without (same seed), and self pairs are never counted."""
    from trainer.distributed import DistContext
    from trainer.train import Trainer

    _run(_config(tiny_cache, tmp_path / "old", optim__steps=2))
    old_card = export(tmp_path / "old", tmp_path / "models" / "old.onnx", model_id="old")
    common = {"optim__steps": 20, "optim__lr": 1e-3, "memory__enabled": True, "memory__size": 32,
              "compat__model": str(old_card), "compat__weight": 0.0, "compat__triplet_weight": 0.0}
    cut = -0.3  # triplets alone leave about a third of this batch's stranger pairs above it
    threshold = {"open_set__threshold": cut, "open_set__margin": 0.0}

    def trained(**extra) -> tuple[Trainer, list[dict]]:
        trainer = Trainer(_config(tiny_cache, tmp_path / str(len(extra)), **common, **threshold, **extra),
                          DistContext())
        return trainer, [trainer.train_step() for _ in range(20)]

    def strangers_over(trainer: Trainer) -> float:
        images, labels, _ = trainer.batches.batch(0)
        with torch.no_grad():
            unit = torch.nn.functional.normalize(trainer.model(images), dim=1)
        return float(((unit @ unit.T) > cut)[labels[:, None] != labels[None, :]].float().mean())

    plain, plain_records = trained()
    with_term, records = trained(open_set__enabled=True, open_set__weight=10.0)
    assert all("loss/open_set" in r for r in records) and not any("loss/open_set" in r for r in plain_records)
    # The first step: the batch with itself less its 6 self pairs, and with the old model's 6.
    assert records[0]["open_set/negatives_over"] + records[0]["open_set/positives_under"] <= 6 * 12 - 6
    assert strangers_over(plain) > 0.2, "the batch must have strangers above the threshold to begin with"
    assert strangers_over(with_term) < strangers_over(plain) / 2, (strangers_over(with_term), strangers_over(plain))


def test_old_model_targets_are_what_its_embedder_gives_galleries(shared_data, tmp_path):
    """Harmonic training aims at the old model's embeddings as galleries hold them: with its card's views
    (here v1's card, asked to flip-average and shift)."""
    from pipeline.recognise.embedder import Embedder
    from trainer.export import model_template
    from trainer.old_model_targets import old_model_targets

    root = tmp_path / "tree"
    for name in PEOPLE[:2]:
        (root / name).mkdir(parents=True)
        for image in sorted((shared_data / "lfw" / "images" / name).glob("*.jpg"))[:2]:
            (root / name / image.name).symlink_to(image)
    prepare(root, tmp_path / "crops", size=(150, 150), template=model_template("dlib_resnet"),
            detector=MTCNN(engine="torch"), progress=False)
    crops = CropCache.open(tmp_path / "crops")
    v1 = REPO / "models" / "facestream-v1.json"
    card = json.loads(v1.read_text()) | {"onnx": str(v1.with_suffix(".onnx"))}
    for name, views in (("views", {"flip_average": True, "test_time_shifts": [[2, 0], [0, -2]]}),
                        ("plain", {"flip_average": False, "test_time_shifts": []})):
        (tmp_path / f"{name}.json").write_text(json.dumps(card | views))
    targets, _ = old_model_targets(crops, tmp_path / "views.json")
    embedded = Embedder(tmp_path / "views.json").embed(np.ascontiguousarray(crops.crops[:]))
    np.testing.assert_allclose(targets.numpy(), embedded, atol=1e-5)
    without_views, _ = old_model_targets(crops, tmp_path / "plain.json")  # a cache file of its own
    assert np.max(np.abs(without_views.numpy() - embedded)) > 1e-3


def test_config_rejects_unknown_key_naming_file(tmp_path):
    from pipeline.core.errors import ConfigError

    path = tmp_path / "train.yaml"
    path.write_text("data:\n  cache: x\noptim:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.stepz' in .*train.yaml"):
        load_config(path, model=TrainConfig)


def test_cli_export_then_eval_prints_the_protocol_json(tiny_cache, shared_data, tmp_path):
    """`python -m trainer export` and `eval` as a user runs them (View-1 pairs file, no header)."""
    run = tmp_path / "run"
    _run(_config(tiny_cache, run, optim__steps=1))
    onnx = tmp_path / "cli.onnx"
    done = subprocess.run([sys.executable, "-m", "trainer", "export", "--run", str(run), "--out", str(onnx),
                           "--flip-average", "--shift-average", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = load_card(onnx.with_suffix(".json"))
    assert card.flip_average and card.test_time_shifts == [(2, 0), (-2, 0)]
    lines = (shared_data / "lfw" / "pairsDevTest_shared.txt").read_text().splitlines()
    matched = [line for line in lines if len(line.split()) == 3][:4]
    mismatched = [line for line in lines if len(line.split()) == 4][:4]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(matched + mismatched) + "\n")
    done = subprocess.run([sys.executable, "-m", "trainer", "eval", "--pairs", str(pairs), "--images",
                           str(shared_data / "lfw" / "images"), "--model", str(onnx.with_suffix(".json")),
                           "--json", "--plot", str(tmp_path / "roc.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for key in ("accuracy", "accuracy_std", "val_at_far", "far", "auc", "threshold", "pairs", "no_detection"):
        assert key in result, key
    assert result["pairs"] == 8 and 0.0 <= result["accuracy"] <= 1.0
    assert (tmp_path / "roc.png").stat().st_size > 10_000


def test_cli_reports_bad_config_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "malformed YAML" in done.stderr and "Traceback" not in done.stderr
