"""One site for the dashboard's tests (built once: a tiny pipeline run, two registered versions, an A/B
export, a data review sample, logged traffic), served by a real server on 127.0.0.1 with a write key and a
read-only key; and headless Chromium, with a screenshot of the page whenever a browser test fails."""

from __future__ import annotations

import pytest

from tests.conftest import running
from tests.dashboard.browser import chromium, missing, new_page
from tests.dashboard.site import build_site
from tuneloop.server import ServeOptions, build_app

KEY, READ_KEY = "write-key-123", "read-key-456"


@pytest.fixture(scope="session")
def site(tmp_path_factory, tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("site")
        patch.setenv("TUNELOOP_HOME", str(root / "home"))
        return build_site(root, tiny_model_dir)


@pytest.fixture(scope="module")
def dashboard(site, tiny_model_dir):
    """The base URL of `tuneloop serve` over the site (jobs run here too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELOOP_HOME", str(site.root / "home"))
        app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=site.registry_url, runs=site.runs,
                                        api_keys=[KEY], read_keys=[READ_KEY]))
        with running(app) as url:
            yield url


@pytest.fixture(scope="session")
def browser():
    reason = missing()
    if reason:
        pytest.skip(reason)
    with chromium() as launched:
        yield launched


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(request, browser, dashboard, tmp_path):
    opened = new_page(browser, dashboard)
    problems: list[str] = []
    opened.on("pageerror", lambda err: problems.append(str(err)))
    yield opened
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        shot = tmp_path / "failure.png"
        opened.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failing page: {shot} ({opened.url})")
    opened.context.close()
    assert not problems, f"JavaScript errors on the page: {problems}"
