"""Learning and forgetting on tiny target and source task files: choice scoring against an
unbatched hand computation, learning/forgetting against the per-task numbers, the base model
evaluated once per study (cached), intermediate checkpoints, and bad task files named by line."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.common import write_jsonl
from helpers.analysis import arithmetic_items, load_model, make_study, save_base, save_final, train_briefly, word_items

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def task_files(tmp_path):
    return {"add": write_jsonl(tmp_path / "tasks" / "add.jsonl", arithmetic_items(12, 0)),
            "add_hard": write_jsonl(tmp_path / "tasks" / "add_hard.jsonl", arithmetic_items(8, 1)),
            "words": write_jsonl(tmp_path / "tasks" / "words.jsonl", word_items(10, 2))}


def hand_loglik(model, tok, context: str, option: str) -> float:
    """One (context, option) pair, unbatched and unpadded: tokenized together, split at the context's tokens
    (lm-evaluation-harness's rule; tests/test_choice_harness.py compares with the harness itself)."""
    n = len(context) - len(context.rstrip())
    context, option = (context[:-n], context[-n:] + option) if n else (context, option)
    ctx = tok(context)["input_ids"]
    opt = tok(context + option)["input_ids"][len(ctx):]
    ids = torch.tensor([ctx + opt])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(opt))


def test_choice_scores_equal_an_unbatched_hand_computation(tmp_path, tiny_tokenizer_dir, task_files):
    from transformers import AutoTokenizer

    from lorafull.analysis.tasks import load_task, score_choice
    from lorafull.config import TaskSpec

    model = load_model(save_base(tmp_path / "base", tiny_tokenizer_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    items = load_task(TaskSpec(name="words", path=str(task_files["words"])))
    got = score_choice(model, tok, items, batch_size=4)  # 30 options of 3 lengths across padded batches
    correct = correct_norm = 0
    for it, res in zip(items, got["items"]):
        ll = [hand_loglik(model, tok, it["context"], o) for o in it["options"]]
        assert res["loglik"] == pytest.approx(ll, abs=1e-4)
        correct += max(range(3), key=ll.__getitem__) == it["answer"]
        chars = [len(o) - o.startswith(" ") for o in it["options"]]  # not the joining space
        correct_norm += max(range(3), key=lambda k: ll[k] / chars[k]) == it["answer"]
    assert got["acc"] == correct / len(items) and got["acc_norm"] == correct_norm / len(items)
    assert got["n"] == 10


def test_learning_and_forgetting_equal_the_per_task_numbers(tmp_path, tiny_tokenizer_dir, task_files):
    from lorafull.analysis import run_analyses

    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    analysis = {"target_tasks": [{"name": "add", "path": str(task_files["add"])},
                                 {"name": "add_hard", "path": str(task_files["add_hard"]), "metric": "acc_norm"}],
                "source_tasks": [{"name": "words", "path": str(task_files["words"])}],
                "checkpoints": True}
    study, dirs = make_study(tmp_path, base, [{"name": "tuned", "method.kind": "full"},
                                              {"name": "other", "method.kind": "full"}], analysis)
    # "tuned" learns the target format (arithmetic answers) for a few steps; its checkpoint is halfway
    texts = [f"{it['context']}{it['options'][it['answer']]}" for it in arithmetic_items(64, 5)]
    model = train_briefly(load_model(base), tiny_tokenizer_dir, steps=10, lr=2e-3, texts=texts)
    save_final(model, dirs["tuned"] / "checkpoints" / "step_000010", tiny_tokenizer_dir)  # .../final
    model = train_briefly(model, tiny_tokenizer_dir, steps=20, lr=2e-3, texts=texts)
    save_final(model, dirs["tuned"], tiny_tokenizer_dir)

    assert run_analyses(dirs["tuned"]) == dirs["tuned"] / "analysis"
    res = json.loads((dirs["tuned"] / "analysis" / "tasks.json").read_text())
    run, base_res = res["tasks"], res["base"]
    assert set(run) == set(base_res) == {"add", "add_hard", "words"}
    assert run["add_hard"]["score"] == run["add_hard"]["acc_norm"] and run["add"]["score"] == run["add"]["acc"]
    learning = ((run["add"]["score"] - base_res["add"]["score"])
                + (run["add_hard"]["score"] - base_res["add_hard"]["score"])) / 2
    forgetting = base_res["words"]["score"] - run["words"]["score"]
    assert res["learning"] == pytest.approx(learning, abs=1e-12)
    assert res["forgetting"] == pytest.approx(forgetting, abs=1e-12)
    assert res["target_mean"] == pytest.approx((run["add"]["score"] + run["add_hard"]["score"]) / 2)
    assert [c["step"] for c in res["checkpoints"]] == [10]
    ck = res["checkpoints"][0]
    assert ck["forgetting"] == pytest.approx(base_res["words"]["score"] - ck["tasks"]["words"]["score"])
    assert (dirs["tuned"] / "analysis" / "items" / "add.jsonl").exists()
    assert json.loads((dirs["tuned"] / "analysis" / "instability.json").read_text())["summary"]["events"] == 0

    # the base is evaluated once per study: a second run reads the cached file (proved by a marker)
    caches = list((study.output_dir / "analysis").glob("base_*.json"))
    assert len(caches) == 1
    cached = json.loads(caches[0].read_text())
    assert cached["tasks"]["words"]["score"] == base_res["words"]["score"]
    cached["tasks"]["words"]["score"] = 0.123
    caches[0].write_text(json.dumps(cached))
    save_final(load_model(base), dirs["other"], tiny_tokenizer_dir)  # unchanged weights
    run_analyses(dirs["other"])
    other = json.loads((dirs["other"] / "analysis" / "tasks.json").read_text())
    assert other["base"]["words"]["score"] == 0.123
    assert list((study.output_dir / "analysis").glob("base_*.json")) == caches
    assert other["learning"] == pytest.approx(0.0, abs=1e-12)  # same weights as the base: nothing learned


def test_bad_task_file_names_the_line(tmp_path, tiny_tokenizer_dir):
    from lorafull.analysis.tasks import TaskError, load_task
    from lorafull.config import TaskSpec

    path = write_jsonl(tmp_path / "bad.jsonl", arithmetic_items(2, 0) + [{"context": "x", "options": [" a"]}])
    with pytest.raises(TaskError, match=r"bad\.jsonl:3: answer"):
        load_task(TaskSpec(name="bad", path=str(path)))
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(TaskError, match=r"bad\.jsonl:2: answer|bad\.jsonl:3"):
        load_task(TaskSpec(name="bad", path=str(path)))
    # a generation task without a scorer: refused when the study loads (the schema), before any task runs
    from lorafull.config import AnalysisConfig

    problems = AnalysisConfig(source_tasks=[TaskSpec(name="gen", path=str(path), kind="generation")]).problems()
    assert problems == [("analysis.source_tasks[0].scorer", "a generation task needs a scorer: math, code or text")]


def test_cli_runs_what_the_study_asks(tmp_path, tiny_tokenizer_dir, task_files):
    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    _, dirs = make_study(tmp_path, base, [{"name": "lora", "method.kind": "lora"}],
                         {"source_tasks": [{"name": "words", "path": str(task_files["words"]), "num_items": 4}],
                          "spectrum": True})
    from helpers.analysis import random_lora

    random_lora(base, dirs["lora"], tiny_tokenizer_dir)
    done = subprocess.run([sys.executable, "-m", "lorafull.analysis", "tasks", str(dirs["lora"])], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((dirs["lora"] / "analysis" / "tasks.json").read_text())
    assert res["tasks"]["words"]["n"] == 4 and res["learning"] is None  # no target task: nothing to learn
    assert res["forgetting"] == pytest.approx(res["base"]["words"]["score"] - res["tasks"]["words"]["score"])
    assert json.loads((dirs["lora"] / "analysis" / "spectrum.json").read_text())["kind"] == "lora"


def test_generation_task_uses_the_training_layout_and_the_offline_scorer(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from lorafull.analysis.tasks import evaluate_tasks
    from lorafull.config import TaskSpec
    from lorafull.data.dataset import encode_prompt
    from lorafull.judge.scorers import score

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    qa = [("What is 3 plus 4?", "7"), ("What is 2 plus 6?", "8"), ("What is 5 plus 4?", "9"), ("What is 1 plus 1?", "2")]
    path = write_jsonl(tmp_path / "math.jsonl", [{"question": q, "class": "math", "std_answer": a} for q, a in qa])
    # the model memorises the answers in the training layout (prompt and answer tokenised apart, then
    # EOS); generation must rebuild exactly that prompt to get them back
    ids = [encode_prompt(q, tok, "belle") + tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
           for q, a in qa]
    model = train_briefly(load_model(save_base(tmp_path / "base", tiny_tokenizer_dir)), tiny_tokenizer_dir,
                          steps=60, lr=3e-3, token_ids=ids)
    spec = TaskSpec(name="math", path=str(path), kind="generation", scorer="math")
    res = evaluate_tasks(model, tok, [spec], "belle", default_max_new_tokens=6, items_dir=tmp_path / "items",
                         progress=False)["math"]
    items = [json.loads(l) for l in (tmp_path / "items" / "math.jsonl").read_text().splitlines()]
    assert [it["score"] for it in items] == [score("math", it["response"], a) for it, (_, a) in zip(items, qa)]
    assert res["score"] == pytest.approx(sum(it["score"] for it in items) / 4) and res["n_scored"] == 4
    assert [it["response"] for it in items] == [a for _, a in qa]  # the memorised answers, EOS cut off
    assert res["score"] == 1.0
    assert res["kind"] == "generation" and res["metric"] == "math"
