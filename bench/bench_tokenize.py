"""Tokenization + masking throughput and peak memory: lorafull.data vs a per-example datasets.map.

    python bench/bench_tokenize.py                      # 1,000,000 synthetic samples (a few minutes)
    python bench/bench_tokenize.py --samples 200000 --baseline-samples 50000
    python bench/bench_tokenize.py --answer-words 3 30     # short, alpaca-like answers
    python bench/bench_tokenize.py --samples 1000000 --procs 1 2 --skip-baseline
                                                        # lorafull.data with 1 and 2 processes, side by side

Both sides start from the same jsonl file on disk and end with token ids + labels (-100 on the
prompt) on disk, with the same BELLE prompt layout, the same tokenizer and the same max_length:
- ours:     lorafull.data.build_dataset (streamed reading, batched Rust tokenization, numpy masks,
            memory-mapped cache);
- baseline: datasets.load_dataset("json") + .map over single examples, tokenizing the prompt and the
            answer of each example with tokenizer(...) -- the usual instruction-tuning script.
Each side runs in its own subprocess so that its own peak RSS (os.wait4 rusage; children's peaks
included) and CPU time are measured. The baseline is slow, so by default it runs on fewer samples
and its time is extrapolated linearly to --samples, labelled as such. Peak RSS is measured at two
sample counts per side to show whether memory grows with the data. The outputs of both sides are
compared on the first samples so that the speed-up is for the same result. A third row times the
Rust tokenizer alone on the same texts (no reading, masking, writing): both sides are built on it,
so (baseline rate / tokenizer-alone rate) bounds the speed-up any pipeline can reach on the machine.

--procs runs lorafull.data once per process count (data.num_proc; files of 32 MB or more are split
into byte ranges, one process each, merged into the same cache) at --samples and a tenth of it, and
prints samples/s and peak RSS for each: the coordinating process's own peak and the largest worker's
(the job's total is at most own + procs x worker).

The tokenizer is a byte-level BPE (--vocab-size, default 32000) trained on the synthetic text, so
tokens per sample are realistic for a LLaMA-size vocabulary. Needs `pip install datasets`
(setup.cfg extra `bench`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_LENGTH = 1024
COMPARE_FIRST = 1000
EN = ("the model data answer question write explain list three reasons why how what when people water city "
      "learning language computer history science health because important example simple number time good "
      "first world system problem result make use find give").split()
ZH_CHARS = ("我你他的是了在有和人这中大为上个国以要到说时地们出就会可也对生能而子那得于着下自之年过发后作里用道行"
            "所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实")
ZH_PUNCT = "，。、；：？！"
INSTRUCTIONS = ["Explain {}.", "Write a short story about {}.", "List three facts about {}.", "请解释{}。",
                "把下面的句子翻译成英文：{}", "Summarize: {}", "回答问题：{}？", "Give an example of {}."]


class SyntheticText:
    """Words drawn from Zipf-distributed vocabularies (English and Chinese, half the samples each),
    with punctuation, so the tokenizer sees repeated common words and rarer ones as in real text."""

    def __init__(self, seed: int, answer_words: tuple[int, int] = (10, 150)):
        self.rng = rng = random.Random(seed)
        self.answer_words = answer_words
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.en = EN + ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(5000)]
        self.zh = ["".join(rng.choices(ZH_CHARS, k=rng.randint(1, 3))) for _ in range(5000)]
        # cumulative Zipf weights, computed once (choices() would redo the sum on every call)
        self.en_cw = list(itertools.accumulate(1 / (i + 1) for i in range(len(self.en))))
        self.zh_cw = list(itertools.accumulate(1 / (i + 1) for i in range(len(self.zh))))

    def words(self, n: int, zh: bool) -> str:
        rng = self.rng
        if zh:
            return "".join(w + (rng.choice(ZH_PUNCT) if rng.random() < 0.15 else "")
                           for w in rng.choices(self.zh, cum_weights=self.zh_cw, k=n))
        return " ".join(w + ("," if rng.random() < 0.08 else "") for w in rng.choices(self.en, cum_weights=self.en_cw, k=n))

    def record(self) -> dict:
        """An instruction sample of roughly BELLE's shape: a short instruction, an optional input, a longer answer."""
        rng, zh = self.rng, self.rng.random() < 0.5
        return {"instruction": rng.choice(INSTRUCTIONS).format(self.words(rng.randint(2, 12), zh)),
                "input": self.words(rng.randint(5, 30), zh) if rng.random() < 0.4 else "",
                "output": self.words(rng.randint(*self.answer_words), zh)}


def write_data(path: Path, n: int, answer_words: tuple[int, int], seed: int = 0) -> None:
    gen = SyntheticText(seed, answer_words)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps(gen.record(), ensure_ascii=False) + "\n")


def head_lines(src: Path, dst: Path, n: int) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for i, line in enumerate(fin):
            if i == n:
                break
            fout.write(line)


# ---------------------------------------------------------------------------------------------
# The two sides (each runs in a child process: python bench_tokenize.py --child SIDE ...)
# ---------------------------------------------------------------------------------------------
def child_ours(data: Path, tok_dir: Path, work: Path, procs: int):
    from lorafull.config import RunConfig
    from lorafull.data.dataset import build_dataset
    from lorafull.models.load import load_tokenizer

    tok = load_tokenizer(str(tok_dir))
    run = RunConfig(name="bench")
    run.data.train, run.data.cache_dir, run.data.max_length = str(data), str(work / "cache"), MAX_LENGTH
    run.data.num_proc = procs

    def work_fn():
        ds = build_dataset(run, tok)
        first = [[ds[i]["input_ids"].tolist(), ds[i]["labels"].tolist()] for i in range(min(COMPARE_FIRST, len(ds)))]
        return {"samples": ds.stats["samples"], "tokens": ds.stats["tokens"], "first": first}
    return work_fn


def child_baseline(data: Path, tok_dir: Path, work: Path, procs: int):
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")
    import datasets
    from transformers import AutoTokenizer

    from lorafull.data.dataset import format_prompt

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    eos = tok.eos_token_id

    def one_example(ex):  # the per-example preprocessing of a typical instruction-tuning script
        question = ex["instruction"] + (f"\n{ex['input']}" if ex["input"].strip() else "")
        prompt = tok(format_prompt(question, tok, "belle"))["input_ids"]
        answer = tok(ex["output"], add_special_tokens=False)["input_ids"] + [eos]
        return {"input_ids": (prompt + answer)[:MAX_LENGTH],
                "labels": ([-100] * len(prompt) + answer)[:MAX_LENGTH]}

    def work_fn():
        raw = datasets.load_dataset("json", data_files=str(data), split="train")
        ds = raw.map(one_example, remove_columns=raw.column_names, num_proc=procs if procs > 1 else None)
        n = min(COMPARE_FIRST, len(ds))
        first = [[row["input_ids"], row["labels"]] for row in ds.select(range(n))]
        return {"samples": len(ds), "tokens": None, "first": first}
    return work_fn


def child_floor(data: Path, tok_dir: Path, work: Path, procs: int):
    """The Rust tokenizer alone on the same texts (no reading, masking or writing): the floor."""
    from lorafull.data.dataset import format_prompt
    from lorafull.models.load import load_tokenizer

    tok = load_tokenizer(str(tok_dir))
    encode = tok.backend_tokenizer.encode_batch_fast
    texts = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            question = rec["instruction"] + (f"\n{rec['input']}" if rec["input"].strip() else "")
            texts += [format_prompt(question, tok, "belle"), rec["output"]]

    def work_fn():
        tokens = 0
        for i in range(0, len(texts), 16384):
            tokens += sum(len(e.ids) for e in encode(texts[i:i + 16384], add_special_tokens=False))
        return {"samples": len(texts) // 2, "tokens": tokens, "first": []}
    return work_fn


CHILDREN = {"ours": child_ours, "baseline": child_baseline, "floor": child_floor}


def _peak_rss_kb() -> int:
    """This process's own peak RSS. VmHWM, not ru_maxrss: Linux carries the forking parent's peak
    into a child's ru_maxrss across exec, which would charge the bench driver's memory to each side."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_main(args) -> None:
    """Set up (imports, tokenizer) untimed, then time the work: wall, CPU of all threads and of
    worker processes, own peak RSS and the largest worker's."""
    import resource

    data, tok_dir, work, out_file = map(Path, args.child_args)
    work_fn = CHILDREN[args.child](data, tok_dir, work, args.baseline_procs)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = work_fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(seconds=seconds, cpu_s=cpu + (kids.ru_utime + kids.ru_stime) - (kids0.ru_utime + kids0.ru_stime),
                  peak_rss_mb=max(_peak_rss_kb(), kids.ru_maxrss) / 1024, own_rss_mb=_peak_rss_kb() / 1024,
                  worker_rss_mb=kids.ru_maxrss / 1024)
    out_file.write_text(json.dumps(result))


def run_child(side: str, data: Path, tok_dir: Path, work: Path, procs: int) -> dict:
    """Run one side in a fresh process and read back what it measured."""
    work.mkdir(parents=True, exist_ok=True)
    out_file = work / "result.json"
    cmd = [sys.executable, __file__, "--child", side, str(data), str(tok_dir), str(work), str(out_file),
           "--baseline-procs", str(procs)]
    # the baseline's per-example calls cannot use the tokenizer's threads; batched calls can
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false" if side == "baseline" else "true")
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed on {data}:\n{proc.stderr[-3000:]}")
    result = json.loads(out_file.read_text())
    shutil.rmtree(work, ignore_errors=True)  # caches of a measured side are not needed again
    return result


# ---------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1_000_000, help="samples tokenized by lorafull.data")
    p.add_argument("--baseline-samples", type=int, default=None,
                   help="samples for the datasets.map baseline (default: min(samples, 100000)); "
                        "its time is extrapolated to --samples")
    p.add_argument("--baseline-procs", type=int, default=1, help="num_proc of the baseline's datasets.map")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--answer-words", type=int, nargs=2, default=[10, 150], metavar=("MIN", "MAX"),
                   help="answer length range in words (BELLE-like default; e.g. 3 30 for short alpaca-like answers)")
    p.add_argument("--procs", type=int, nargs="+", default=[1],
                   help="lorafull.data process counts to run side by side (data.num_proc), e.g. 1 2")
    p.add_argument("--skip-baseline", action="store_true", help="only lorafull.data (no datasets.map, no floor)")
    p.add_argument("--workdir", default=None, help="where data and caches go (default: a temporary folder)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args)

    n = args.samples
    n_base = args.baseline_samples or min(n, 100_000)
    small, base_small = max(n // 10, 1), max(n_base // 10, 1)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-tokenize-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        _bench(root, n, n_base, small, base_small, args)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


def _bench(root: Path, n: int, n_base: int, small: int, base_small: int, args) -> None:
    from lorafull.models.tiny import build_tokenizer

    t0 = time.perf_counter()
    files = {k: root / f"data-{k}.jsonl" for k in sorted({n, n_base, small, base_small})}
    biggest = max(files)
    write_data(files[biggest], biggest, tuple(args.answer_words))
    for k, f in files.items():
        if k != biggest:
            head_lines(files[biggest], f, k)
    sample_texts = []
    with open(files[biggest], encoding="utf-8") as f:
        for i, line in zip(range(20000), f):
            rec = json.loads(line)
            sample_texts.append(" ".join(rec.values()))
    tok_dir = root / "tokenizer"
    build_tokenizer(sample_texts, tok_dir, vocab_size=args.vocab_size)
    size_mb = files[n].stat().st_size / 2**20
    print(f"data: {n:,} synthetic samples ({size_mb:.0f} MB jsonl, answers of {args.answer_words[0]}-"
          f"{args.answer_words[1]} words), byte-level BPE vocab {args.vocab_size}, "
          f"max_length {MAX_LENGTH}; setup {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs", flush=True)

    plan = [("ours", count, procs) for procs in args.procs for count in (small, n)]
    if not args.skip_baseline:
        plan += [("baseline", base_small, args.baseline_procs), ("baseline", n_base, args.baseline_procs),
                 ("floor", n_base, 1)]
    results = {}
    for side, count, procs in plan:
        if (side, count, procs) in results:
            continue
        print(f"running {side} on {count:,} samples ({procs} process{'es' if procs > 1 else ''}) ...", flush=True)
        results[side, count, procs] = r = run_child(side, files[count], tok_dir, root / f"work-{side}-{count}-{procs}",
                                                    procs)
        print(f"  {r['seconds']:.1f} s wall, {r['cpu_s']:.1f} s CPU, {count / r['seconds']:,.0f} samples/s, "
              f"peak RSS {r['own_rss_mb']:.0f} MB (largest worker {r['worker_rss_mb']:.0f} MB)", flush=True)
    _print_procs(results, args.procs, n, small)
    if not args.skip_baseline:
        _print_table({(side, count): r for (side, count, procs), r in results.items()
                      if side != "ours" or procs == args.procs[0]}, n, n_base, small, base_small)


def _print_procs(results: dict, procs_list: list[int], n: int, small: int) -> None:
    print(f"\n{'lorafull.data':16}{'processes':>10}{'samples':>11}{'wall s':>9}{'samples/s':>11}{'own RSS MB':>12}"
          f"{'worker RSS MB':>15}")
    for procs in procs_list:
        for count in (small, n):
            r = results["ours", count, procs]
            print(f"{'':16}{procs:>10}{count:>11,}{r['seconds']:>9.1f}{count / r['seconds']:>11,.0f}"
                  f"{r['own_rss_mb']:>12.0f}{r['worker_rss_mb']:>15.0f}")
    one = results["ours", n, procs_list[0]]
    for procs in procs_list[1:]:
        r = results["ours", n, procs]
        print(f"{procs} processes vs {procs_list[0]} at {n:,} samples: {one['seconds'] / r['seconds']:.2f}x the rate")


def _print_table(results: dict, n: int, n_base: int, small: int, base_small: int) -> None:
    ours, base, floor = results["ours", n], results["baseline", n_base], results["floor", n_base]

    def rate(r, count, key):  # samples per wall second / per CPU second
        return count / r[key]

    print()
    print(f"{'':22}{'samples':>11}{'wall s':>9}{'CPU s':>9}{'samples/s':>11}{'samples/CPU-s':>15}{'tokens/s':>11}"
          f"{'peak RSS MB':>13}")
    rows = [("lorafull.data", ours, n), ("datasets.map", base, n_base), ("tokenizer alone", floor, n_base)]
    for name, r, count in rows:
        tokens = f"{r['tokens'] / r['seconds']:>11,.0f}" if r["tokens"] else f"{'-':>11}"
        print(f"{name:22}{count:>11,}{r['seconds']:>9.1f}{r['cpu_s']:>9.1f}{rate(r, count, 'seconds'):>11,.0f}"
              f"{rate(r, count, 'cpu_s'):>15,.0f}{tokens}{r['peak_rss_mb']:>13.0f}")
    wall_x = rate(ours, n, "seconds") / rate(base, n_base, "seconds")
    cpu_x = rate(ours, n, "cpu_s") / rate(base, n_base, "cpu_s")
    extrap = "" if n_base == n else f" (baseline measured on {n_base:,} samples; its rate extrapolated to {n:,})"
    print(f"\nlorafull.data vs datasets.map: {wall_x:.1f}x faster in wall time, {cpu_x:.1f}x in CPU time{extrap}")
    print(f"lorafull.data vs the tokenizer alone (no reading/masking/writing): "
          f"{rate(ours, n, 'seconds') / rate(floor, n_base, 'seconds'):.2f}x the wall rate, "
          f"{rate(ours, n, 'cpu_s') / rate(floor, n_base, 'cpu_s'):.2f}x the CPU rate")
    o_small, b_small = results["ours", small]["peak_rss_mb"], results["baseline", base_small]["peak_rss_mb"]
    print(f"peak RSS, lorafull.data: {o_small:.0f} MB at {small:,} samples -> {ours['peak_rss_mb']:.0f} MB at {n:,} "
          f"({ours['peak_rss_mb'] / o_small:.2f}x for {n / small:g}x the samples)")
    print(f"peak RSS, datasets.map:  {b_small:.0f} MB at {base_small:,} samples -> {base['peak_rss_mb']:.0f} MB at "
          f"{n_base:,} ({base['peak_rss_mb'] / b_small:.2f}x for {n_base / base_small:g}x the samples)")
    same = ours["first"][:len(base["first"])] == base["first"]
    print(f"identical input_ids and labels on the first {len(base['first']):,} samples: {'yes' if same else 'NO'}")
    print(f"targets: >= 5x faster (wall): {'met' if wall_x >= 5 else 'NOT met'}; "
          f"peak RSS < 2 GB: {'met' if ours['peak_rss_mb'] < 2048 else 'NOT met'}")


if __name__ == "__main__":
    main()
