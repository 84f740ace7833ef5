"""The console and REST API (serve.py): a FastAPI app over the gallery, the event stream, the unknown people and the
workers' live snapshots in Redis. `create_app(services)` receives services built by pipeline/app/console.py."""

from pipeline.api.app import create_app
from pipeline.api.services import Limits, Services

__all__ = ["Limits", "Services", "create_app"]
