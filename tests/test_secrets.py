"""No secret in any file: a judge endpoint that echoes the key in its errors, and the environment's
KEY / TOKEN / SECRET / PASSWORD values, leave no trace in the study folder or on stderr."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer
from lorafull.runs import error_detail, error_line, read_status, redact, status as run_status


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("env_name, secret", [
    ("OPENAI_API_KEY", "sk-proj-" + uuid.uuid4().hex),  # a key-shaped value under a KEY name
    ("LORAFULL_JUDGE_CRED", "cred-" + uuid.uuid4().hex),  # any shape, under any name: api_key_env says which
], ids=["openai-key", "other-name"])  # fixed ids: every test worker must collect the same names
def test_a_401_that_echoes_the_key_leaves_no_trace(tmp_path, env_name, secret):
    with FakeJudgeServer() as server:
        responses = [{"id": i, "class": "open qa", "question": "q", "response": f"ITEM-{i} FAULTS=401echo"}
                     for i in range(3)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, api_key_env=env_name)
        result = judge_cli(run_dir, {env_name: secret})
        assert server.stats.as_dict()["auth_headers"] == [f"Bearer {secret}"]  # the server did get it
    assert result.returncode == 1 and "Incorrect API key provided: ***" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert read_status(run_dir)["state"] == "failed" and "***" in read_status(run_dir)["error"]
    assert files_holding(tmp_path, secret) == []


def test_an_item_error_that_echoes_the_key_is_recorded_redacted(tmp_path):
    secret = "cred-" + uuid.uuid4().hex
    with FakeJudgeServer() as server:
        responses = [{"id": 0, "class": "open qa", "question": "q", "response": "ITEM-0 FAULTS=400echo"},
                     {"id": 1, "class": "open qa", "question": "q", "response": "ITEM-1"}]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, api_key_env="LORAFULL_JUDGE_CRED")
        result = judge_cli(run_dir, {"LORAFULL_JUDGE_CRED": secret})
    assert result.returncode == 0, result.stderr
    rows = scores_by_id(run_dir)
    assert rows["0"]["score"] is None and "Incorrect API key provided: ***" in rows["0"]["error"]
    assert rows["1"]["score"] is not None
    assert files_holding(tmp_path, secret) == []


def test_environment_secrets_are_redacted_from_error_lines_and_status(tmp_path, monkeypatch):
    token, password, harmless = "hf_" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex, "plain-" + uuid.uuid4().hex
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("db_password", password)  # any case
    monkeypatch.setenv("LORAFULL_NOTE", harmless)  # not a secret's name: kept
    try:
        raise RuntimeError(f"login failed with {token} / {password} ({harmless})")
    except RuntimeError as e:
        line, detail = error_line(e), error_detail(e)
    for text in (line, detail):
        assert token not in text and password not in text and harmless in text and "***" in text
    (tmp_path / "config.yaml").write_text("{}")
    run_status.failed(tmp_path, "train", error=f"boom {token}", note={"why": [password]})
    assert files_holding(tmp_path, token) == [] and files_holding(tmp_path, password) == []
    assert redact("no secret here") == "no secret here"
