"""The browser's side of access: log in with a key (a session cookie), log out, and the guards of pages and forms.

Every form carries the session's CSRF token (`csrf_token`); the login form, before any session exists, carries a
token that must match a cookie set with the form (double submit), so another site cannot log a browser in.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from fastapi.responses import RedirectResponse

from pipeline.api.access import Principal, role_allows
from pipeline.api.deps import SESSION_COOKIE, csrf_matches

LOGIN_CSRF_COOKIE = "fs_login_csrf"


class NeedLogin(Exception):
    """A page asked for without a session: the handler sends the browser to /login."""


class PageRefused(Exception):
    """A form refused (403): bad CSRF token or a role that may not do it."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.message, self.status = message, status


def page_user(request: Request) -> Principal:
    """The logged-in user of a page (sessions only: a page is a browser's)."""
    who = request.app.state.services.sessions.get(request.cookies.get(SESSION_COOKIE))
    if who is None:
        raise NeedLogin()
    return who


async def form_user(request: Request, role: str = "viewer") -> tuple[Principal, dict]:
    """(user, the form's fields) of a form post, after its CSRF token and the user's role are checked."""
    who = page_user(request)
    form = await request.form()
    if not csrf_matches(who, form.get("csrf_token")):
        raise PageRefused("missing or wrong CSRF token: reload the page and send the form again")
    if not role_allows(who.role, role):
        raise PageRefused(f"this needs the {role} role; you are logged in with a {who.role} key")
    return who, form


def login_token(request: Request) -> str:
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def login_token_ok(request: Request, sent: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and sent and hmac.compare_digest(cookie, sent))


def set_session(response: RedirectResponse, session_id: str, hours: float) -> None:
    response.set_cookie(SESSION_COOKIE, session_id, max_age=int(hours * 3600), httponly=True, samesite="strict",
                        path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
