"""Sweeps: the held-out split by hand, the best run of each group picked on the held-out items with the
tie rule, and the report built on the rest (table, sweep section, comparisons, tradeoff.json)."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest
import yaml

from helpers.common import write_jsonl
from lorafull.analysis.selection import holdout_ids
from lorafull.config import RunConfig, save_run_config
from lorafull.report.build import build_report

N = 10  # target-task items (and eval items)


def test_the_split_holds_out_the_first_items_by_seeded_hash():
    order = sorted(range(N), key=lambda i: hashlib.sha256(f"7:t:{i}".encode()).hexdigest())
    assert holdout_ids({"t": [0.0] * N}, 0.3, 7) == {"t": set(order[:3])}
    # ids, not positions, decide: the same items whatever order a run lists them in; unscored ones count
    assert holdout_ids({"t": {i: None for i in reversed(range(N))}}, 0.3, 7) == {"t": set(order[:3])}
    assert holdout_ids({"t": [1.0] * N}, 0.3, 8) != {"t": set(order[:3])}  # another seed, another split
    assert holdout_ids({"a": [1.0], "b": [1.0, 0.0], "c": [0.0] * 4}, 0.01, 0) == \
        {"a": set(), "b": {holdout_ids({"b": [1.0, 0.0]}, 0.01, 0)["b"].pop()}, "c": {
            sorted(range(4), key=lambda i: hashlib.sha256(f"0:c:{i}".encode()).hexdigest())[0]}}


def _run(study, name: str, kind: str, lr: float, held: list[float], rest: list[float], split: set) -> None:
    """A run folder whose target-task learning is `held` on the held-out items and `rest` on the others."""
    run = RunConfig(name=name)
    run.method.kind, run.train.lr, run.train.seed = kind, lr, 1
    run_dir = study / "runs" / name
    save_run_config(run, run_dir, "sig")
    held_it, rest_it = iter(held), iter(rest)
    learned = [next(held_it) if i in split else next(rest_it) for i in range(N)]
    (run_dir / "analysis").mkdir(parents=True)
    (run_dir / "analysis" / "tasks.json").write_text(json.dumps({
        "target_tasks": ["t"], "source_tasks": ["s"],
        "tasks": {"t": {"item_scores": learned}, "s": {"item_scores": [1.0, 1.0, 0.0, 1.0]}},
        "base": {"t": {"item_scores": [0.0] * N}, "s": {"item_scores": [1.0] * 4}},
        "learning": sum(learned) / N, "forgetting": 0.25}))
    # eval scores follow the same pattern on the eval set's items (one class, ids e0..e9)
    write_jsonl(run_dir / "scores.jsonl", [{"id": f"e{i}", "class": "qa", "score": learned[i]} for i in range(N)])


def test_selection_picks_the_best_run_of_each_group_on_held_out_items(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"select": {"keys": ["train.lr"], "holdout": 0.5, "seed": 0}}))
    split = holdout_ids({"t": [0.0] * N}, 0.5, 0)["t"]
    # full: on the held-out items lr 1e-5 learns 0.8, 1e-4 only 0.4, though 1e-4 learns more over all items
    _run(study, "full-a", "full", 1e-5, [1, 1, 1, 1, 0], [0] * 5, split)
    _run(study, "full-b", "full", 1e-4, [1, 1, 0, 0, 0], [1] * 5, split)
    # lora: a tie on the held-out items (0.4 each): the smaller learning rate wins, though its name is second
    _run(study, "lora-a", "lora", 1e-3, [0, 0, 0, 1, 1], [0] * 5, split)
    _run(study, "lora-b", "lora", 1e-4, [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], split)
    report = build_report(study)

    table = {r["run"]: r for r in csv.DictReader(open(report / "table.csv", encoding="utf-8"))}
    assert {r: table[r]["selected"] for r in table} == {"full-a": "yes", "full-b": "no", "lora-a": "no",
                                                        "lora-b": "yes"}
    # every number shown uses the other items: learning of full-a on them is 0; the eval set has its own split
    assert float(table["full-a"]["learning"]) == 0.0 and float(table["full-b"]["learning"]) == 1.0
    assert float(table["lora-b"]["learning"]) == pytest.approx(0.6)
    eval_held = holdout_ids({"qa": {f"e{i}": 0 for i in range(N)}}, 0.5, 0)["qa"]
    learned = [1.0 if i in split else 0.0 for i in range(N)]  # full-a: 1 1 1 1 0 on the task's held-out items
    learned[sorted(split)[-1]] = 0.0
    rest = [learned[i] for i in range(N) if f"e{i}" not in eval_held]
    assert float(table["full-a"]["score"]) == pytest.approx(sum(rest) / len(rest))
    assert float(table["full-a"]["forgetting"]) == 0.25  # source tasks keep every item

    trade = json.loads((report / "tradeoff.json").read_text())
    sel = trade["selection"]
    assert sel["keys"] == ["train.lr"] and sel["metric"] == "learning" and "smallest swept values" in sel["rule"]
    sweep = {r["run"]: r for g in sel["groups"] for r in g["runs"]}
    assert {r: sweep[r]["metric"]["mean"] for r in sweep} == pytest.approx(
        {"full-a": 0.8, "full-b": 0.4, "lora-a": 0.4, "lora-b": 0.4})
    assert sel["items"]["target"]["t"] == {"held_out": sorted(split), "reported": 5}
    assert len(sel["items"]["eval"]["qa"]["held_out"]) == 5
    # the trade-off and the comparisons use the selected runs only
    assert sorted(p["run"] for c in trade["curves"] for p in c["points"]) == ["full-a", "lora-b"]
    items = json.loads((report / "comparisons.json").read_text())["items"]
    assert {(c["a"], c["b"]) for c in items if c["kind"] == "comparison"} == {("full-a", "lora-b")}

    md = (report / "table.md").read_text(encoding="utf-8")
    assert "## Sweep and selection" in md and "target tasks: 5 of 10 items held out (t 5/10)" in md
    assert "| full | full-a | 1e-05 | 0.800 ± 0.300 | **yes** |" in md
    assert "| lora r=8 | lora-a | 0.001 | 0.400 ± 0.400 |  |" in md


def test_val_loss_selects_the_lowest_and_is_the_references_mean_token_loss(tmp_path, tiny_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer

    from helpers.analysis import load_model, save_base
    from lorafull.analysis.choice import encode_pair
    from lorafull.analysis.selection import select_runs
    from lorafull.analysis.tasks import reference_losses
    from lorafull.config import SelectConfig
    from lorafull.data.template import format_prompt

    model = load_model(save_base(tmp_path / "base", tiny_tokenizer_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    items = [{"question": "What is 2 + 3?", "std_answer": "5"},
             {"question": "Name a colour.", "std_answer": "The sky is blue today."}]
    choices = [{"context": "The sky is", "options": [" green", " blue"], "answer": 1}]
    got = reference_losses(model, tok, items, "generation", "belle", batch_size=2)
    got += reference_losses(model, tok, choices, "choice", "belle")
    pairs = [(format_prompt(it["question"], tok, "belle"), it["std_answer"]) for it in items] + [("The sky is", " blue")]
    for (context, answer), loss in zip(pairs, got):
        ctx, cont = encode_pair(tok, context, answer)
        with torch.no_grad():  # transformers' own loss: the mean over the labelled (answer) tokens
            ref = model(input_ids=torch.tensor([ctx + cont]), labels=torch.tensor([[-100] * len(ctx) + cont])).loss
        assert loss == pytest.approx(float(ref), abs=1e-4)

    rows = [{"run": name, "method": "full", "_setting": {"method.kind": "full", "train.lr": lr}, "_seed": 1,
             "_samples": {"val_loss": {"t": {0: loss, 1: loss + 0.5}}}}
            for name, lr, loss in (("a", 1e-5, 2.0), ("b", 1e-4, 1.5), ("c", 1e-3, 1.7))]
    select_runs(rows, SelectConfig(keys=["train.lr"], metric="val_loss", holdout=0.0))
    assert [r["selected"] for r in rows] == ["no", "yes", "no"]


def test_the_select_section_is_checked_at_load_and_reaches_the_study_folder(tmp_path):
    from lorafull.config import ConfigError, load_study, load_study_settings, save_study_settings

    path = tmp_path / "s.yaml"
    body = {"study": {"name": "s", "output_dir": str(tmp_path / "out")},
            "base": {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": "tok"}},
            "grid": {"method.kind": ["full", "lora"], "train.lr": [1e-4, 1e-3]},
            "select": {"keys": ["train.lr"], "metric": "score", "holdout": 0.25, "seed": 5}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    save_study_settings(load_study(path))
    select = load_study_settings(tmp_path / "out").select
    assert (select.keys, select.metric, select.holdout, select.seed, select.group_by) == (["train.lr"], "score", 0.25, 5, None)
    for bad, message in (({"keys": ["train.lrr"]}, r"s\.yaml:\d+: select\.keys\[0\]: 'train\.lrr' names no run setting"),
                         ({"keys": ["train.lr"], "group_by": ["train.lr"]}, r"select\.group_by: train\.lr is swept"),
                         ({"metric": "loss"}, r"select\.metric"), ({"holdout": 1.0}, r"select\.holdout: must be >= 0 and < 1")):
        path.write_text(yaml.safe_dump({**body, "select": bad}, sort_keys=False))
        with pytest.raises(ConfigError, match=message):
            load_study(path)


def test_cooldown_branches_of_a_swept_trunk_group_together_and_trunks_are_no_trade_off_points():
    from lorafull.analysis.selection import select_runs
    from lorafull.analysis.tradeoff import curves_of
    from lorafull.config import SelectConfig

    def row(name, lr, learned, trunk=False):  # a branch names the trunk of its own learning rate
        setting = {"method.kind": "full", "train.lr": lr, "train.max_tokens": None if trunk else 1000,
                   "train.branch_of": None if trunk else f"t{lr}", "train.branch_max_tokens": "[1000]" if trunk else "[]"}
        return {"run": name, "method": "full", "_seed": 1, "_setting": setting,
                "_samples": {"learning": {"t": {0: learned, 1: learned}}, "forgetting": {"s": {0: 0.1, 1: 0.2}}}}

    rows = [row("b1", 1e-5, 0.2), row("b2", 1e-4, 0.3), row("t1", 1e-5, 0.1, trunk=True), row("t2", 1e-4, 0.1, trunk=True)]
    select_runs(rows, SelectConfig(keys=["train.lr"], holdout=0.0))
    assert [r["selected"] for r in rows] == ["no", "yes", "yes", "no"]  # branches one group, trunks another
    [curve] = curves_of([r for r in rows if r["_selected"]], ["train.lr"])
    assert [p["run"] for p in curve["points"]] == ["b2"] and curve["name"] == "full"
