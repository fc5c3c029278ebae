"""The README's screenshots of the dashboard, taken with the browser tests' helpers.

    .venv/bin/python -m tests.dashboard.screenshots docs/dashboard [--runs runs --registry URL]

With --runs and --registry it shows an existing site (e.g. after `tuneloop demo`); without, it builds the
tests' site (a tiny model trained from a config, a minute). It serves the site on 127.0.0.1 and saves one PNG
per main page at 1280 px.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

FULL_PAGE = {"run"}


def pages(runs: Path, registry_url: str) -> dict[str, str]:
    from urllib.parse import quote

    from tuneloop.dashboard.runs import list_runs, review_folders
    from tuneloop.registry.store import Registry

    run = next(r for r in list_runs(runs, 0, None)[0] if any(s.kind == "eval" for s in r.stages))
    model = Registry(registry_url).models()[0]["name"]
    reviews = review_folders(runs)["ab"]
    return {"overview": "/ui", "run": f"/ui/runs/{run.id}", "registry": f"/ui/registry/{quote(model)}", "jobs": "/ui/jobs",
            "traffic": "/ui/traffic", "review": f"/ui/review/ab?dir={quote(reviews[0]['dir'])}" if reviews else "/ui/review",
            "playground": "/ui/playground"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/dashboard"))
    parser.add_argument("--runs", type=Path)
    parser.add_argument("--registry")
    parser.add_argument("--base", help="the base model the playground answers with (default: the embedded model)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.conftest import make_tiny_model, running
    from tests.dashboard.browser import chromium, new_page, screenshot, sign_in
    from tuneloop.server import ServeOptions, build_app

    runs, registry, base = args.runs, args.registry, args.base
    if runs is None:
        from tests.dashboard.site import build_site
        from tuneloop.models import load_tokenizer

        work = Path(tempfile.mkdtemp(prefix="tuneloop-shots-"))
        os.environ["TUNELOOP_HOME"] = str(work / "home")
        base = str(make_tiny_model(work / "tiny-model", load_tokenizer("smollm2-135m-instruct")))
        site = build_site(work / "site", Path(base))
        runs, registry = site.runs, site.registry_url
    app, catalog = build_app(ServeOptions(base=base, registry=registry, runs=runs, api_keys=["key"], request_log="off"))
    names = catalog.listing()
    with running(app) as url, chromium() as browser:
        page = new_page(browser, url)
        sign_in(page, "key")
        for name, path in pages(runs, registry).items():
            page.goto(path)
            page.wait_for_load_state("networkidle")
            if name == "playground":
                page.fill("textarea[name=message]", "My parcel never arrived and nobody answers my emails.")
                page.select_option("select[name=model_b]", next(n for n in names if "@" in n or ":" in n))
                page.click("button:text('Send')")
                for side in ("a", "b"):
                    page.wait_for_selector(f"#meta-{side} >> text=/tokens/", timeout=300_000)
            time.sleep(0.5)
            print(screenshot(page, args.out / f"{name}.png", full_page=name in FULL_PAGE))


if __name__ == "__main__":
    main()
