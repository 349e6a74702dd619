"""Names that reach shell scripts and paths: a run folder never lies outside its study, names are
quoted or kept to comments, and a study whose legal names hold dots, dashes and underscores submits
exactly the intended jobs on a real Slurm."""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers.grid import make_data, study_dict, write_study
from launch.render import main as render_main, render_study
from lorafull.config import ConfigError, load_study
from lorafull.runs import path_inside


@pytest.mark.parametrize("name", ["../../x", "..", "/abs/path", "a/../../b", "x\ny"])
def test_a_run_folder_outside_the_study_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="would lie outside"):
        path_inside(tmp_path / "runs", name, "runs: name")


@pytest.mark.parametrize("name", ["ok.v1-2_b", "...", "a..b"])
def test_odd_but_legal_names_stay_inside(tmp_path, name):
    assert path_inside(tmp_path / "runs", name, "runs: name") == tmp_path / "runs" / name


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs-run"])
def test_render_refuses_a_run_that_would_write_outside(tmp_path, tiny_tokenizer_dir, name):
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, name="s", runs=[{"name": name}]))
    with pytest.raises(ConfigError):  # at load (name rules) or, at the latest, when rendering
        render_study(load_study(cfg))
    assert render_main([str(cfg), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/abs-run/config.yaml")


def _job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    return dict(field.split("=", 1) for field in first.split() if "=" in field)


@pytest.mark.slurm
def test_odd_legal_names_submit_exactly_the_intended_jobs(tmp_path, tiny_tokenizer_dir):
    files = make_data(tmp_path, tiny_tokenizer_dir)
    names = ["lr-1e.4_a", "v1.2-rc_3", "...x", "a..b"]
    cfg = write_study(tmp_path / "odd.yaml", study_dict(tmp_path, files, name="st.u-dy_1",
                                                        runs=[{"name": n} for n in names]))
    out = tmp_path / "scripts"
    assert render_main([str(cfg), str(out)]) == 0
    # held (SBATCH_HOLD): we read what was submitted, nothing runs, then we cancel
    env = {**os.environ, "SBATCH_HOLD": "1"}
    result = subprocess.run(["bash", str(out / "submit.sh")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split("training ")[1]
    train, evals = ids.split(";")[0].split(), ids.split("evaluation ")[1].split(";")[0].split()
    report = ids.split("report ")[1].split()[0]
    try:
        jobs = {j: _job(j) for j in train + evals + [report]}
        assert result.stdout.startswith("study st.u-dy_1: training ")
        assert [jobs[j]["JobName"] for j in train] == ["lf-st.u-dy_1-train-0"]
        assert [jobs[j]["JobName"] for j in evals] == ["lf-st.u-dy_1-eval-0"]
        assert jobs[report]["JobName"] == "lf-st.u-dy_1-report"
        assert jobs[train[0]]["ArrayTaskId"].startswith("0-3")  # one task per run, no more
        assert f"aftercorr:{train[0]}" in jobs[evals[0]]["Dependency"]
        assert f"afterany:{evals[0]}" in jobs[report]["Dependency"]
        manifest = (out / "train_0.runs").read_text().splitlines()
        assert manifest == [str(tmp_path / "st.u-dy_1" / "runs" / n) for n in names]
        assert all((tmp_path / "st.u-dy_1" / "runs" / n / "config.yaml").exists() for n in names)
    finally:
        subprocess.run(["scancel", *train, *evals, report], check=False)


@pytest.mark.slurm
def test_a_hostile_study_name_that_got_past_loading_runs_nothing(tmp_path, tiny_tokenizer_dir):
    """Defence in depth behind the name rules at load: the name is set after loading, as a bug or a
    hand-edited study.yaml might, and the rendered submit.sh still only submits."""
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "h.yaml", study_dict(tmp_path, files, name="h", runs=[{"name": "r"}]))
    study = load_study(cfg)
    study.study.name = 'x"; touch PWNED1; "$(touch PWNED2)`touch PWNED3`\ntouch PWNED4 #'
    out = tmp_path / "scripts"
    out.mkdir()
    for name, text in render_study(study).items():
        (out / name).write_text(text)
    result = subprocess.run(["bash", str(out / "submit.sh")], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SBATCH_HOLD": "1"})
    ids = result.stdout.split("training ")[1] if "training " in result.stdout else ""
    job_ids = [j for j in ids.replace(";", " ").split() if j.isdigit()]
    subprocess.run(["scancel", *job_ids], check=False)
    assert result.returncode == 0, result.stderr
    assert len(job_ids) == 3  # training, evaluation, report: nothing else
    assert not any(p.name.startswith("PWNED") for d in (tmp_path, out) for p in d.iterdir())
