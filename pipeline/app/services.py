"""The composition root: config -> detector, embedder, gallery, matcher, gates, voter, trackers, sources.

Every entry point builds its parts here (run.py, enroll.py, bench/, the console and workers to come), so a
section of the config is read in one place and the algorithms below it see plain values only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.selection import PREFERENCE
from pipeline.app.config import AppConfig, CameraConfig, GalleryConfig
from pipeline.core.errors import ConfigError, GalleryError
from pipeline.core.model_card import load_card
from pipeline.core.settings import Section
from pipeline.detect import MTCNN
from pipeline.detect.process import DetectorPool
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.cohort import Cohort, load_cohort
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ApproximateSearch, ExactSearch, Search, ServerSearch
from pipeline.gallery.self_enrol import SelfEnrolment
from pipeline.gallery.threshold import GalleryThreshold, OperatingPoint, operating_point
from pipeline.recognise.embedder import Embedder
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import EvidenceGates, QualityGates
from pipeline.redis.connect import connect
from pipeline.unknowns.clustering import (
    OnlineClusters,
    assignment_threshold,
    merge_threshold,
)
from pipeline.unknowns.directory import UnknownDirectory
from pipeline.unknowns.recorder import UnknownRecorder
from pipeline.unknowns.sightings import DAY_S, UnknownStore
from pipeline.video.motion import MotionGate
from pipeline.video.sources import FrameSource
from pipeline.video.stages import CameraDetector
from pipeline.video.tracker import IouTracker
from pipeline.video.verification import Verifier
from pipeline.video.voting import IdentityVoter

log = logging.getLogger(__name__)


def make_embedder(cfg: AppConfig, model: Path, batch_size: int | None = None) -> Embedder:
    """The embedder the `engine` section asks for ("auto": the first engine of the preference list that starts
    here, each one skipped logged with why: a provider ORT lists but cannot load is skipped, not fatal)."""
    batch = batch_size or cfg.run.embed_batch
    if cfg.engine.name == "auto":
        options = {name: engine_options(cfg, name, model) for name in PREFERENCE}
        # The last resort is the CPU: ORT's GPU providers were tried (and skipped) as engines of their own.
        options["onnxruntime"]["providers"] = cfg.engine.providers or ["CPUExecutionProvider"]
        return Embedder(model, "auto", batch_size=batch, auto_options=options)
    return Embedder(model, cfg.engine.name, batch_size=batch, **engine_options(cfg, cfg.engine.name, model))


def engine_options(cfg: AppConfig, name: str, model: Path) -> dict:
    """What engine `name` is built with from the `engine` section (`model`: the embedder's card)."""
    engine = cfg.engine
    if name == "triton":
        return {"url": engine.triton_url, "model_name": engine.triton_model or load_card(model).model_id,
                "timeout_s": engine.triton_timeout_s}
    if name == "onnxruntime":
        # One intra-op thread by default: detection and recognition each keep one core busy.
        return {"providers": engine.providers, "allow_fallback": engine.allow_fallback, "threads": engine.threads or 1}
    if name.startswith("onnxruntime-"):
        return {"allow_fallback": engine.allow_fallback, "threads": engine.threads or 1}
    if name == "torch-cuda":
        # The engine rebuilds the card's architecture in torch; engines/ may not import the trainer that owns them.
        from trainer.models import create_model

        return {"create_model": create_model}
    return {}


def make_detector(cfg: AppConfig, min_face_size: int | None = None,
                  processes: int = 0) -> MTCNN | DetectorPool:
    """The MTCNN the `detector` section describes; `min_face_size` overrides it (run.min_face_size);
    `processes` > 0: that many child processes detect (close() the pool)."""
    d = cfg.detector
    settings = {"min_face_size": min_face_size or d.min_face_size, "thresholds": d.thresholds,
                "scale_factor": d.scale_factor, "engine": d.engine, "max_side": d.max_side, "threads": d.threads,
                "pyramid": d.pyramid, "max_face_size": d.max_face_size}
    return DetectorPool(processes, **settings) if processes else MTCNN(**settings)


def redis_client(cfg: AppConfig, url: str | None = None):
    """A client for `url` (a CLI's --redis-url), else `redis.url`, else the embedded server under `redis.state_dir`."""
    return connect(url or cfg.redis.url, cfg.redis.state_dir)


def write_safety(cfg: AppConfig) -> dict:
    """How many replicas confirm each gallery write, and for how long it waits (redis.wait_replicas)."""
    return {"wait_replicas": cfg.redis.wait_replicas, "wait_timeout_ms": cfg.redis.wait_timeout_ms}


def open_gallery(client, gallery: str, fingerprint: str, harmonic_with: Sequence[str] = (), **safety) -> GalleryStore:
    """The gallery as it was created, to match against; GalleryError if it holds templates of a model other than
    the embedder's and those its card is harmonic with (`harmonic_with`)."""
    return GalleryStore.open(client, gallery, fingerprint=fingerprint, harmonic_with=harmonic_with, **safety)


def make_search(cfg: GalleryConfig, mirror: GalleryMirror, store: GalleryStore) -> Search:
    """The search backend `gallery.search` names: over the mirror (exact, ann, auto) or in Redis (server)."""
    if cfg.search == "server":
        return ServerSearch.of_store(store)
    if cfg.search == "exact":
        return ExactSearch(mirror)
    if cfg.search == "ann":
        return ApproximateSearch(mirror)
    return ApproximateSearch(mirror, exact_below=cfg.exact_below)  # auto: exact until the gallery is that large


def make_matcher(cfg: AppConfig, mirror: GalleryMirror, store: GalleryStore,
                 threshold: float | GalleryThreshold, cohort: Cohort | None = None) -> Matcher:
    """The open-set matcher over the configured search, scoring identities as `run.score` says (normalised
    against `cohort`, whose curve `threshold` must come from)."""
    return Matcher(make_search(cfg.gallery, mirror, store), threshold, score=cfg.run.score, cohort=cohort)


def match_cohort(cfg: AppConfig, card, card_path) -> Cohort | None:
    """The card's cohort when `run.normalise` (the default) and the card has one; None: raw cosines."""
    return load_cohort(card, card_path) if cfg.run.normalise else None


def matching_card(cfg: AppConfig, card, gallery_fingerprint: str | None):
    """The card whose thresholds the matcher uses on a gallery of that model (`ModelCard.matching`)."""
    return card.matching(gallery_fingerprint, cfg.run.normalise)


@dataclass
class LiveGallery:
    """A gallery as a recognising program reads it: the store, its in-memory mirror (following Redis), its
    open-set operating point (re-chosen as the gallery grows or shrinks: pipeline/gallery/threshold.py), and the
    matcher over the configured search."""

    client: object
    store: GalleryStore
    mirror: GalleryMirror
    operating: GalleryThreshold
    matcher: Matcher

    @property
    def point(self) -> OperatingPoint:
        return self.operating.current()

    @property
    def threshold(self) -> float:
        return self.point.threshold

    @property
    def far(self) -> str | None:
        """The per-comparison FAR as a label ("1e-3", "3.1e-05")."""
        return self.point.far_label

    @property
    def expected_fpir(self) -> float | None:
        """The chance that a stranger's face is given some name, for the gallery as it is now."""
        return self.point.expected_fpir

    def close(self) -> None:
        self.mirror.stop()


def open_live_gallery(cfg: AppConfig, embedder: Embedder, gallery: str, redis_url: str | None = None) -> LiveGallery:
    """Connect, open `gallery` for `embedder`'s model, start its mirror, and build the matcher (`run` section)."""
    client = redis_client(cfg, redis_url)
    store = open_gallery(client, gallery, embedder.fingerprint, embedder.card.harmonic_with,
                         **write_safety(cfg))
    card = matching_card(cfg, embedder.card, store.fingerprint)
    cohort = match_cohort(cfg, embedder.card, embedder.card_path)
    if store.fingerprint not in (None, embedder.fingerprint):
        log.info("gallery %r holds templates of model %s; model %s is harmonic with it: matching them "
                 "(enrol and self-enrol refused until it is migrated)", gallery, store.fingerprint,
                 embedder.fingerprint)
        curves = embedder.card.cohort.harmonic_thresholds if cohort is not None else embedder.card.harmonic_thresholds
        if store.fingerprint not in curves:
            log.warning("model %s has no thresholds calibrated against model %s's templates: strangers will be "
                        "named more often than run.open_set_far says (python -m trainer calibrate "
                        "--gallery-model OLD_CARD.json --update-card)", embedder.fingerprint, store.fingerprint)
    mirror = GalleryMirror(store).start()
    try:
        operating = GalleryThreshold(mirror, lambda counts: gallery_operating_point(cfg, card, counts))
        operating.current()  # chosen (and logged) before the first frame: a bad card fails here, not mid-run
        return LiveGallery(client, store, mirror, operating, make_matcher(cfg, mirror, store, operating, cohort))
    except BaseException:
        mirror.stop()
        raise


def gallery_operating_point(cfg: AppConfig, card, templates_per_identity: Sequence[int]) -> OperatingPoint:
    """The `run` section's operating point (far, open_set_far, score, threshold) for a gallery of that shape."""
    run = cfg.run
    return operating_point(card, run.far, run.open_set_far, templates_per_identity, run.score, run.threshold)


def self_enrolment(cfg: AppConfig, store: GalleryStore, fingerprint: str | None = None) -> Callable | None:
    """`gallery.auto_enrol`: the EventStage's self-enrolment hook (identity id, embedding, match, strong), or None.
    `fingerprint`: the embedder's model; faces are never added to a gallery of another (harmonic) model."""
    if not cfg.gallery.auto_enrol:
        return None
    policy = SelfEnrolment(**cfg.self_enrolment.model_dump(), fingerprint=fingerprint)

    def offer(identity_id: str, embedding, match, strong: bool):
        try:
            return policy.consider(store, identity_id, embedding, match.similarity, match.runner_up_similarity,
                                   match.threshold, strong, match.offset)
        except GalleryError as exc:  # a Redis failure costs this template, never the stream
            policy.decisions["error"] += 1
            log.warning("self-enrolment of %s failed: %s", identity_id, exc)
            return None
    offer.policy = policy  # its decision counts, for the run summary
    return offer


# -- unknown people: what is kept of them, and how they are grouped (pipeline/unknowns) -----------------------
def unknown_store(cfg: AppConfig, client, gallery: str, model: str | None = None) -> UnknownStore:
    """`model`: the fingerprint of the embedder whose faces it records (every writer of sightings passes it);
    None for the operator's store, which only reads, moves and deletes them."""
    u = cfg.unknowns
    return UnknownStore(client, gallery, retention_s=u.retention_days * DAY_S, max_sightings=u.max_sightings,
                        max_per_cluster=u.max_per_cluster, crop_px=u.crop_px, model=model)


def unknown_directory(cfg: AppConfig, store: UnknownStore, card) -> UnknownDirectory:
    """The live clusters of `store` (of its model), assigning at the `unknowns.merge_rate` operating point of
    `card`."""
    u = cfg.unknowns
    return UnknownDirectory(store, lambda members: assignment_threshold(card, members, u.merge_rate),
                            merge_threshold(card, u.merge_far), min_merge_size=u.min_merge_size, refresh_s=u.refresh_s,
                            recluster_every_s=u.recluster_every_s, purge_every_s=u.purge_every_s)


def unknown_recorder(cfg: AppConfig, client, gallery: str, card, model: str) -> UnknownRecorder | None:
    """The video path's memory of unknown faces, recorded as faces of `model` (the embedder's fingerprint); None
    when `unknowns.keep` is false (nothing of a face kept)."""
    if not cfg.unknowns.keep:
        return None
    directory = unknown_directory(cfg, unknown_store(cfg, client, gallery, model), card)
    return UnknownRecorder(directory, cfg.unknowns.max_per_track)


def online_clusters(cfg: AppConfig, card) -> OnlineClusters:
    """In-memory clusters for one run that keeps nothing (photos mode with `unknowns.keep: false`)."""
    u = cfg.unknowns
    return OnlineClusters(lambda members: assignment_threshold(card, members, u.merge_rate),
                          merge_threshold(card, u.merge_far), min_merge_size=u.min_merge_size)


def set_threads() -> None:
    """One torch thread: the runner's own threads already keep both cores busy (see the module notes)."""
    import torch

    torch.set_num_threads(1)


# -- the algorithms' settings: each config section, already validated, passed on as plain values ----------
def quality_gates(cfg: AppConfig) -> QualityGates:
    return QualityGates(**cfg.quality.model_dump())


def face_judge(cfg: AppConfig, embedder: Embedder) -> FaceJudge:
    return FaceJudge(embedder, quality_gates(cfg))


def video_face_judge(cfg: AppConfig, embedder: Embedder) -> FaceJudge:
    """The streaming judge: the strict gates plus the `evidence` section's minimums (weak evidence)."""
    gates = quality_gates(cfg)
    settings = cfg.evidence.model_dump(exclude={"enabled", "every", "eager_frames"})
    return FaceJudge(embedder, gates, evidence=EvidenceGates(gates, **settings) if cfg.evidence.enabled else None)


def identity_voter(cfg: AppConfig) -> IdentityVoter:
    return IdentityVoter(**cfg.voting.model_dump())


def verifier(cfg: AppConfig) -> Verifier:
    return Verifier(**cfg.verification.model_dump())


# `tracker` keys the tracking stage takes itself (per camera, beside the tracker): see `track_stage_settings`.
TRACK_STAGE_KEYS = {"scene_cut"}


def track_stage_settings(cfg: AppConfig) -> dict:
    """The `tracker` section's settings of the tracking stage itself (RecogniseStage keywords)."""
    return cfg.tracker.model_dump(include=TRACK_STAGE_KEYS)


def tracker_factory(cfg: AppConfig) -> Callable[[str], IouTracker]:
    """camera -> a new tracker for it, with the `tracker` section's settings."""
    settings = cfg.tracker.model_dump(exclude=TRACK_STAGE_KEYS)
    return lambda camera: IouTracker(**settings, camera=camera)


def frame_sources(cfg: AppConfig, sources: Sequence[tuple[str, str]], **kwargs) -> list[FrameSource]:
    """One `FrameSource` per enabled (camera, spec) with the `sources` section's settings and the camera's
    `fps_cap`; `kwargs` e.g. an opener. Disabled cameras are logged and never opened; ConfigError if every
    camera given is disabled."""
    settings = {camera: camera_settings(cfg, camera) for camera, _ in sources}
    enabled = [(camera, spec) for camera, spec in sources if settings[camera].enabled]
    disabled = [camera for camera, _ in sources if not settings[camera].enabled]
    if disabled:
        log.info("camera(s) disabled in config, not opened: %s", ", ".join(disabled))
    if sources and not enabled:
        raise ConfigError(f"every camera given is disabled (cameras.<name>.enabled / camera_defaults.enabled): "
                          f"{', '.join(disabled)}")
    return [FrameSource(spec, camera, **cfg.sources.model_dump(), fps_cap=settings[camera].fps_cap, **kwargs)
            for camera, spec in enabled]


# -- per-camera settings (`camera_defaults`, `cameras.<name>`) -----------------------------------------------
def camera_settings(cfg: AppConfig, camera: str) -> CameraConfig:
    """`cameras.<camera>` over `camera_defaults`: each field the camera's section sets replaces the defaults'
    (`motion` field by field, so `cameras.door.motion.sensitivity` keeps the defaults' other motion settings;
    `masks` as a whole list: a camera's masks replace the defaults', they are not added to them). A camera with
    no section gets the defaults."""
    own = cfg.cameras.get(camera)
    return cfg.camera_defaults if own is None else _overlay(cfg.camera_defaults, own)


def _overlay(base: Section, own: Section) -> Section:
    update = {}
    for name in own.model_fields_set:
        value, current = getattr(own, name), getattr(base, name)
        nested = isinstance(value, Section) and isinstance(current, Section)
        update[name] = _overlay(current, value) if nested else value
    return base.model_copy(update=update)


def unmatched_cameras(cfg: AppConfig, cameras: Sequence[str]) -> list[str]:
    """`cameras.<name>` sections that name none of `cameras` (a typo there silently configures nothing)."""
    return sorted(set(cfg.cameras) - set(cameras))


def motion_gate(cfg: AppConfig, camera: str) -> MotionGate | None:
    """The camera's motion gate (its `motion` settings and `masks`); None when its motion gating is off."""
    settings = camera_settings(cfg, camera)
    if not settings.motion.enabled:
        return None
    return MotionGate(**settings.motion.model_dump(exclude={"enabled"}), masks=settings.masks)


def camera_detectors(cfg: AppConfig, detector: MTCNN | DetectorPool,
                     cameras: list[str]) -> dict[str, CameraDetector]:
    """The cameras whose `min_face_size` or `detect_max_side` differ from the run's: each gets `detector`'s nets
    at its own sizes (nothing loaded twice)."""
    own = {}
    for camera in cameras:
        settings = detect_settings(cfg, camera)
        min_face, max_side = settings["min_face_size"], settings["max_side"]
        if (min_face, max_side) != (detector.min_face_size, detector.max_side):
            own[camera] = CameraDetector(detector.variant(min_face_size=min_face, max_side=max_side), min_face,
                                         max_side)
    return own


def detect_settings(cfg: AppConfig, camera: str) -> dict:
    """What the detect stage applies to this camera, resolved to plain values:
    `min_face_size` (px: the camera's, else run.min_face_size, else detector.min_face_size), `max_side` (px: the
    camera's detect_max_side, else detector.max_side; None: full frames) and `masks` (polygons in frame pixels,
    [(x, y), ...] each: faces there are ignored)."""
    settings = camera_settings(cfg, camera)
    return {"min_face_size": settings.min_face_size or cfg.run.min_face_size or cfg.detector.min_face_size,
            "max_side": settings.detect_max_side or cfg.detector.max_side,
            "masks": [list(polygon) for polygon in settings.masks]}
