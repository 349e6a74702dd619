"""Judge batches of a whole study: how many batches, and how many polling calls per `--status`, for a
study of many runs in eval.judge.mode: batch, against the local Files + Batches test server.

    python bench/bench_judge_batches.py [--runs 100] [--items 1000] [--polls-to-complete 2] [--code DIR]

Builds RUNS run folders by hand (responses.jsonl of ITEMS small items each, as generation writes
them), marks them queued as the launcher does, then plays the study: each run's eval job judges it
(python -m lorafull.judge's judge_run, one run after another), then `--status` rounds until every run
is done. A --status round is what launch.grid CONFIG --status does: with the study-wide pool
(lorafull.judge.batch_pool) one poll_study call, then the judge of each run it reports ready; with an
older tree (no batch_pool; --code pointing at its checkout) the judge of every waiting run, as its
launcher did. Prints the batches created, the polling calls (batches.retrieve) of the eval jobs and of
each --status round, and their wall times.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--polls-to-complete", type=int, default=2)
    p.add_argument("--code", type=Path, default=REPO, help="the tree whose lorafull is measured (default: this one)")
    args = p.parse_args()
    sys.path[:0] = [str(args.code), str(REPO / "tests")]  # lorafull from --code; the test server from here

    from helpers.batch_server import FakeBatchServer
    from helpers.eval_runs import make_judge_run
    from lorafull.config import load_run_config
    from lorafull.judge.stage import judge_run
    from lorafull.runs import read_status, write_status

    pooled = importlib.util.find_spec("lorafull.judge.batch_pool") is not None
    root = Path(tempfile.mkdtemp(prefix="bench_judge_batches_"))
    with FakeBatchServer(polls_to_complete=args.polls_to_complete) as server:
        runs = [make_judge_run(root, [{"id": i, "class": "brainstorming", "question": f"q{i}",
                                       "response": f"ITEM-{r}.{i} answer"} for i in range(args.items)],
                               server.base_url, name=f"run{r:03d}", mode="batch", model="judge", timeout_s=60.0)
                for r in range(args.runs)]
        for run_dir in runs:
            write_status(run_dir, "queued", stage="train")
        t0 = time.perf_counter()
        for run_dir in runs:  # the eval jobs, as their trainings end
            judge_run(run_dir, progress=False)
        print(f"{'pooled' if pooled else 'per-run'} batches ({args.code}): {args.runs} runs x {args.items} items")
        print(f"eval jobs: {server.created} batches created, {server.retrievals} polls, "
              f"{time.perf_counter() - t0:.1f} s")
        rounds = 0
        while any(read_status(d).get("state") == "waiting" for d in runs) and rounds < 10:
            rounds += 1
            before, t0 = server.retrievals, time.perf_counter()
            if pooled:
                from lorafull.judge.batch_pool import poll_study

                polled = poll_study([(d, load_run_config(d).eval.judge) for d in runs])
                for run_dir in polled.settled:
                    judge_run(run_dir, progress=False)
            else:
                for run_dir in runs:
                    if read_status(run_dir).get("state") == "waiting":
                        judge_run(run_dir, progress=False)
            done = sum(read_status(d).get("state") == "done" for d in runs)
            print(f"--status round {rounds}: {server.retrievals - before} polls, {done}/{args.runs} runs done, "
                  f"{time.perf_counter() - t0:.1f} s")
        largest = max(b["request_counts"]["total"] for b in server.batches.values())
        print(f"total: {server.created} batches created (largest {largest} requests), "
              f"{server.retrievals} polls, {sum(server.paid.values())} requests answered "
              f"(each once: {set(server.paid.values()) == {1}})")


if __name__ == "__main__":
    main()
