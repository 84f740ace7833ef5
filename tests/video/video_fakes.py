"""Stand-ins the video tests share (imported as `video_fakes`: pytest puts this folder on sys.path)."""

from pipeline.events import EventBus, MemorySink


class RecordingBus(EventBus):
    """The real event bus with one in-memory sink: `events` is everything emitted, in order."""

    def __init__(self):
        self.sink = MemorySink()
        super().__init__([self.sink])

    @property
    def events(self):
        return self.sink.events
