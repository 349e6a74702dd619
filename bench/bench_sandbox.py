"""Per-answer overhead of the code sandbox: the same trivial answer run N times under each isolation.

    python bench/bench_sandbox.py [--answers 100]

For each tool that works here (bwrap, unshare) and for an unisolated run (the rlimits only), runs
`assert 1 + 1 == 2` N times one after another and prints the mean and median wall time per answer
in ms. The difference to the unisolated row is what the namespaces cost.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorafull.judge import sandbox  # noqa: E402


def timings(tool, answers: int) -> list[float]:
    out = []
    for _ in range(answers):
        start = time.perf_counter()
        result = sandbox._run("assert 1 + 1 == 2\n", tool, 10.0, 1024, 16)
        out.append((time.perf_counter() - start) * 1000)
        assert result.passed, result.stderr
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100)
    args = parser.parse_args()
    tools = [(name, sandbox._tool_path(name)) for name in ("bwrap", "unshare")]
    rows = [(tool[0], tool) for tool in tools if sandbox._works(*tool)] + [("unisolated", None)]
    for name, tool in rows:
        ms = timings(tool, args.answers)
        print(f"{name:11s} {args.answers} answers: mean {statistics.mean(ms):6.1f} ms, "
              f"median {statistics.median(ms):6.1f} ms, max {max(ms):6.1f} ms")


if __name__ == "__main__":
    main()
