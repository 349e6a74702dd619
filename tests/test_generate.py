"""Generation on a tiny model in a run folder built by hand (save_run_config + final/)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.common import REPO, write_jsonl
from helpers.eval_runs import eval_items, make_generation_run, responses_by_id
from lorafull.config import RunConfig, save_run_config
from lorafull.generate.stage import EvalSetError, generate_run, read_eval_set
from lorafull.runs import read_jsonl, read_status

def test_batched_greedy_equals_one_at_a_time(tmp_path, tiny_final):
    items = eval_items(10)
    batched = make_generation_run(tmp_path, tiny_final, items, "batched", batch_size=4)
    single = make_generation_run(tmp_path, tiny_final, items, "single", batch_size=1)
    stats = generate_run(batched, progress=False)
    generate_run(single, progress=False)
    a, b = responses_by_id(batched), responses_by_id(single)
    assert set(a) == {str(i) for i in range(10)} and stats["generated"] == 10
    assert {k: r["response"] for k, r in a.items()} == {k: r["response"] for k, r in b.items()}
    assert any(r["response"] for r in a.values())  # the tiny model does say something
    row = a["3"]
    assert row["question"] == items[3]["question"] and row["class"] == items[3]["class"]
    assert 1 <= row["tokens"] <= 12 and row["seconds"] > 0
    assert read_status(batched)["stages"]["generate"] == "done"
    assert generate_run(batched, progress=False)["generated"] == 0  # rerun: nothing left to do


def test_lora_adapter_and_merged_give_the_same_answers(tmp_path, tiny_final):
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = eval_items(6)
    answers = {}
    for merge in (True, False):
        run_dir = make_generation_run(tmp_path, tiny_final, items, f"lora_merge{merge}", merge_lora=merge)
        shutil.rmtree(run_dir / "final")  # final/ = a peft adapter whose base is tiny_final
        torch.manual_seed(0)  # init_lora_weights=False: A and B random, so the adapter changes the outputs
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_final), cfg).save_pretrained(run_dir / "final")
        AutoTokenizer.from_pretrained(tiny_final).save_pretrained(run_dir / "final")
        generate_run(run_dir, progress=False)
        answers[merge] = {k: r["response"] for k, r in responses_by_id(run_dir).items()}
    plain = make_generation_run(tmp_path, tiny_final, items, "plain")
    generate_run(plain, progress=False)
    assert answers[True] == answers[False]
    assert answers[True] != {k: r["response"] for k, r in responses_by_id(plain).items()}


@pytest.mark.slow
def test_killed_generation_continues_where_it_stopped(tmp_path, tiny_final):
    items = eval_items(40)
    run_dir = make_generation_run(tmp_path, tiny_final, items, "killed", batch_size=1, max_new_tokens=24)
    out = run_dir / "responses.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lorafull.generate", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (not out.exists() or out.read_bytes().count(b"\n") < 5) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = responses_by_id(run_dir)
    assert 5 <= len(before) < 40, "the kill did not land halfway"
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": 39, "class": "math", "resp')  # a line torn by the kill
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = responses_by_id(run_dir)
    assert set(after) == {str(i) for i in range(40)}
    assert all(after[k]["response"] == r["response"] for k, r in before.items())
    reference = make_generation_run(tmp_path, tiny_final, items, "clean", batch_size=8, max_new_tokens=24)
    generate_run(reference, progress=False)
    assert {k: r["response"] for k, r in after.items()} == {k: r["response"] for k, r in responses_by_id(reference).items()}


def test_eval_set_reading_and_errors(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"question": "q0", "class": "math", "std_answer": "1"},
                                                 {"question": "q1", "class": "code"},
                                                 {"id": "x9", "question": "q2", "class": "open qa", "std_answer": None}])
    items = read_eval_set(good)
    assert [it["id"] for it in items] == [0, 1, "x9"] and items[1]["std_answer"] == ""
    assert len(read_eval_set(good, num_items=2)) == 2
    array = tmp_path / "set.json"
    array.write_text(json.dumps([{"question": "a", "class": "math"}]))
    assert read_eval_set(array)[0]["id"] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "class": "math"}\n{"question": "q", "class": \n')
    with pytest.raises(EvalSetError, match=r"bad.jsonl:2: malformed"):
        read_eval_set(bad)
    bad.write_text('{"question": "q", "class": "math"}\n\n{"question": "q"}\n')
    with pytest.raises(EvalSetError, match=r"bad.jsonl:3: class"):
        read_eval_set(bad)
    bad.write_text('{"id": 1, "question": "q", "class": "math"}\n{"id": 1, "question": "q", "class": "math"}\n')
    with pytest.raises(EvalSetError, match=r"bad.jsonl:2: id"):
        read_eval_set(bad)


def test_cli_failure_is_one_line_and_marks_the_status(tmp_path, tiny_final):
    run_dir = make_generation_run(tmp_path, tiny_final, eval_items(2), "broken")
    (tmp_path / "eval_broken.jsonl").write_text('{"question": 1}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "lorafull.generate", str(run_dir), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "eval_broken.jsonl:1: question" in done.stderr
    status = read_status(run_dir)
    assert status["state"] == "failed" and status["stage"] == "generate"


def test_a_second_generator_on_a_run_waits_for_the_first(tmp_path, tiny_final, capfd):
    import threading

    from lorafull.runs import stage_lock

    items = eval_items(3)
    run_dir = make_generation_run(tmp_path, tiny_final, items, "locked")
    results = []
    with stage_lock(run_dir, "generate"):  # another generator of this run, still at work
        worker = threading.Thread(target=lambda: results.append(generate_run(run_dir, progress=False)))
        worker.start()
        time.sleep(1.0)
        assert not (run_dir / "responses.jsonl").exists() and not results  # waiting, writing nothing
    worker.join(timeout=300)
    assert results and results[0]["generated"] == 3
    assert "generate is already running here" in capfd.readouterr().err
    assert len(responses_by_id(run_dir)) == 3
