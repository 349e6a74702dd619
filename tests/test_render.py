"""launch.render: the sbatch scripts are a pure function of the study's settings (compared with the
stored files in tests/expected/render/), valid bash, and they run a chained study on a real Slurm.

    pytest tests/test_render.py
    # after an intended change of the scripts, regenerate the expected files:
    python -m launch.render tests/expected/render_study.yaml tests/expected/render --render-only
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.common import REPO
from helpers.grid import make_data, sacct_rows, status, study_dict, wait_for_jobs, need_slurm, write_study

from launch.render import fill, main as render_main, render_study
from lorafull.config import load_study

EXPECTED = REPO / "tests" / "expected"


def test_rendered_scripts_equal_the_stored_ones():
    files = render_study(load_study(EXPECTED / "render_study.yaml"))
    stored = {p.name: p.read_text() for p in (EXPECTED / "render").iterdir()}
    assert sorted(files) == sorted(stored)
    for name, text in files.items():
        assert text == stored[name], f"{name} differs from tests/expected/render/{name} (regenerate: see docstring)"


def test_render_is_a_pure_function_of_the_settings(tmp_path, monkeypatch):
    study_file = EXPECTED / "render_study.yaml"
    first = render_study(load_study(study_file))
    monkeypatch.chdir(tmp_path)  # another working directory, another process state
    assert render_study(load_study(study_file)) == first
    changed = render_study(load_study(study_file, ["slurm.timeout_min=60", "slurm.partition=other"]))
    assert changed["train_0.sbatch"] != first["train_0.sbatch"]
    assert "#SBATCH --time=0-01:00:00" in changed["train_0.sbatch"] and "--partition=other" in changed["train_0.sbatch"]
    assert render_main([str(study_file), str(tmp_path / "out"), "--render-only"]) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == first
    assert not Path("/studies/render-demo").exists()  # --render-only touched no study folder


def test_rendered_arrays_chain_and_map_indices_to_run_folders():
    files = render_study(load_study(EXPECTED / "render_study.yaml"))
    assert files["train_0.runs"].split() == ["/studies/render-demo/runs/ft_2m", "/studies/render-demo/runs/lora_2m"]
    assert "#SBATCH --array=0-1%2" in files["train_0.sbatch"] and "--ntasks-per-node=8" in files["train_0.sbatch"]
    assert "#SBATCH --gres=gpu:1" in files["train_1.sbatch"]  # train.nproc: 1 -> one process, one GPU
    submit = files["submit.sh"]
    assert 'train_2=$(submit --hold train_2.sbatch)' in submit
    assert 'scontrol update JobId="${train_2}_0" Dependency=afterok:"${train_0}_0"' in submit
    assert 'scontrol update JobId="${train_2}_1" Dependency=afterok:"${train_0}_1"' in submit
    assert 'eval_2=$(submit --dependency=aftercorr:"$train_2" eval_2.sbatch)' in submit
    assert "report=$(submit --dependency=afterany:$eval_0:$eval_1:$eval_2 report.sbatch)" in submit


def test_rendered_scripts_are_valid_bash(tmp_path):
    for name, text in render_study(load_study(EXPECTED / "render_study.yaml")).items():
        if name.endswith((".sh", ".sbatch")):
            path = tmp_path / name
            path.write_text(text)
            check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            assert check.returncode == 0, (name, check.stderr)


def test_fill_names_a_missing_placeholder_and_drops_empty_lines():
    assert fill("a\n{{setup}}\nb {{x}}\n", {"setup": "", "x": 1}) == "a\nb 1\n"
    with pytest.raises(KeyError, match="nope"):
        fill("{{nope}}", {})


@pytest.mark.slurm
@pytest.mark.slow
def test_rendered_scripts_run_a_chained_study_on_slurm(tmp_path, tiny_tokenizer_dir):
    need_slurm()
    files = make_data(tmp_path, tiny_tokenizer_dir)
    runs = [{"name": "parent"}, {"name": "child", "model.name_or_path": "run:parent", "method.kind": "full"}]
    cfg = write_study(tmp_path / "r.yaml", study_dict(
        tmp_path, files, name="rendered", runs=runs,
        slurm={"python": sys.executable}))
    out_dir = tmp_path / "scripts"
    assert render_main([str(cfg), str(out_dir)]) == 0
    study_dir = tmp_path / "rendered"
    assert (study_dir / "study.yaml").exists() and (study_dir / "runs" / "child" / "config.yaml").exists()
    # the jobs run in the submit folder: the package must import from anywhere (pip install -e . does it)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    submitted = subprocess.run(["bash", str(out_dir / "submit.sh")], capture_output=True, text=True, cwd=tmp_path,
                               env=env)
    assert submitted.returncode == 0, submitted.stderr
    ids = submitted.stdout.split("training ")[1]
    train = ids.split(";")[0].split()
    evals = ids.split("evaluation ")[1].split(";")[0].split()
    report = ids.split("report ")[1].split()[0]
    wait_for_jobs(train + evals + [report], timeout_s=600)
    rows = sacct_rows([f"{train[0]}_0", f"{train[1]}_0", f"{evals[1]}_0", report])
    logs = "\n".join(p.read_text() for p in (study_dir / "launch" / "logs").glob("*"))
    detail = json.dumps(rows, indent=1) + logs[-4000:]
    assert all(r["state"] == "COMPLETED" for r in rows.values()), detail
    assert rows[f"{train[1]}_0"]["start"] >= rows[f"{train[0]}_0"]["end"], detail  # child after parent
    assert rows[report]["start"] >= rows[f"{evals[1]}_0"]["end"], detail
    for name in ("parent", "child"):
        assert status(study_dir / "runs" / name)["state"] == "done", detail
    assert (study_dir / "report" / "table.md").exists()
