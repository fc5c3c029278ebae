"""The dashboard in real headless Chromium, as a person uses it: sign in, open a run and watch a training's
curve grow, promote a version and roll it back, judge A/B pairs, start a fine-tuning job and watch its
events, chat in the playground. Each test checks what the page shows (text a person reads) and what the
CLI then sees; a failing test leaves a screenshot of its page (see conftest.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import ticket_rows, write_jsonl
from tests.dashboard.browser import sign_in
from tests.dashboard.conftest import KEY
from tuneloop.config import load_config
from tuneloop.train.trainer import train

TUNELOOP = str(Path(sys.executable).parent / "tuneloop")


def cli(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([TUNELOOP, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_sign_in_and_open_a_run_its_curve_and_its_evaluation(page):
    sign_in(page, KEY)
    page.click("text=Runs")
    page.click("a:text-is('tiny-run')")
    page.wait_for_selector("text=finished: 24 steps")
    assert page.locator(".chart svg").first.get_attribute("aria-label") == "loss"
    assert page.locator(".chart polyline").count() >= 1
    evaluation = page.locator("#stage-eval")
    assert "Systems on the test split" in evaluation.inner_text()
    header = evaluation.locator("table.eval thead").inner_text()
    assert all(system in header for system in ("base", "prompted", "rag", "finetuned"))
    assert evaluation.locator("img[alt^=confusion_]").count() == 2
    assert "rows read" in page.locator("#stage-data").inner_text()


def test_the_curve_grows_while_a_training_runs(page, site):
    cfg = load_config(site.root / "pipeline.yaml", {"train.max_steps": 60, "train.eval_every": 0, "train.save_every": 0})
    out = site.runs / "live-training" / "train"
    trainer = threading.Thread(target=train, args=(cfg.train, cfg.model, site.run.data.root, out), daemon=True)
    sign_in(page, KEY)
    trainer.start()
    try:
        while not (out / "metrics.jsonl").is_file():
            trainer.join(0.2)
        page.goto("/ui/runs/live-training")
        page.wait_for_selector("text=/training: step \\d+ so far/")
        first = int(page.locator(".chart").get_attribute("data-step"))
        page.wait_for_function(f"() => Number(document.querySelector('.chart').dataset.step) > {first}")
        page.wait_for_selector("text=finished: 60 steps", timeout=120_000)
    finally:
        trainer.join(120)
    assert not trainer.is_alive()


def test_promote_a_version_see_the_alias_move_then_roll_it_back(page, site):
    sign_in(page, KEY)
    page.goto("/ui/registry/tiny")
    production = page.locator("#aliases tr[data-alias=production] .version")
    assert production.inner_text() == "1"
    form = page.locator("#promote")
    form.locator("select[name=version]").select_option("2")
    form.locator("input[name=reason]").fill("v2 passes every gate")
    form.locator("input[name=who]").fill("ana")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=tiny@production now points at version 2")
    assert production.inner_text() == "2"
    assert "v2 passes every gate" in page.locator("#history").inner_text()
    history = json.loads(cli("registry", "history", "tiny", "--registry", site.registry_url, "--json").stdout.splitlines()[-1])
    last = (history["events"] if isinstance(history, dict) else history)[-1]
    assert (last["to_version"], last["reason"], last["actor"]) == (2, "v2 passes every gate", "dashboard:ana")

    page.locator("#aliases tr[data-alias=production] input[name=reason]").fill("latency regressed")
    page.click("button:text('Roll back @production')")
    page.wait_for_selector("text=tiny@production rolled back to version 1")
    assert production.inner_text() == "1"
    shown = cli("registry", "history", "tiny", "--registry", site.registry_url)
    assert "latency regressed" in shown.stdout + shown.stderr  # the table goes to stderr, like every rich table


def test_judge_three_pairs_and_import_the_judgments(page, site):
    sign_in(page, KEY)
    page.click("text=Review")
    page.click("a:text-is('tiny-run/eval/ab')")
    cards = page.locator("section.pair-card")
    assert cards.count() >= 3 and "Response 1" in cards.first.inner_text()
    picks = ["Response 1", "Response 2", "Tie"]
    for card, pick in zip([cards.nth(i) for i in range(3)], picks):
        card.get_by_label(pick).check()
    cards.first.locator("textarea").fill("the second one invents a product")
    page.click("button:text('Save judgments')")
    page.wait_for_selector("text=saved 3 judgments to ab_judgments.csv")
    assert page.locator("section.pair-card").nth(1).get_by_label("Response 2").is_checked()  # kept on reload
    ab = site.run.eval.ab
    result = json.loads(cli("eval", "ab-import", ab.judgments, "--key", ab.key, "--json").stdout.splitlines()[-1])
    judged = result["wins_a"] + result["wins_b"] + result["ties"]
    identical = sum(1 for pair in json.loads(ab.key.read_text())["pairs"].values() if pair.get("identical"))
    assert judged == 3 + identical and result["ties"] >= 1 and result["wins_a"] + result["wins_b"] == 2


def test_start_a_fine_tuning_job_from_the_page_and_watch_its_events(page, tiny_model_dir, tmp_path):
    upload = write_jsonl(tmp_path / "tickets.jsonl", ticket_rows(24))
    sign_in(page, KEY)
    page.goto("/ui/jobs")
    form = page.locator("#new-job")
    form.locator("input[type=file]").set_input_files(str(upload))
    form.locator("input[name=model]").fill(str(tiny_model_dir))
    form.locator("input[name=suffix]").fill("from-the-page")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/ftjob-\w+$"))
    page.wait_for_selector("#events >> text=Files validated; the job is queued")
    page.wait_for_selector("#events >> text=The job has successfully completed", timeout=240_000)
    assert page.locator("#job-status").inner_text() == "succeeded"
    assert "from-the-page" in page.locator("#job-model").inner_text()
    page.goto("/ui/jobs")
    assert "succeeded" in page.locator("#jobs").inner_text()


def test_chat_in_the_playground_side_by_side(page):
    sign_in(page, KEY)
    page.goto("/ui/playground")
    page.fill("textarea[name=message]", "My parcel never arrived")
    page.fill("input[name=max_tokens]", "8")
    page.select_option("select[name=model_a]", "tiny:1")
    page.select_option("select[name=model_b]", "tiny:2")
    page.click("button:text('Send')")
    for side in ("a", "b"):
        page.wait_for_selector(f"#meta-{side} >> text=/tokens/", timeout=120_000)
        assert not page.locator(f"#answer-{side}").inner_text().startswith("error")
    assert "tiny:1" in page.locator("#meta-a").inner_text() and "tiny:2" in page.locator("#meta-b").inner_text()


def test_edit_an_ab_routes_weights_from_the_traffic_page(page, dashboard):
    import httpx

    auth = {"authorization": f"Bearer {KEY}"}
    route = {"variants": [{"model": "tiny:1", "weight": 9}, {"model": "tiny:2", "weight": 1}]}
    assert httpx.put(f"{dashboard}/admin/routes/triage", json=route, headers=auth).status_code == 200
    sign_in(page, KEY)
    page.goto("/ui/traffic")
    form = page.locator("form.route[data-route=triage]")
    assert "90.0%" in form.inner_text()
    form.get_by_label("weight of tiny:2").fill("3")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=saved; new requests follow these weights")
    assert httpx.get(f"{dashboard}/admin/routes", headers=auth).json()["triage"][1]["weight"] == 3
    page.reload()
    assert "75.0%" in page.locator("form.route[data-route=triage]").inner_text()
