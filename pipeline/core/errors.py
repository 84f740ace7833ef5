"""One root exception for the whole project, one subclass per part that can fail.

Library code raises these with a message that names the problem (the file, key, source or engine);
entry points catch `FacestreamError`, print its message and exit non-zero.
"""


class FacestreamError(Exception):
    """Root of every error facestream raises on purpose."""


class ConfigError(FacestreamError):
    """A config file or override is missing, malformed, or has an unknown or invalid key."""


class EngineError(FacestreamError):
    """An inference engine cannot be created, or was given inputs it does not accept."""


class EngineUnavailable(EngineError):
    """A remote engine (Triton) did not answer: its server is down or unreachable, and may come back."""


class SourceError(FacestreamError):
    """A frame source (image, video file, camera, stream) cannot be opened or read."""


class GalleryError(FacestreamError):
    """The gallery store or its Redis server refused or failed an operation."""
