"""`create_app(services) -> FastAPI`: the REST API under /api/v1 (OpenAPI at /api/v1/docs) and the console's
pages, over services already built (serve.py, through pipeline/app/console.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from pipeline.api import errors
from pipeline.api.middleware import BodyLimit, CountRequests
from pipeline.api.ratelimit import RateLimiter
from pipeline.api.routers import cameras, events, people, recognize, unknowns
from pipeline.api.services import Services
from pipeline.api.web import forms, pages
from pipeline.api.web.session import NeedLogin, PageRefused

API = "/api/v1"
WEB = Path(__file__).resolve().parent / "web"


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="facestream console", version=services.version,
                  description="Faces in a gallery, the unknown people, events and cameras of the facestream workers "
                              "that share this Redis. Authenticate with `Authorization: Bearer <API key>` "
                              "(`enroll.py keys create --role admin|viewer`).",
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None)
    app.state.services = services
    app.state.recognize_limit = RateLimiter(services.client, services.limits.recognize_per_minute)
    errors.install(app)
    api = APIRouter(prefix=API)
    for module in (recognize, people, unknowns, events, cameras):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(pages.router)
    app.include_router(forms.router)
    install_page_errors(app)
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
    app.add_middleware(BodyLimit, limit=services.limits.max_body_bytes)
    app.add_middleware(CountRequests)
    return app


def install_page_errors(app: FastAPI) -> None:
    from fastapi.responses import RedirectResponse

    @app.exception_handler(NeedLogin)
    async def need_login(request, exc):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(PageRefused)
    async def refused(request, exc: PageRefused):
        who = request.app.state.services.sessions.get(request.cookies.get("fs_session"))
        return pages.render(request, "error.html", who, exc.status, error=exc.message)
