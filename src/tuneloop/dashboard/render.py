"""Pages from Jinja2 templates (autoescaped), and the formats they show numbers and times in."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape

from tuneloop import __version__
from tuneloop.access import COOKIE, WRITE
from tuneloop.errors import TuneloopError

NAV = (("/ui", "Overview"), ("/ui/runs", "Runs"), ("/ui/registry", "Registry"), ("/ui/jobs", "Jobs"),
       ("/ui/traffic", "Traffic"), ("/ui/review", "Review"), ("/ui/playground", "Playground"))
PER_PAGE = 50


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"


def percent(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.1%}"


def when(value: Any) -> str:
    """An ISO time or a Unix timestamp, as `2026-12-01 23:14 UTC`."""
    if value in (None, ""):
        return "-"
    try:
        moment = (dt.datetime.fromtimestamp(value, dt.UTC) if isinstance(value, (int, float))
                  else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except (ValueError, OverflowError, OSError):
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


ENV = Environment(loader=PackageLoader("tuneloop.dashboard", "templates"), autoescape=select_autoescape(default=True),
                  undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(number=number, percent=percent, when=when)


def role_of(request: Request) -> str:
    return request.scope.get("state", {}).get("role", WRITE)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = ENV.get_template(template).render(
        nav=NAV, here=request.url.path, can_write=role_of(request) == WRITE, version=__version__,
        signed_in=bool(request.cookies.get(COOKIE)), message=request.query_params.get("done", "")[:300],
        problem=request.query_params.get("problem", "")[:500], **context)
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "error.html", status=404, title="Not found", detail=what)


async def gathered(request: Request, template: str, gather: Callable[[], dict[str, Any]], **context: Any) -> HTMLResponse:
    """A page whose context `gather()` reads from disk or the database (in a worker thread); what it cannot
    find (a TuneloopError: no such run, model, folder) is a 404 page that says so."""
    try:
        found = await run_in_threadpool(gather)
    except TuneloopError as err:
        return not_found(request, str(err))
    return page(request, template, **context, **found)


def back(path: str, **query: str) -> RedirectResponse:
    """After a form's POST: see the page again (303, so a reload does not post twice), with a message."""
    return RedirectResponse(path + ("?" + urlencode(query) if query else ""), status_code=303)


def pages(total: int, page_number: int, per_page: int = PER_PAGE) -> dict[str, int]:
    last = max(1, math.ceil(total / per_page))
    current = min(max(1, page_number), last)
    return {"page": current, "last": last, "total": total, "offset": (current - 1) * per_page, "per_page": per_page}
