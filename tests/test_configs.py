"""Every study file in configs/ loads, plans, and dry-runs through the real command line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.common import REPO
from lorafull.config import load_study
from lorafull.plan.estimate import estimate_study

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SEED_STUDIES = {"belle_comparative.yaml": 8, "lora_learns_less.yaml": 40, "peft_sweep.yaml": 32,
                "lora_learns_less_modules.yaml": 12, "lora_learns_less_cpt.yaml": 72,
                "lora_learns_less_figure.yaml": 140}


def test_the_seed_studies_and_the_demo_are_all_here():
    assert {p.name for p in CONFIGS} >= set(SEED_STUDIES) | {"demo.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_a_config_opens_with_its_command_loads_and_plans(path, tmp_path):
    assert path.read_text().splitlines()[0] == f"# python -m launch.grid configs/{path.name}"
    study = load_study(path, [f"study.output_dir={tmp_path / 'study'}"])
    rows, totals = estimate_study(study)
    assert len(rows) == len(study.runs) == SEED_STUDIES.get(path.name, len(rows))
    for row in rows:  # every run's architecture is known without its weights, and it fits its GPUs
        assert row["trainable_params"] and row["total_params"], (row["run"], row["notes"])
        assert row["fits"] is True, (row["run"], row["notes"])
    if path.name in SEED_STUDIES:  # the seed studies know their sizes before their data is here
        # (but for a task-count run: how many records k tasks hold is known only from the file)
        assert set(totals["unknown"]) <= {r.name for r in study.runs if r.data.num_tasks}, totals["unknown"]
        assert totals["gpu_hours"] > 0


def test_belle_comparative_has_the_papers_eight_rows():
    study = load_study(REPO / "configs" / "belle_comparative.yaml")
    by = {r.name: r for r in study.runs}
    full, lora = by["ft_2m"], by["lora_2m"]
    assert (full.method.kind, full.model.dtype, full.train.epochs, full.train.global_batch_size, full.train.lr,
            full.train.warmup_ratio, full.train.scheduler, full.data.max_length) == \
        ("full", "bf16", 3, 32, 5e-6, 0.03, "cosine", 1024)
    assert (lora.method.kind, lora.method.r, lora.method.target_modules, lora.model.dtype, lora.train.epochs,
            lora.train.global_batch_size, lora.train.lr, lora.train.warmup_steps) == \
        ("lora", 8, ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"], "fp16", 4, 128, 2e-4, 100)
    assert sorted(r.data.num_samples for r in study.runs if r.model.arch == "llama-7b" and r.parent is None) == \
        [600_000, 600_000, 2_000_000, 2_000_000, 4_000_000]
    assert by["lora_13b_2m"].model.arch == "llama-13b"
    for name, kind in (("ft_2m_math_full", "full"), ("ft_2m_math_lora", "lora")):
        assert by[name].parent == "ft_2m" and by[name].method.kind == kind
    assert by["ft_2m_math_full"].train.lr == 5e-7 and by["ft_2m_math_full"].train.epochs == 2
    assert full.eval.judge.model == "gpt-3.5-turbo" and full.eval.judge.temperature == 0
    assert study.slurm.gpus_per_node == 8 and study.slurm.gpu_mem_gb == 40


def test_belle_plan_shows_the_papers_lora_parameter_counts(tmp_path):
    """17.9M (LLaMA-7B) and 28M (LLaMA-13B): Baize's six modules at r 8, counted by the plan on the meta device."""
    study = load_study(REPO / "configs" / "belle_comparative.yaml", [f"study.output_dir={tmp_path}"])
    rows = {row["run"]: row for row in estimate_study(study)[0]}
    for name in ("lora_0.6m", "lora_2m", "lora_4m", "ft_2m_math_lora"):
        assert rows[name]["trainable_params"] == 17_891_328, name
    assert rows["lora_13b_2m"]["trainable_params"] == 28_016_640
    prompts = study.run("lora_2m").eval.judge.prompts
    assert prompts.endswith("BELLE/eval/eval_prompt.json")  # the user's copy of BELLE's judge prompts


def test_lora_learns_less_runs_the_papers_main_ift_design():
    study = load_study(REPO / "configs" / "lora_learns_less.yaml")
    lora = [r for r in study.runs if r.method.kind == "lora"]
    assert len(lora) == 30 and len(study.runs) - len(lora) == 10
    assert {r.method.r for r in lora} == {16, 64, 256} and all(r.method.alpha == 2 * r.method.r for r in lora)
    assert {str(r.method.target_modules) for r in lora} == {"all-linear"}  # the ablation is its own study
    assert {r.train.epochs for r in study.runs} == {1, 2, 4, 8, 16}
    for r in study.runs:  # LionW, 10% warmup, cosine to a floor; batch and length by domain
        assert (r.train.optimizer, r.train.betas, r.train.warmup_ratio, r.train.scheduler) == \
            ("lion", [0.9, 0.95], 0.1, "cosine")
        assert r.train.min_lr_ratio > 0
        math = "metamathqa" in r.data.train
        assert (r.train.global_batch_size, r.data.max_length) == ((768, 1024) if math else (192, 4096)), r.name
    by = {r.name: r for r in study.runs}
    assert by["code_r16_ep1"].train.lr == by["code_r64_ep1"].train.lr != by["code_r256_ep1"].train.lr
    assert by["code_full_ep1"].train.lr == 2e-5 and by["math_full_ep1"].train.lr == 1e-5
    assert (by["math_r16_ep4"].train.lr, by["math_r64_ep4"].train.lr, by["math_r256_ep4"].train.lr) == (1e-4, 1e-4, 5e-5)
    code, math = by["code_r64_ep2"].eval, by["math_r64_ep2"].eval  # the paper's evaluation protocols
    assert (code.num_samples, code.temperature, code.top_p, code.judge.pass_k) == (50, 0.2, 0.95, 1)
    assert (math.num_samples, math.fewshot) == (1, 5) and math.temperature <= 0.01
    gsm = next(t for t in study.analysis.target_tasks if t.kind == "lm_eval")
    assert (gsm.harness_task, gsm.num_fewshot, gsm.metric) == ("gsm8k", 5, "exact_match,strict-match")
    assert [(t.name, t.metric) for t in study.analysis.source_tasks] == \
        [("hellaswag", "acc_norm"), ("arc_challenge", "acc_norm"), ("winogrande", "acc")]
    assert study.analysis.spectrum


def test_the_module_ablation_and_cpt_are_separate_studies():
    modules = load_study(REPO / "configs" / "lora_learns_less_modules.yaml")
    assert {str(r.method.target_modules) for r in modules.runs} == {"attention", "mlp"}
    assert {r.method.r for r in modules.runs} == {16, 64, 256} and {r.train.epochs for r in modules.runs} == {4}
    cpt = load_study(REPO / "configs" / "lora_learns_less_cpt.yaml")
    budgets = [250_000_000, 500_000_000, 1_000_000_000, 2_000_000_000, 4_000_000_000, 8_000_000_000,
               16_000_000_000, 20_000_000_000]
    trunks = [r for r in cpt.runs if r.train.branch_max_tokens]
    assert len(trunks) == 8 and all(r.train.branch_max_tokens == budgets for r in trunks)
    for r in cpt.runs:
        assert r.data.format == "text" and r.data.packing and r.train.optimizer == "lion"
    for trunk in trunks:  # each duration: a cooldown branch of its method's trunk, at its token budget
        branches = [r for r in cpt.runs if r.train.branch_of == trunk.name]
        assert sorted(r.train.max_tokens for r in branches) == budgets
    assert {r.method.kind for r in cpt.runs} == {"lora", "full"} and len(cpt.runs) == 72


def test_the_cpt_plan_costs_each_branch_its_cooldown_only():
    rows = {r["run"]: r for r in estimate_study(load_study(REPO / "configs" / "lora_learns_less_cpt.yaml"))[0]}
    per_step = 192 * 4096  # packed blocks of 4096 tokens, 192 a step
    trunk, last = rows["code_cpt_r16-trunk"], rows["code_cpt_r16-tokens20b"]
    assert trunk["tokens"] == pytest.approx((25432 - 5086) * per_step, rel=1e-4)  # the 20B branch's cooldown start
    assert last["tokens"] == pytest.approx(5086 * per_step, rel=1e-4) and rows["code_cpt_r16-tokens250m"]["tokens"] == 0
    family = [r for name, r in rows.items() if name.startswith("code_cpt_r16-")]
    assert sum(r["tokens"] for r in family) < 0.65 * sum([0.25e9, 0.5e9, 1e9, 2e9, 4e9, 8e9, 16e9, 20e9])


# The authors' own training table (README of danbider/lora-tradeoffs), row by row:
# (setting, method kind, rank) -> lr, weight decay, schedule, global batch, max length
AUTHORS_TABLE = {
    ("code_cpt", "lora", 16): (1e-5, 1e-6, "inverse_sqrt", 192, 4096),
    ("code_cpt", "lora", 64): (1e-5, 1e-6, "inverse_sqrt", 192, 4096),
    ("code_cpt", "lora", 256): (1e-5, 1e-6, "inverse_sqrt", 192, 4096),
    ("code_cpt", "full", None): (1e-5, 1e-6, "inverse_sqrt", 192, 4096),
    ("math_cpt", "lora", 16): (4e-5, 0.0, "inverse_sqrt", 192, 4096),
    ("math_cpt", "lora", 64): (4e-5, 0.0, "inverse_sqrt", 192, 4096),
    ("math_cpt", "lora", 256): (4e-5, 0.0, "inverse_sqrt", 192, 4096),
    ("math_cpt", "full", None): (1e-5, 0.0, "inverse_sqrt", 192, 4096),
    ("code_ift", "lora", 16): (2e-4, 0.0, "cosine", 192, 4096),
    ("code_ift", "lora", 64): (2e-4, 0.0, "cosine", 192, 4096),
    ("code_ift", "lora", 256): (1e-4, 0.0, "cosine", 192, 4096),
    ("math_ift", "lora", 16): (1e-4, 0.0, "cosine", 768, 1024),
    ("math_ift", "lora", 64): (1e-4, 0.0, "cosine", 768, 1024),
    ("math_ift", "lora", 256): (5e-5, 0.0, "cosine", 768, 1024),
    ("math_ift", "full", None): (1e-5, 0.0, "cosine", 768, 1024),
}


def _setting(run) -> tuple:
    domain = "math" if any(k in run.data.train for k in ("metamathqa", "openwebmath")) else "code"
    regime = "cpt" if run.data.format == "text" else "ift"
    return f"{domain}_{regime}", run.method.kind, run.method.r if run.method.kind == "lora" else None


@pytest.mark.parametrize("name", ["lora_learns_less.yaml", "lora_learns_less_cpt.yaml",
                                  "lora_learns_less_modules.yaml"])
def test_the_biderman_configs_follow_every_row_of_the_authors_table(name):
    study = load_study(REPO / "configs" / name)
    seen = set()
    for r in study.runs:
        t = r.train
        assert (t.optimizer, t.betas, t.grad_clip, r.model.dtype) == ("lion", [0.9, 0.95], 1.0, "bf16"), r.name
        assert r.method.kind == "full" or r.method.alpha == 2 * r.method.r, r.name
        key = _setting(r)
        if key not in AUTHORS_TABLE:  # code IFT full fine-tuning: the table states no lr
            assert key == ("code_ift", "full", None), r.name
            continue
        seen.add(key)
        assert (t.lr, t.weight_decay, t.scheduler, t.global_batch_size, r.data.max_length) == AUTHORS_TABLE[key], r.name
        if t.scheduler == "cosine":  # cosine_with_warmup, alpha_f 0.01, t_warmup 0.1 dur; the chat tokenizer
            assert (t.min_lr_ratio, t.warmup_ratio) == (0.01, 0.1) and "chat" in r.model.tokenizer, r.name
        else:  # inv_sqrt_with_warmup: t_scale 1000, t_warmup 1000, t_cooldown 5086 batches, decay 1, floor 0
            assert (t.t_scale, t.warmup_steps, t.cooldown_steps, t.alpha_f_decay, t.alpha_f_cooldown) == \
                (1000, 1000, 5086, 1.0, 0.0), r.name
            assert r.model.tokenizer is None, r.name  # the base model's own
    expected = {k for k in AUTHORS_TABLE if ("cpt" in k[0]) == ("cpt" in name)}
    assert seen == expected or name == "lora_learns_less_modules.yaml" and seen == {
        k for k in expected if k[1] == "lora"}


def test_the_figure_study_sweeps_each_methods_lr_across_the_five_ift_durations():
    study = load_study(REPO / "configs" / "lora_learns_less_figure.yaml")
    methods = {(r.method.kind, r.method.r if r.method.kind == "lora" else None) for r in study.runs}
    assert methods == {("full", None), ("lora", 16), ("lora", 64), ("lora", 256)}
    rates = sorted({r.train.lr for r in study.runs})
    for kind, rank in methods:
        runs = [r for r in study.runs if (r.method.kind, r.method.r if kind == "lora" else None) == (kind, rank)]
        assert sorted({r.train.epochs for r in runs}) == [1, 2, 4, 8, 16]
        assert len(runs) == len(rates) * 5  # every rate at every duration: a sweep per method and duration
        chosen = AUTHORS_TABLE[("math_ift", kind, rank)][0]  # the table's lr lies inside the sweep
        assert rates[0] < chosen < rates[-1], (kind, rank)
        assert all(r.method.kind == "full" or r.method.alpha == 2 * r.method.r for r in runs)
    for r in study.runs:  # the math IFT rows of the table, but the swept lr
        expected = AUTHORS_TABLE[_setting(r)]
        assert (r.train.weight_decay, r.train.scheduler, r.train.global_batch_size, r.data.max_length) == expected[1:]
        assert (r.train.optimizer, r.train.betas, r.train.min_lr_ratio, r.train.warmup_ratio) == \
            ("lion", [0.9, 0.95], 0.01, 0.1)
    assert (study.select.keys, study.select.metric, study.select.holdout) == (["train.lr"], "learning", 0.3)
    learning = [t.name for t in study.analysis.target_tasks]
    assert "gsm8k" in learning and [t.metric for t in study.analysis.source_tasks] == ["acc_norm", "acc_norm", "acc"]


def test_peft_sweep_compares_methods_sizes_rates_and_task_counts():
    study = load_study(REPO / "configs" / "peft_sweep.yaml")
    kinds = {r.method.kind for r in study.runs}
    assert {"lora", "adapter", "full"} <= kinds and len(kinds) >= 5
    lora = [r for r in study.runs if r.method.kind == "lora" and r.data.num_tasks is None]
    assert {r.method.r for r in lora} == {8, 32, 128} and {r.train.lr for r in lora} == {1e-5, 1e-4, 1e-3}
    assert {r.method.adapter_size for r in study.runs if r.method.kind == "adapter"} == {64, 256, 1024}
    assert {r.data.num_tasks for r in study.runs} == {None, 8, 32, 128}
    assert all(r.data.num_samples is None for r in study.runs if r.data.num_tasks)  # every record of the tasks
    judge = study.runs[0].eval.judge
    assert judge.kind == "reference" and judge.scorers == {}  # every class scored by ROUGE-L (text)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_launch_grid_dry_runs_every_config(path, tmp_path):
    out = tmp_path / "study"
    # the papers' studies name their files /PATH/TO/...: they exist only on a cluster
    elsewhere = ["--inputs-on-cluster"] if "/PATH/TO/" in path.read_text() else []
    proc = subprocess.run([sys.executable, "-m", "launch.grid", str(path), "--dry-run", "--executor", "local",
                           f"study.output_dir={out}", *elsewhere], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run" in proc.stdout and "nothing submitted" in proc.stdout
    assert not (out / "runs").exists()  # a dry run writes no run folder


def _write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_zipped_grid_keys_vary_together_and_name_runs_by_their_first_key(tmp_path):
    from lorafull.config import ConfigError

    path = _write(tmp_path, """
base: {model: {name_or_path: "scratch:tiny-llama", tokenizer: tok}}
grid:
  "method.r,method.alpha": [[16, 32], [64, 128]]
  "data.train,data.max_length": [[/data/code.jsonl, 4096], [/data/math.jsonl, 1024]]
""")
    study = load_study(path)
    points = sorted((r.method.r, r.method.alpha, r.data.train, r.data.max_length) for r in study.runs)
    assert points == [(16, 32.0, "/data/code.jsonl", 4096), (16, 32.0, "/data/math.jsonl", 1024),
                      (64, 128.0, "/data/code.jsonl", 4096), (64, 128.0, "/data/math.jsonl", 1024)]
    # named by the first key of each group (a path by its file stem), then the signature
    assert sorted(r.name.rsplit("-", 1)[0] for r in study.runs) == ["r16-code", "r16-math", "r64-code", "r64-math"]
    bad = _write(tmp_path, 'base: {}\ngrid: {"method.r,method.alpha": [[16, 32], [64]]}\n')
    with pytest.raises(ConfigError, match=r"s.yaml:2: grid.*method.r,method.alpha.*list of 2"):
        load_study(bad)


def test_a_chained_run_names_its_grid_parent_by_slug_and_follows_it(tmp_path):
    from lorafull.config import study_signatures

    text = """
base: {model: {name_or_path: "scratch:tiny-llama", tokenizer: tok}}
grid: {method.kind: [full, lora], train.seed: [SEED]}
runs: [{name: child, model.name_or_path: "run:full-seedSEED", train.seed: 1}]
"""
    path = _write(tmp_path, text.replace("SEED", "7"))
    study = load_study(path)
    full = next(r for r in study.runs if r.name.startswith("full-seed7-"))
    child = study.run("child")
    assert child.model.name_or_path == f"run:{full.name}" and child.parent == full.name
    sigs = study_signatures(study)  # recomputed after the renaming: the same signatures
    assert full.name == f"full-seed7-{sigs[full.name]}"
    # the child's own settings are the same; its parent's seed differs, so the child is another run
    other = load_study(_write(tmp_path, text.replace("SEED", "8")))
    assert study_signatures(other)["child"] != sigs["child"]


def test_the_planning_hint_model_arch_is_not_part_of_a_signature(tmp_path):
    from lorafull.config import study_signatures

    path = _write(tmp_path, 'base: {model: {name_or_path: /PATH/TO/llama-7b-hf, arch: llama-7b}}\n')
    assert study_signatures(load_study(path)) == study_signatures(load_study(path, ["model.arch=llama-13b"]))


def test_editing_a_data_file_changes_exactly_the_runs_that_read_it(tmp_path):
    import os

    from lorafull.config import study_signatures

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"instruction": "x", "output": "y"}\n')
    b.write_text('{"instruction": "p", "output": "q"}\n')
    path = _write(tmp_path, f"""
base: {{model: {{name_or_path: "scratch:tiny-llama", tokenizer: tok}}, data: {{train: {a}}}}}
grid: {{method.kind: [full, lora]}}
runs:
  - {{name: on_b, data.train: {b}}}
  - {{name: child_of_b, model.name_or_path: "run:on_b", data.train: {a}}}
  - {{name: b_child_of_b, model.name_or_path: "run:on_b", data.train: {b}}}
""")
    before = study_signatures(load_study(path))
    stat = b.stat()
    b.write_text('{"instruction": "p", "output": "Q"}\n')  # same size, same place: another content
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    study = load_study(path)
    after = study_signatures(study)
    # the runs that read b, and the runs trained on top of one that did
    changed = {n for n in after if after[n] != before.get(n)}
    assert changed == {"on_b", "child_of_b", "b_child_of_b"}
    grid_runs = [r.name for r in study.runs if r.name.startswith(("full-", "lora-"))]
    assert len(grid_runs) == 2 and all(before[n] == after[n] for n in grid_runs)  # named as before


def test_signatures_follow_content_not_location_and_hashes_are_cached(tmp_path, monkeypatch):
    import shutil

    from lorafull.config import content, study_signatures

    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "train.jsonl").write_text('{"text": "same bytes"}\n')
        shutil.copytree(REPO / "lorafull" / "models" / "archs", tmp_path / d / "tok")  # any folder: hashed by its files
    text = 'base: {model: {name_or_path: "scratch:tiny-llama", tokenizer: ./tok}, data: {train: ./train.jsonl}}\n' \
           'grid: {train.lr: [1.0e-4, 2.0e-4]}\n'
    sigs = []
    for d in ("one", "two"):
        monkeypatch.chdir(tmp_path / d)
        _write(tmp_path / d, text)
        sigs.append(study_signatures(load_study("s.yaml", [f"study.output_dir={tmp_path / d / 'out'}"])))
    assert sigs[0] == sigs[1]  # other folders, other cwd, other study folder: the same runs
    (tmp_path / "two" / "tok" / "tiny-llama.json").write_text("{}")  # another tokenizer: other runs
    assert study_signatures(load_study("s.yaml", [f"study.output_dir={tmp_path / 'two' / 'out'}"])) != sigs[1]

    # the hash of a file is read from the cache while its path, size and mtime stay; the disk cache
    # serves a new process (the in-memory one cleared)
    data, cache = tmp_path / "one" / "train.jsonl", tmp_path / "cache"
    content._memo.clear()
    first = content.file_sha256(data, cache)
    assert (cache / content.CACHE_FILE).exists()
    stat = data.stat()
    data.write_text('{"text": "SAME bytes"}\n')
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    content._memo.clear(), content._disk.clear()
    assert content.file_sha256(data, cache) == first  # not read again: that is what the cache is for
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert content.file_sha256(data, cache) != first


def test_results_of_earlier_eval_settings_are_moved_aside_never_overwritten(tmp_path):
    from lorafull.config import (HISTORY_DIR, RunConfig, eval_fingerprint, eval_is_current, read_eval_fingerprint,
                                 refresh_eval_results)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = RunConfig(name="r")
    run.eval.judge.kind, run.eval.max_new_tokens = "reference", 8
    (run_dir / "scores.jsonl").write_text("legacy\n")  # from before fingerprints: unknown settings, kept
    assert eval_is_current(run_dir, run) and refresh_eval_results(run_dir, run) is None
    assert read_eval_fingerprint(run_dir) is None and (run_dir / "scores.jsonl").read_text() == "legacy\n"
    (run_dir / "scores.jsonl").unlink()
    assert refresh_eval_results(run_dir, run) is None  # nothing to move: the settings are recorded
    prints = []
    for tokens in (8, 16, 8, 16):  # A -> B -> A -> B: four result sets, four folders
        prints.append(eval_fingerprint(run)["fingerprint"])
        assert eval_is_current(run_dir, run) and read_eval_fingerprint(run_dir)["fingerprint"] == prints[-1]
        (run_dir / "responses.jsonl").write_text(f"responses {tokens}\n")
        (run_dir / "scores.jsonl").write_text(f"scores {tokens}\n")
        run.eval.max_new_tokens = 16 if tokens == 8 else 8
        assert not eval_is_current(run_dir, run)
        refresh_eval_results(run_dir, run)
        assert not (run_dir / "responses.jsonl").exists() and not (run_dir / "scores.jsonl").exists()
    kept = sorted(p.name for p in (run_dir / HISTORY_DIR).iterdir())
    assert kept == sorted([prints[0], prints[1], f"{prints[0]}-2", f"{prints[1]}-2"])
    assert (run_dir / HISTORY_DIR / f"{prints[0]}-2" / "scores.jsonl").read_text() == "scores 8\n"
    # only the judge changes: the responses stay (a copy goes with the old scores)
    (run_dir / "responses.jsonl").write_text("answers\n")
    (run_dir / "scores.jsonl").write_text("old scores\n")
    run.eval.judge.scorers = {"math": "text"}
    moved = refresh_eval_results(run_dir, run)
    assert (run_dir / "responses.jsonl").read_text() == (moved / "responses.jsonl").read_text() == "answers\n"
    assert (moved / "scores.jsonl").read_text() == "old scores\n" and not (run_dir / "scores.jsonl").exists()
