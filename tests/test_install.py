"""An ordinary (non-editable) install works without the repository: `pip install .` of a copy into a
fresh venv, then, from a folder outside it, the shipped demo config is found under
SYS_PREFIX/share/lorafull/configs, its sbatch scripts render from the packaged templates, and
launch.grid dry-runs it.

    pytest tests/test_install.py
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

from helpers.common import REPO

SKIP = shutil.ignore_patterns(".git", ".venv", "studies", "__pycache__", ".pytest_cache", "*.egg-info", "build",
                              "tests", "bench")


def _venv(tmp_path):
    """A fresh venv whose own site-packages comes first; the heavy dependencies (torch, transformers...)
    and pip and setuptools are reached through a .pth naming this interpreter's site-packages, so
    nothing is downloaded (without pip: ensurepip's own older setuptools would shadow them)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
    # a .pth only adds the folders: their own .pth files (an editable install of this repository) stay off
    (tmp_path / "venv" / purelib.split(str(venv) + os.sep, 1)[1] / "deps.pth").write_text("\n".join(ours) + "\n")
    return venv, python


@pytest.mark.slow
def test_a_plain_install_renders_the_demo_scripts_and_dry_runs_it(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    venv, python = _venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "-q", str(src)], capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import sys, lorafull, launch, slurm_templates; "
                            "print(sys.prefix); print(lorafull.__file__); print(slurm_templates.TEMPLATES)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True).stdout.split("\n")
    prefix, module, templates = where[:3]
    assert module.startswith(str(venv)) and templates.startswith(str(venv)), where  # the installed copy
    config = f"{prefix}/share/lorafull/configs/demo.yaml"
    rendered = subprocess.run([str(python), "-m", "launch.render", config, "scripts", "--render-only",
                               f"study.output_dir={work / 'studies' / 'demo'}"],
                              capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    names = sorted(p.name for p in (work / "scripts").iterdir())
    assert {"train_0.sbatch", "eval_0.sbatch", "report.sbatch", "submit.sh"} <= set(names), names
    assert "python -m lorafull.train" in (work / "scripts" / "train_0.sbatch").read_text()
    dry = subprocess.run([str(python), "-m", "launch.grid", config, "--dry-run", "--executor", "local"],
                         capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert dry.returncode == 0 and "nothing submitted" in dry.stdout, dry.stdout + dry.stderr
    assert (work / "studies" / "demo" / "data" / "manifest.json").exists()  # relative to the folder run from
