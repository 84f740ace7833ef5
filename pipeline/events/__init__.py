"""Events: the record, the bus that fans it out, the sinks (JSONL, Redis Stream), and the consumer-group reader
of the stream."""

from pipeline.events.bus import EventBus
from pipeline.events.consumer import StreamConsumer, groups
from pipeline.events.record import (
    IDENTITY_CONFIRMED,
    TRACK_ENDED,
    TRACK_STARTED,
    UNKNOWN_MERGED,
    Event,
    encode_crop,
)
from pipeline.events.sinks import (
    JsonlSink,
    MemorySink,
    RedisStreamSink,
    Sink,
    events_key,
)

__all__ = ["IDENTITY_CONFIRMED", "TRACK_ENDED", "TRACK_STARTED", "UNKNOWN_MERGED", "Event", "EventBus", "JsonlSink", "MemorySink",
           "RedisStreamSink", "Sink", "StreamConsumer", "encode_crop", "events_key", "groups"]
