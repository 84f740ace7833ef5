"""facestream's configuration: one validated section per part of the system (configs/*.yaml).

Validated once, here at the edge; the composition root (`pipeline.app.services`) passes plain values on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.settings import Section, load_config


class RedisConfig(Section):
    # None: the embedded server kept under `state_dir` (started on first use). Otherwise any
    # redis:// or rediss:// URL, with user/password if the server wants them; used as is. For TLS with a
    # private CA: rediss://user:pw@host:6380/0?ssl_ca_certs=/path/ca.pem. A Redis Cluster:
    # redis+cluster://host1:7000,host2:7001 (any nodes as seeds; rediss+cluster:// for TLS).
    url: str | None = None
    state_dir: Path = Path("state")
    # Replicas that must confirm each gallery write (WAIT) before it counts as done: 1 on a cluster with one
    # replica per master means an enrolment survives a kill -9 of its master (pipeline/gallery/store.py).
    wait_replicas: int = Field(0, ge=0, description="replicas confirming each gallery write; 0: do not wait")
    wait_timeout_ms: int = Field(2000, gt=0, description="how long a write waits for them, then fails")


class EngineConfig(Section):
    # The embedder's engine; "auto" picks TensorRT -> ORT-TensorRT -> ORT-CUDA -> torch-CUDA -> ORT-CPU by what
    # is installed and working (engines/selection.py), and logs its choice.
    name: Literal["auto", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch-cuda",
                  "tensorrt", "triton"] = "onnxruntime"
    # ONNX Runtime providers in order of preference; None: the best the machine has.
    providers: list[str] | None = None
    # ORT silently runs on CPU when a requested provider fails; we refuse that unless allowed.
    allow_fallback: bool = False
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = library default")
    # name: triton: the embedder served by Triton (`python -m engines.triton export`). While the server does not
    # answer, a run keeps detecting and tracking and says so (faces not embedded: "embedder unavailable").
    triton_url: str = Field("localhost:8000", description="host:port, http:// or https://")
    triton_model: str | None = Field(None, description="None: the model card's model_id, as exported")
    triton_timeout_s: float = Field(10.0, gt=0, description="connection and request timeout")


class DetectorConfig(Section):
    min_face_size: int = Field(20, ge=8)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = Field(0.709, gt=0.1, lt=1.0)
    # ONNX Runtime on one thread is the fastest CPU path measured (bench/detect.py); torch is the oracle.
    engine: Literal["torch", "onnxruntime"] = "onnxruntime"
    threads: int = Field(1, ge=0, description="intra-op threads; 1 beats 2 on a 2-core machine under load")
    pyramid: Literal["area", "octave", "fast"] = "area"
    # Larger frames are detected on a downscaled copy: phone photos (4000 px) would cost seconds each.
    max_side: int | None = Field(1280, ge=48)
    # The largest face worth finding (px, in the detected frame): pyramid levels for larger faces are skipped.
    # None: every level down to a 12 px image, as before.
    max_face_size: int | None = Field(None, ge=12)
    # Streaming runs can detect in processes of their own (pipeline/detect/process.py): no GIL shared with
    # tracking, matching and the camera readers, and with 2+ one batch's cameras on several cores. Measured by
    # bench.cameras; enrolment and the console always detect in-process.
    processes: int = Field(0, ge=0, le=16, description="run.py: detector processes; 0: in the run's own process")


class QualityConfig(Section):
    """Gate thresholds; defaults calibrated on the shared test photos (see the module's calibration notes)."""

    min_face_px: int = Field(50, ge=0, description="shorter side of the detector's box, px")
    min_sharpness: float = Field(30.0, ge=0, description="variance of the Laplacian, 112 px crop")
    max_yaw: float = Field(45.0, gt=0, le=90, description="degrees, landmark estimate")
    max_pitch: float = Field(35.0, gt=0, le=90, description="degrees, landmark estimate")
    min_score: float = Field(0.93, ge=0, le=1, description="detector confidence")


class EvidenceConfig(Section):
    """Hard minimums below the strict `quality` gates: faces between the two are embedded in video as weak
    evidence, weighing up to `max_weight` votes (pipeline/recognise/quality.py EvidenceGates: calibration)."""

    enabled: bool = True
    min_face_px: int = Field(36, ge=0, description="px; below the strict 50")
    min_sharpness: float = Field(15.0, ge=0, description="below the strict 30")
    max_yaw: float = Field(60.0, gt=0, le=90, description="degrees; above the strict 45")
    max_pitch: float = Field(45.0, gt=0, le=90, description="degrees; above the strict 35")
    min_score: float = Field(0.90, ge=0, le=1, description="below the strict 0.93")
    max_weight: float = Field(0.5, gt=0, lt=1, description="a weak vote's weight at best (strict faces: 1)")
    # A track's weak faces are embedded at most every 3rd detection: on the Hamilton clip every one of them
    # embedded costs 40 extra embeddings (53 in all vs 3 before) and ~15 % fps; every 3rd keeps the cost in budget.
    every: int = Field(3, ge=1, description="detections between two weak faces of a track embedded")
    # ...except in a track's first second (25 frames): its weak faces are embedded at every detection, so a track
    # of weak faces is decided soon after it appears, for a bounded cost per track (pipeline/video/match_stage.py).
    eager_frames: int = Field(25, ge=0, description="a track's first frames, whose weak faces are all embedded")


class SourceConfig(Section):
    """How frames are read; the same settings for every source of a run."""

    queue_size: int = Field(4, ge=1, description="frames buffered per source")
    policy: Literal["auto", "drop_oldest", "wait"] = "auto"  # auto: drop_oldest for webcams and streams, wait for files
    reconnect: bool | None = None  # None: live sources reconnect, files do not
    backoff_initial: float = Field(0.5, gt=0, description="s before the first reconnect")
    backoff_max: float = Field(10.0, gt=0, description="s, cap of the doubling backoff")
    max_reconnects: int | None = Field(None, ge=0, description="consecutive failures; None = forever")
    # Streams: a server that stops sending (or never answers the open) for this long is reconnected;
    # FFmpeg's open/read timeout, so a stalled read returns instead of blocking the reader for good.
    stall_seconds: float = Field(5.0, gt=0, description="s without a frame from a stream")
    realtime: bool = False  # files: deliver at the file's frame rate instead of as fast as consumed

    @model_validator(mode="after")
    def _backoff_grows(self) -> SourceConfig:
        if self.backoff_initial > self.backoff_max:
            raise ValueError(f"backoff_initial ({self.backoff_initial}) exceeds backoff_max ({self.backoff_max})")
        return self


class TrackerConfig(Section):
    iou_threshold: float = Field(0.3, gt=0, le=1)
    confirm_hits: int = Field(3, ge=1)
    max_misses: int = Field(15, ge=0, description="frames a lost track is kept")
    reembed_quality_gain: float = Field(0.15, ge=0)
    reembed_every: int = Field(0, ge=0, description="frames; 0 = only on quality gain")
    # Re-verification of decided tracks (pipeline/video/tracker.py, verification.py): every 4th detection (12
    # frames at detect_every 3, half a second) costs ~1 embedding per decided face per 0.5 s; a box that jumps
    # by half its size or scales by 1.5x between detections (a cut the cut test missed, a swap) is checked at once.
    # Matched detections of the shared clips land 0.05-0.17 of the box from the prediction (median; 99th
    # percentile 0.23-0.49) and rescale at most 1.42x, so both fire on about 1 % of continuous footage.
    reverify_every: int = Field(4, ge=0, description="detections; 0 = only on a jump, a crossing or a cut")
    jump_fraction: float = Field(0.5, gt=0, description="centre offset from the prediction / box size")
    scale_jump: float = Field(1.5, gt=1, description="box side ratio to the prediction")
    # The appearance gate (pipeline/video/appearance_gate.py): a track whose box changed from the previous frame
    # (1 - normalised correlation, shifts up to 25 % of the box) by more than this is in doubt: name hidden,
    # re-verified at its next detection. Continuous footage of the shared clips: 99.9th percentile 0.26-0.30
    # (5 of 3907 track-frames above 0.30: hands over faces); same-position cuts between two faces on one
    # background 0.32 and more.
    appearance_jump: float = Field(0.30, ge=0, le=2, description="1 - correlation; 0 = no appearance gate")
    # Hard cuts end every track of the camera (pipeline/video/scene_cut.py): mean absolute grey difference of
    # consecutive 64x36 frames; the shared clips' cuts measure 27.7-30.5, continuous footage at most 13.6.
    scene_cut: float = Field(20.0, ge=0, description="grey levels; 0 = no cut detection")


class VotingConfig(Section):
    min_votes: int = Field(3, ge=1)
    window: int = Field(10, ge=1, description="latest votes considered per track")
    min_share: float = Field(0.6, gt=0, le=1, description="of the votes in the window")
    debounce_frames: int = Field(30, ge=0, description="frames between two confirmations of a track")
    # A known name needs this many strict-quality faces among its votes: weak evidence (EvidenceConfig) only
    # adds weight. 2: one lucky frontal frame plus profiles cannot name somebody (crowd/meeting clips: 0 false
    # names with the Hamilton pair enrolled), while Lin-Manuel Miranda's track still confirms (bench.pipeline).
    min_strong_votes: int = Field(2, ge=1, description="strict-quality votes a known name needs")

    @model_validator(mode="after")
    def _confirmable(self) -> VotingConfig:
        if self.min_strong_votes > self.window:
            raise ValueError(f"min_strong_votes ({self.min_strong_votes}) cannot exceed the window ({self.window})")
        if self.min_votes > self.window:
            raise ValueError(f"min_votes ({self.min_votes}) cannot exceed the window ({self.window}): "
                             "nothing would confirm")
        return self


class VerificationConfig(Section):
    """When a re-verified face of a decided track is someone else (pipeline/video/verification.py, calibration
    there): cosine to the track's own appearance below `min_appearance`, or similarity to its identity more than
    `identity_drop` below the confirmation's. Strict faces of real tracks measure >= 0.76 to their appearance."""

    min_appearance: float = Field(0.70, ge=-1, le=1, description="cosine to the track's mean embedding")
    # In doubt (the appearance gate saw the box's pixels change: a cut in place, a swap) the face must look like
    # the track's own as a face of the same person does: the card's impostor threshold at FAR 1e-2. Without it
    # a cut in place between two strangers carried one unknown id onto both (bench.reel_clusters: 5 of 20
    # tracks on the default reel).
    doubt_min_appearance: float = Field(0.82, ge=-1, le=1, description="the same, for a track in doubt")
    identity_drop: float = Field(0.12, ge=0, le=2, description="below the confirmation's similarity")


class EventsConfig(Section):
    jsonl: Path | None = None  # append events to this file; None: no file
    redis_stream: bool = True  # XADD to fs:{gallery}:events
    stream_maxlen: int = Field(100_000, ge=1, description="approximate cap of the stream")
    buffer_size: int = Field(10_000, ge=1, description="events held while Redis is unreachable")
    include_crops: bool = False  # JPEG face crop (base64) in each event


class GalleryConfig(Section):
    """How a worker searches its gallery (pipeline/gallery/search.py); the matcher on top is the same for all."""

    # auto: exact below `exact_below` templates, ann from there (checked at every search, so a gallery that grows
    # during a run switches). Measured with `python -m bench.gallery --crossover` (2 cores, 1 query, k=32): exact
    # costs 0.16 ms at 16k templates, 0.94 ms at 50k, 5-10 ms at 256k, while ann stays at 0.1-0.3 ms; below 50k
    # exact is under a millisecond per face, has no index to train (0.3 s, once) and is exact by construction.
    # server: Redis 8 VSIM on the gallery's vector set, nothing searched locally (the gallery needs server_index).
    search: Literal["auto", "exact", "ann", "server"] = "auto"
    exact_below: int = Field(50_000, ge=0, description="templates; where search=auto switches from exact to ann")
    # New galleries (enroll.py) also keep their templates in a Redis vector set: what search=server searches.
    server_index: bool = False
    # Safe self-enrolment (pipeline/gallery/self_enrol.py, rules in `self_enrolment`): a confident confirmation
    # may add one marked `auto-` template to that person. Off by default: the gallery changes only by hand.
    auto_enrol: bool = False


class SelfEnrolmentConfig(Section):
    """When `gallery.auto_enrol` lets a confirmed track add a template (pipeline/gallery/self_enrol.py)."""

    margin_above: float = Field(0.10, ge=0, le=2, description="similarity above the match threshold")
    min_margin: float = Field(0.10, ge=0, le=2, description="over the runner-up identity")
    diversity: float = Field(0.92, gt=0, le=1, description="refused when this close to an existing template")
    max_auto: int = Field(5, ge=1, description="auto templates per person")


class UnknownsConfig(Section):
    """Unknown people (pipeline/unknowns): what is kept of a face nobody enrolled, for how long, and how the faces
    are grouped into stable ids."""

    # false: nothing of an unknown face is stored: video events carry no unknown_id, photos mode clusters the
    # folder in memory (its ids mean nothing after the run)
    keep: bool = True
    retention_days: float = Field(7.0, gt=0, description="sightings older than this are deleted")
    max_sightings: int = Field(50_000, ge=1, description="per gallery; the oldest go first (~3 kB each)")
    max_per_cluster: int = Field(200, ge=1, description="sightings per unknown person; the oldest go first")
    max_per_track: int = Field(10, ge=1, description="faces kept per track, the best by quality")
    crop_px: int = Field(96, ge=16, le=512, description="side of the stored aligned JPEG crop")
    # The chance that a new stranger's track joins someone else's cluster (the gallery's FPIR rule over the
    # clusters' member tracks), and the per-comparison FAR of the re-clustering pass's average linkage
    # (pipeline/unknowns/clustering.py: measured by `python -m bench.clusters`).
    # Measured on 3,730 photos of 1,953 held-out LFW people: pairwise precision 0.996, recall 0.947, BCubed F 0.953.
    merge_rate: float = Field(2e-3, gt=0, lt=1)
    merge_far: float = Field(1e-4, gt=0, lt=1)
    min_merge_size: int = Field(3, ge=2, description="tracks two clusters must hold together to be merged")
    recluster_every_s: float = Field(300.0, gt=0, description="between two re-clustering passes of a worker")
    purge_every_s: float = Field(3600.0, gt=0, description="between two retention purges of a worker")
    refresh_s: float = Field(10.0, gt=0, description="how soon other workers' clusters are seen")


class RunConfig(Section):
    """The streaming runner's own settings."""

    detect_every: int = Field(3, ge=1, description="run MTCNN on every Nth frame per camera; tracks carry the rest")
    # Region-of-interest detection (pipeline/video/roi.py), when every frame is detected (detect_every 1): between
    # full scans, detect only around live tracks (at their scale) and where motion appeared. Hamilton clip, every
    # frame detected: 48.7 fps whole frames, 71.6 fps with regions (bench.pipeline). 0: whole frames every time.
    full_scan_every: int = Field(15, ge=0, description="with detect_every 1: frames between two full-frame scans")
    roi_margin: float = Field(0.5, ge=0, description="a track's region: its box grown by this many box sides")

    @property
    def region_detection(self) -> bool:
        """Every frame detected, in regions between full scans (detect_every 1 and full_scan_every > 0)."""
        return self.detect_every == 1 and self.full_scan_every > 0
    # Video faces below ~40 px fail the 50 px quality gate anyway; a larger minimum prunes the pyramid's
    # most expensive (largest) levels. None: detector.min_face_size.
    min_face_size: int | None = Field(40, ge=8)
    # Threshold from the model card at this per-comparison false-accept rate (a card key, e.g. "1e-3"). "auto":
    # hold the FPIR, the chance a stranger's face is given *some* name, at open_set_far for the gallery's size
    # and templates per identity: FPIR = 1 - (1 - FAR)^M, M = the templates (score=max; mean_top2 counts
    # max(1, k/2) per identity), solved for FAR and read off the card's curve (log-linear, 1e-2..1e-6, never
    # extrapolated: below it the strictest, with a warning). 5e-3 for the two-person demo gallery, 1e-5 for
    # 1,000 people (pipeline/gallery/threshold.py; measured by `python -m bench.openset`).
    far: str = "auto"
    open_set_far: float = Field(0.01, gt=0, lt=1, description="for far=auto: target FPIR per stranger face")
    threshold: float | None = Field(None, ge=-1, le=1, description="overrides the card's threshold (on the "
                                    "matcher's score: cohort-normalised under run.normalise)")
    score: Literal["max", "mean_top2"] = "max"
    # Cohort score normalisation (pipeline/gallery/cohort.py) when the model card has a cohort: a face's scores
    # are lowered by how much it resembles strangers in general, at thresholds calibrated for that score. On
    # held-out LFW people it names 89% of enrolled faces where raw cosines name 82%, at the same 1% stranger rate.
    normalise: bool = True
    stage_queue: int = Field(2, ge=1, description="batches between compute stages")
    batch_wait_s: float = Field(0.05, gt=0, description="longest wait for a frame from any camera")
    embed_batch: int = Field(32, ge=1)
    video_fps: float | None = Field(None, gt=0, description="annotated video frame rate; None: the source's")
    metrics_host: str = "127.0.0.1"


class MotionConfig(Section):
    """Motion gating per camera (pipeline/video/motion.py): a low-resolution frame difference; a static scene
    costs almost nothing."""

    enabled: bool = False
    sensitivity: float = Field(12.0, gt=0, le=255, description="grey-level change of a low-res pixel that counts")
    min_area: float = Field(0.002, ge=0, le=1, description="share of the watched (unmasked) pixels that must change")
    width: int = Field(160, ge=16, le=1920, description="the low-resolution copy's width")
    # The running background's learning rate (cv2.accumulateWeighted): a change that stays (a parked car, a
    # moved chair) stops counting as motion within ~1/alpha frames.
    alpha: float = Field(0.02, gt=0, le=1, description="background learning rate per frame")


class CameraConfig(Section):
    """What users set per camera (`cameras.<name>`, or `camera_defaults` for all)."""

    enabled: bool = True
    fps_cap: float | None = Field(None, gt=0, description="frames per second kept; the rest dropped at decode")
    detect_max_side: int | None = Field(None, ge=48, description="longer side the detector sees; None: detector.max_side")
    min_face_size: int | None = Field(None, ge=8, description="None: run.min_face_size")
    # Regions to ignore (a TV, a street): polygons in frame pixels, [[x, y], ...] each.
    masks: list[list[tuple[float, float]]] = []
    motion: MotionConfig = MotionConfig()

    @field_validator("masks")
    @classmethod
    def _masks_are_polygons(cls, masks: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
        for k, polygon in enumerate(masks):
            if len(polygon) < 3:
                raise ValueError(f"mask {k} needs at least 3 [x, y] points to be a polygon, got {len(polygon)}")
            if any(x < 0 or y < 0 for x, y in polygon):
                raise ValueError(f"mask {k} has a negative coordinate: points are frame pixels, [x, y] >= 0")
        return masks


class WorkerConfig(Section):
    """run.py --worker: the cameras come from the registry in Redis (enroll.py cameras), each leased by one worker
    at a time (pipeline/cameras): a worker killed outright loses its cameras to the others after the lease TTL."""

    id: str | None = Field(None, description="this worker's name; None: <host>-<pid>")
    capacity: int = Field(4, ge=0, description="cameras this worker reads at most")
    lease_ttl_s: float = Field(5.0, ge=0.5, le=300, description="a silent worker's cameras move after this")


class ConsoleConfig(Section):
    """serve.py: the console and REST API (pipeline/api), and what workers publish for it."""

    host: str = "127.0.0.1"  # loopback by default: exposing the console is a decision, not an accident
    port: int = Field(8080, ge=1, le=65535)
    max_upload_bytes: int = Field(10_000_000, ge=1, description="per uploaded photo")
    max_upload_pixels: int = Field(40_000_000, ge=1, description="declared by the photo's header")
    recognize_per_minute: int = Field(120, ge=1, description="POST /api/v1/recognize per key (or client)")
    session_hours: float = Field(12.0, gt=0, description="a browser login lasts this long")
    # Workers (run.py) publish each camera's latest annotated frame, downscaled, for the Live page: opt-in.
    snapshots: bool = False
    snapshot_fps: float = Field(2.0, gt=0, le=2.0, description="per camera, at most")
    snapshot_px: int = Field(640, ge=64, le=1920, description="longer side of a published frame")
    snapshot_ttl_s: float = Field(10.0, gt=0, description="a frame (and camera health) older than this is gone")


class MqttConfig(Section):
    """The MQTT bridge (pipeline/mqtt): events from the gallery's Redis stream to a broker, with Home Assistant
    discovery. None: no bridge."""

    url: str | None = None  # mqtt://user:password@host:1883 or mqtts://... (TLS)
    topic_prefix: str = "facestream"
    discovery_prefix: str = "homeassistant"
    client_id: str = "facestream"
    qos: int = Field(1, ge=0, le=2)
    presence_timeout_s: float = Field(300.0, gt=0, description="a person not seen for this long is away")
    group: str = "mqtt"  # the consumer group the bridge reads the event stream with


class DemoConfig(Section):
    inputs: list[Path] = []
    output_dir: Path = Path("out/demo")


class AppConfig(Section):
    redis: RedisConfig = RedisConfig()
    engine: EngineConfig = EngineConfig()
    detector: DetectorConfig = DetectorConfig()
    quality: QualityConfig = QualityConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    run: RunConfig = RunConfig()
    sources: SourceConfig = SourceConfig()
    tracker: TrackerConfig = TrackerConfig()
    voting: VotingConfig = VotingConfig()
    verification: VerificationConfig = VerificationConfig()
    events: EventsConfig = EventsConfig()
    gallery: GalleryConfig = GalleryConfig()
    self_enrolment: SelfEnrolmentConfig = SelfEnrolmentConfig()
    unknowns: UnknownsConfig = UnknownsConfig()
    camera_defaults: CameraConfig = CameraConfig()
    cameras: dict[str, CameraConfig] = {}
    worker: WorkerConfig = WorkerConfig()
    console: ConsoleConfig = ConsoleConfig()
    mqtt: MqttConfig = MqttConfig()
    demo: DemoConfig = DemoConfig()




def load_app_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> AppConfig:
    """`configs/*.yaml` (or the defaults) with `section.key=value` overrides, validated."""
    return load_config(path, overrides, model=AppConfig)
