"""The served judge (eval.judge.serve) without Slurm: its proxy over real HTTP, the 0600 address file,
settings refused with one line, identity by content, the eval side's bounded wait, and (slow) a local
study whose evaluations judge through a real `transformers serve` of SmolLM2-135M-Instruct.

    pytest tests/test_judge_serve.py
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import openai
import pytest

from helpers.grid import grid, make_data, write_study
from helpers.judge_serve import TokenWatcher, files_holding, read_state, served_study, server_dirs
from helpers.openai_server import FakeJudgeServer
from lorafull.config import ConfigError, JudgeConfig, ServeConfig, load_study, served_identity, served_label, server_key
from lorafull.judge.serve.files import ServerPaths, write_private_json, write_state
from lorafull.judge.serve.proxy import JudgeProxy

TOKEN = "t0ken-" + "x" * 30


@pytest.fixture()
def proxied():
    """The proxy in front of the test's OpenAI-compatible server (standing in for an engine)."""
    with FakeJudgeServer() as upstream:
        proxy = JudgeProxy(TOKEN, f"http://127.0.0.1:{upstream.port}", "engine-model-path", "served:judge@abc",
                           engine_token="engine-only-secret", log=lambda line: None, host="127.0.0.1").start()
        try:
            yield proxy, upstream
        finally:
            proxy.stop()


def _client(proxy: JudgeProxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{proxy.port}/v1", api_key=key, max_retries=0, timeout=30)


def test_proxy_forwards_only_with_the_token_and_names_the_judge(proxied):
    proxy, upstream = proxied
    reply = _client(proxy, TOKEN).chat.completions.create(model="anything", max_tokens=4,
                                                          messages=[{"role": "user", "content": "ITEM-p1 rate"}])
    assert reply.model == "served:judge@abc"  # the engine's path never reaches the judge
    assert reply.choices[0].message.content
    # the engine got its own token and its own model name, never the study's token
    assert upstream.stats.as_dict()["auth_headers"] == ["Bearer engine-only-secret"]
    with pytest.raises(openai.AuthenticationError):
        _client(proxy, "wrong-token").chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert proxy.activity.snapshot()["requests"] == 1 and proxy.activity.snapshot()["refused"] == 1
    assert upstream.stats.as_dict()["hits"] == {"ITEM-p1": 1}


def test_proxy_lets_through_nothing_but_the_judge_s_paths(proxied):
    import urllib.error
    import urllib.request

    proxy, _ = proxied
    root = f"http://127.0.0.1:{proxy.port}"
    for path in ("/load_model", "/reset", "/v1/completions", "/tokenize"):
        req = urllib.request.Request(root + path, data=b"{}", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 404, path
    assert urllib.request.urlopen(root + "/health", timeout=10).status == 200
    assert [m.id for m in _client(proxy, TOKEN).models.list()] == ["served:judge@abc"]


def test_address_file_is_private_from_its_first_byte(tmp_path):
    path = tmp_path / "address.json"
    path.write_text("{}")
    os.chmod(path, 0o644)  # an older, world-readable file of that name
    old_umask = os.umask(0)
    try:
        write_private_json(path, {"token": TOKEN})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == TOKEN
    paths = ServerPaths(tmp_path)
    write_state(paths, "serving", note=f"echoed {TOKEN}")  # a state never carries a registered secret
    from lorafull.runs import register_secret

    register_secret(TOKEN)
    write_state(paths, "serving", note=f"echoed {TOKEN}")
    assert TOKEN not in paths.state.read_text()


@pytest.mark.parametrize("judge, key, words", [
    ({"mode": "batch"}, "eval.judge.mode", "set eval.judge.mode: online"),
    ({"base_url": "http://h:1/v1"}, "eval.judge.base_url", "leave it null"),
    ({"kind": "reference"}, "eval.judge.serve", "must be openai"),
    ({"serve": {"model": None}}, "eval.judge.serve.model", "the judge model to serve"),
    ({"serve": {"model": "/m", "gpus": 2, "tensor_parallel": 4}}, "eval.judge.serve.tensor_parallel", "exceeds"),
])
def test_settings_a_served_judge_cannot_use_are_refused_in_one_line(tmp_path, judge, key, words):
    block = {"kind": "openai", "serve": {"model": "/models/judge", "engine": "vllm"}}
    block.update({k: v for k, v in judge.items() if k != "serve"})
    block["serve"].update(judge.get("serve", {}))
    (tmp_path / "s.yaml").write_text(json.dumps({"study": {"name": "s", "output_dir": str(tmp_path / "out")},
                                                 "base": {"model": {"tokenizer": str(tmp_path)},
                                                          "eval": {"judge": block}}}))
    with pytest.raises(ConfigError) as e:
        load_study(tmp_path / "s.yaml")
    message = str(e.value)
    assert "\n" not in message and key in message and words in message, message


def test_a_served_judge_is_named_by_its_content_engine_and_version(tmp_path):
    folder = tmp_path / "judge-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    (folder / "tokenizer.json").write_text("{}")
    serve = ServeConfig(model=str(folder), engine="transformers")
    first = served_identity(serve)
    label = served_label(first)
    assert first["model"].startswith("folder-sha256:") and first["engine_version"] not in ("", "not-installed")
    assert label.startswith("served:judge-model@") and label.endswith(f"/transformers-{first['engine_version']}")
    moved = tmp_path / "elsewhere"
    folder.rename(moved)  # a path is no part of the identity...
    assert served_identity(ServeConfig(model=str(moved), engine="transformers"))["model"] == first["model"]
    (moved / "tokenizer.json").write_text('{"changed": 1}')  # ...the tokenizer's content is
    assert served_identity(ServeConfig(model=str(moved), engine="transformers"))["model"] != first["model"]
    assert served_identity(ServeConfig(model=str(moved), engine="vllm")) != served_identity(
        ServeConfig(model=str(moved), engine="transformers"))
    assert server_key(serve) != server_key(ServeConfig(model=str(folder), engine="transformers", gpus=2))


def test_changing_the_served_model_changes_the_cache_key_and_the_eval_fingerprint(make_run, tmp_path):
    from lorafull.config import eval_fingerprint, load_run_config
    from lorafull.judge.request import request_key

    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"A")
    run_dir = make_run("r", **{"eval.judge": JudgeConfig(serve=ServeConfig(model=str(folder), engine="transformers"))})
    run = load_run_config(run_dir)
    before = eval_fingerprint(run)
    assert before["settings"]["judge"]["model"]["engine"] == "transformers"
    name_a = served_label(served_identity(run.eval.judge.serve))
    (folder / "model.safetensors").write_bytes(b"B")
    after = eval_fingerprint(run)
    assert after["judge"] != before["judge"] and after["generation"] == before["generation"]
    name_b = served_label(served_identity(run.eval.judge.serve))
    messages = [{"role": "user", "content": "q"}]
    assert request_key(JudgeConfig(model=name_a), messages, 0, 0) != request_key(JudgeConfig(model=name_b), messages, 0, 0)


def test_an_eval_job_waits_within_its_bound_and_stops_at_once_on_a_failed_server(tmp_path):
    from lorafull.judge.serve.client import wait_for_server

    cfg = JudgeConfig(serve=ServeConfig(model=str(tmp_path), engine="transformers", wait_s=1.5))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        wait_for_server(tmp_path, cfg, None, log=lambda line: None)
    assert "eval.judge.serve.wait_s=1.5" in str(e.value) and time.monotonic() - t0 < 10
    paths = ServerPaths.of(tmp_path, server_key(cfg.serve))
    cfg.serve.wait_s = 600

    def fail_soon():
        time.sleep(1.0)
        write_state(paths, "failed", error="the transformers engine was killed by SIGKILL")

    threading.Thread(target=fail_soon).start()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        wait_for_server(tmp_path, cfg, None, log=lambda line: None)
    assert "killed by SIGKILL" in str(e.value) and "--retry" in str(e.value) and time.monotonic() - t0 < 30
    # an earlier server job's failure, while a new server job is queued: wait for the new one
    write_state(paths, "failed", job="998")
    paths.job.write_text(json.dumps({"job": "999"}))
    cfg.serve.wait_s = 1.5
    with pytest.raises(RuntimeError) as e:
        wait_for_server(tmp_path, cfg, None, log=lambda line: None)
    assert "wait_s=1.5" in str(e.value) and "server job 999" in str(e.value)


@pytest.mark.slow
def test_local_study_judges_through_a_served_smollm2_and_stops_it(tmp_path, tiny_tokenizer_dir, smollm2_dir,
                                                                    monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a served judge needs no API key
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "served.yaml", served_study(tmp_path, files, smollm2_dir, "served", eval_items=2))
    study_dir = tmp_path / "served"
    with TokenWatcher(study_dir) as watcher:
        out = grid(cfg, "--executor", "local", timeout_s=1500)
    assert "1/1 run(s) finished" in out.stdout, out.stdout + out.stderr
    (server,) = server_dirs(study_dir)
    state = read_state(server)
    name = json.loads((server / "serve.json").read_text())["name"]
    assert state["state"] == "stopped" and state["requests"] == 2, state  # one request per item, no more
    assert not (server / "address.json").exists()
    for pid in (state["pid"], state["engine_pid"]):  # nothing left running
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    (run_dir,) = (study_dir / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r["judge"] for r in rows} == {name}, rows
    assert name == served_label(served_identity(ServeConfig(model=str(smollm2_dir), engine="transformers")))
    import csv

    (table_row,) = csv.DictReader((study_dir / "report" / "table.csv").open())
    assert table_row["judge"] == name  # the report names the judge of its scores
    fingerprint = json.loads((run_dir / "eval_fingerprint.json").read_text())
    assert fingerprint["settings"]["judge"]["model"]["model"].startswith("folder-sha256:")
    assert watcher.tokens and watcher.modes == {0o600}
    assert files_holding(study_dir, watcher.tokens) == []  # the token lived in address.json only
    assert not any(t in out.stdout + out.stderr for t in watcher.tokens)


def test_the_plan_counts_the_judge_server_s_gpu_hours(tmp_path):
    """The roofline of lorafull.plan.judge, worked by hand for a small case, and its parameter count
    checked against transformers' own count of the same architectures."""
    from lorafull.config import MethodConfig
    from lorafull.models.load import count_params_meta
    from lorafull.models.tiny import arch_config
    from lorafull.plan.judge import ENGINE_START_S, decoder_params, judge_lines, judge_servers

    for arch in ("smollm2-135m", "llama-3-70b", "llama-7b"):
        assert decoder_params(arch_config(arch)) == count_params_meta(arch, MethodConfig(kind="full"))["total"], arch
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"class": "math", "prompt": "x" * 40}) + "\n")
    eval_set = tmp_path / "eval.jsonl"  # question + std_answer = 20 characters each
    eval_set.write_text("".join(json.dumps({"question": "q" * 18, "class": "math", "std_answer": "42"}) + "\n"
                                for _ in range(5)))
    judge = {"kind": "openai", "prompts": str(prompts), "max_tokens": 8, "concurrency": 4,
             "serve": {"model": "/not/here", "arch": "smollm2-135m", "engine": "vllm", "gpus": 2}}
    (tmp_path / "s.yaml").write_text(json.dumps({
        "study": {"name": "s", "output_dir": str(tmp_path / "out")},
        "base": {"model": {"tokenizer": str(tmp_path)}, "eval": {"eval_set": str(eval_set), "max_new_tokens": 10,
                                                                  "judge": judge}},
        "runs": [{"name": "a"}, {"name": "b"}], "plan": {"mfu": 0.4, "hardware": {"preset": "A100-40GB-SXM"}}}))
    (row,) = judge_servers(load_study(tmp_path / "s.yaml"))
    p = 134_515_008
    assert row["requests"] == 10 and row["prompt_tokens"] == 10 * ((20 + 40) / 4 + 10)
    assert row["load_s"] == pytest.approx(2 * p / (2.0 * 1e9) + ENGINE_START_S)  # the A100 preset's load_gbs
    assert row["prefill_s"] == pytest.approx(2 * p * 250 / (2 * 312e12 * 0.4))
    assert row["decode_s"] == pytest.approx((10 * 8 / 4) * 2 * p / (2 * 1555e9))
    assert row["gpu_hours"] == pytest.approx(2 * (row["load_s"] + row["prefill_s"] + row["decode_s"]) / 3600)
    assert "GPU-hours = 2 x (" in judge_lines([row])[0]


def test_rendered_scripts_start_a_judge_server_with_the_first_evaluation(tmp_path):
    from launch.render import render_study

    serve = {"model": "/models/judge", "engine": "vllm", "gpus": 4, "idle_timeout_s": 300}
    (tmp_path / "s.yaml").write_text(json.dumps({
        "study": {"name": "s", "output_dir": str(tmp_path / "out")},
        "base": {"model": {"tokenizer": str(tmp_path)}, "eval": {"judge": {"kind": "openai", "serve": serve}}},
        "runs": [{"name": "a"}, {"name": "b"}], "slurm": {"partition": "gpu"}}))
    files = render_study(load_study(tmp_path / "s.yaml"))
    key = server_key(ServeConfig(**serve))
    script = files[f"judge_server_{key}.sbatch"]
    assert "#SBATCH --gres=gpu:4" in script and "lorafull.judge.serve" in script and "--idle-exit-s 300" in script
    assert f'--dependency=after:"${{eval_0}}_0" judge_server_{key}.sbatch' in files["submit.sh"]
