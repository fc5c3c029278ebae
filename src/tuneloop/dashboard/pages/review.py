"""Review, for a domain expert in the browser: blind A/B judging of an eval run's exported pairs, saved to
ab_judgments.csv beside ab.csv (read by `tuneloop eval ab-import`), and verdicts on a data sample's rows,
saved into its review.csv (which `data prepare` wrote with data.review_sample). The hidden key is never shown."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import back, gathered, page
from tuneloop.dashboard.runs import folder_in, review_folders
from tuneloop.dashboard.sources import Sources
from tuneloop.data import review as data_review
from tuneloop.errors import TuneloopError
from tuneloop.eval import ab
from tuneloop.layout import AbDir, DataDir

Dir = Query(min_length=1, max_length=512)
MAX_FIELDS = 5000


def add(router: APIRouter, sources: Sources) -> None:
    root = sources.runs_root

    @router.get("/review")
    async def reviews(request: Request):
        found = await run_in_threadpool(review_folders, root)
        return page(request, "reviews.html", title="Review", **found)

    @router.get("/review/ab")
    async def judge(request: Request, dir: str = Dir):
        def gather() -> dict:
            folder = AbDir(folder_in(root, dir))
            pairs = ab.read_pairs(folder.root)
            return {"pairs": pairs, "judged": sum(bool(p["judgment"]) for p in pairs),
                    "command": f"tuneloop eval ab-import {folder.judgments} --key {folder.key}"}

        return await gathered(request, "ab_review.html", gather, title="Blind A/B review", dir=dir)

    @router.post("/review/ab")
    async def save_judgments(request: Request, dir: str = Dir):
        form = await request.form(max_fields=MAX_FIELDS)
        ids = {key[2:] for key in form.keys() if key.startswith(("j-", "c-"))}
        judgments = {pid: (str(form.get("j-" + pid, "")).strip(), str(form.get("c-" + pid, ""))[:2000]) for pid in ids}
        try:
            folder = folder_in(root, dir)
            await run_in_threadpool(ab.save_judgments, folder, judgments)
        except TuneloopError as err:  # no such folder, export or pair; a judgment that is not 1, 2 or tie
            return back("/ui/review/ab?" + urlencode({"dir": dir, "problem": str(err)}))
        done = sum(bool(j) for j, _ in judgments.values())
        return back("/ui/review/ab?" + urlencode({"dir": dir, "done": f"saved {done} judgments to {AbDir(folder).judgments.name}"}))

    @router.get("/review/data")
    async def data_rows(request: Request, dir: str = Dir):
        def gather() -> dict:
            folder = folder_in(root, dir)
            return {"rows": data_review.read_review(folder), "path": str(DataDir(folder).review_csv)}

        return await gathered(request, "data_review.html", gather, title="Data review", dir=dir,
                              verdict_key=data_review.VERDICT, verdicts=data_review.VERDICTS[1:])

    @router.post("/review/data")
    async def save_rows(request: Request, dir: str = Dir):
        form = await request.form(max_fields=MAX_FIELDS)
        verdicts = {}
        for key, value in form.items():
            if key.startswith("v-") and key[2:].isdigit():
                verdicts[int(key[2:])] = (str(value).strip(), str(form.get("c-" + key[2:], ""))[:2000])
        try:
            path = await run_in_threadpool(data_review.save_verdicts, folder_in(root, dir), verdicts)
        except TuneloopError as err:
            return back("/ui/review/data?" + urlencode({"dir": dir, "problem": str(err)}))
        marked = sum(bool(v) for v, _ in verdicts.values())
        return back("/ui/review/data?" + urlencode({"dir": dir, "done": f"saved {marked} verdicts to {path.name}"}))
