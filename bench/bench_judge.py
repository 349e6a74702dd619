"""Judge throughput: concurrent + rate-limited vs one request at a time, against the local test server.

    python bench/bench_judge.py [--items 1000] [--latency-ms 100] [--concurrency 64] [--rpm 15000]
                                [--sequential-items N] [--binding-rpm 3000] [--binding-items 1000]

Starts tests/openai_server.py in its own process (latency per request = --latency-ms), judges the same
items twice with fresh caches: once as configured (concurrency, requests-per-minute limit), once with
concurrency 1. Prints both wall times, the ratio (target >= 20x), and the request rate the server
observed. A third pass (--binding-rpm) sets a limit low enough to bind and shows the server never saw
more than the limit allows. The concurrent side is CPU-bound (the openai client costs a few ms of CPU
per request) while one-at-a-time is latency-bound, so the ratio drops when the machine is loaded.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lorafull.config import RunConfig, save_run_config  # noqa: E402
from lorafull.judge.stage import judge_run  # noqa: E402


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--latency-ms", str(latency_ms)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    return proc, f"http://127.0.0.1:{int(line[1])}"


def make_run(root: Path, name: str, n: int, base_url: str, **judge) -> Path:
    run_dir = root / "study" / "runs" / name
    run = RunConfig(name=name)
    j = run.eval.judge
    j.base_url, j.cache = f"{base_url}/v1", str(root / f"{name}.sqlite")
    for k, v in judge.items():
        setattr(j, k, v)
    save_run_config(run, run_dir, "bench")
    with open(run_dir / "responses.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "class": ["open qa", "rewrite", "math"][i % 3], "question": f"question {i}",
                                "std_answer": "ref", "response": f"ITEM-{name}-{i} answer"}) + "\n")
    return run_dir


def arrivals(base_url: str, tag: str) -> list[float]:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=30) as r:
        stats = json.loads(r.read())
    return sorted(t for key, times in stats["times"].items() if key.startswith(f"ITEM-{tag}-") for t in times)


def peak_in_window(times: list[float], window_s: float) -> int:
    best, lo = 0, 0
    for hi in range(len(times)):
        while times[hi] - times[lo] > window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rpm", type=int, default=15000)
    p.add_argument("--sequential-items", type=int, default=None,
                   help="time one-at-a-time on this many items and scale to --items (it is latency-bound, linear)")
    p.add_argument("--binding-rpm", type=int, default=3000, help="a third pass whose limit binds (0 = skip)")
    p.add_argument("--binding-items", type=int, default=1000)
    args = p.parse_args()
    proc, base_url = start_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            fast = make_run(root, "fast", args.items, base_url, concurrency=args.concurrency,
                            requests_per_minute=args.rpm)
            t0 = time.perf_counter()
            s_fast = judge_run(fast, progress=False)
            fast_s = time.perf_counter() - t0
            n_slow = min(args.sequential_items or args.items, args.items)
            slow = make_run(root, "slow", n_slow, base_url, concurrency=1)
            t0 = time.perf_counter()
            s_slow = judge_run(slow, progress=False)
            slow_s = (time.perf_counter() - t0) * args.items / n_slow
            times = arrivals(base_url, "fast")
            if args.binding_rpm:
                tight = make_run(root, "tight", args.binding_items, base_url, concurrency=args.concurrency,
                                 requests_per_minute=args.binding_rpm)
                judge_run(tight, progress=False)
                tight_times = arrivals(base_url, "tight")
    finally:
        proc.terminate()
        proc.wait()
    print(f"items={args.items} latency={args.latency_ms:g}ms concurrency={args.concurrency} rpm_limit={args.rpm}")
    print(f"concurrent: {fast_s:8.2f} s  ({args.items / fast_s:7.1f} items/s, scored {s_fast['scored']}, "
          f"unscored {s_fast['unscored']})")
    scaled = f", measured on {n_slow} items and scaled" if n_slow < args.items else ""
    print(f"one-at-a-time: {slow_s:8.2f} s  ({args.items / slow_s:7.1f} items/s, scored {s_slow['scored']}{scaled})")
    print(f"speed-up: {slow_s / fast_s:.1f}x (target >= 20x)")
    print("observed (concurrent): " + rate_line(times, args.rpm))
    if args.binding_rpm:
        print(f"observed (limit {args.binding_rpm:,} rpm): " + rate_line(tight_times, args.binding_rpm))


def rate_line(times: list[float], rpm: int) -> str:
    """What the server saw against what the limiter allows: one second of burst + the rate."""
    span = times[-1] - times[0]
    burst = max(1, rpm // 60)
    window = min(10.0, span)
    return (f"{len(times)} requests in {span:.2f} s = {(len(times) - 1) / span * 60:,.0f} rpm; busiest "
            f"{window:.1f} s window {peak_in_window(times, window)} requests, the limit allows "
            f"{burst + rpm / 60 * window:.0f}")


if __name__ == "__main__":
    main()
