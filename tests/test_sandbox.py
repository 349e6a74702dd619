"""The code sandbox as an attacker probes it: each escape runs under bwrap and under unshare (bwrap
hidden from PATH), and must be contained; with neither tool, code scoring refuses."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from helpers.sandbox import path_with_only, still_alive_after
from lorafull.judge.sandbox import OUTPUT_CAP, SandboxUnavailable, run_code

SECRET = "sk-canary-" + uuid.uuid4().hex


def test_answers_still_pass_and_fail_on_their_tests(sandbox_backend):
    from lorafull.judge.scorers import score

    answer = "```python\ndef square(x):\n    return x * x\n```"
    assert score("code", answer, "assert square(3) == 9") == 1.0
    assert score("code", answer, "assert square(3) == 10") == 0.0
    inside = run_code("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())")
    assert inside.passed and inside.stdout.strip() == "ok"  # its own folder is writable


def test_no_environment_of_any_other_process(sandbox_backend, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code = """
import os
print(dict(os.environ))
for pid in ['self', str(os.getppid()), '1'] + [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        print(pid, open(f'/proc/{pid}/environ', 'rb').read())
    except OSError as e:
        print(pid, e)
print('pids', [p for p in os.listdir('/proc') if p.isdigit()])
"""
    result = run_code(code)
    assert result.passed, result.stderr
    assert SECRET not in result.stdout + result.stderr
    pids = eval(result.stdout.splitlines()[-1].split(" ", 1)[1])
    assert len(pids) <= 3  # its own pid namespace: the sandbox's first process and itself


def test_nothing_outside_the_working_folder_is_reachable(sandbox_backend, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "escape.txt"
    attempts = [
        f"open({str(outside)!r}, 'w').write('x')",
        f"import os; os.remove({str(victim)!r})",
        f"import os; d = os.open({str(tmp_path)!r}, os.O_RDONLY); os.write(os.open('escape.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d), b'x')",
        f"import os; d = os.open('/', os.O_RDONLY); os.open({str(outside)[1:]!r}, os.O_WRONLY | os.O_CREAT, dir_fd=d)",
        f"import os; os.symlink({str(victim)!r}, 'link'); open('link', 'w').write('x')",
        "open('/usr/lib/planted', 'w').write('x')",
        "open('/box/program.py', 'a').write('x')",
        f"import shutil; shutil.rmtree({str(tmp_path)!r})",
        "import os; os.mkdir('jail'); os.chroot('jail')",
        f"print(open({str(victim)!r}).read())",  # reading host files: not even visible
        f"import os, signal; os.kill({os.getpid()}, signal.SIGTERM)",  # the scorer's process: another pid namespace
        "import os; print(os.listdir('/home'), os.listdir('/etc'))",
    ]
    for code in attempts:
        assert not run_code(code).passed, code
    assert victim.read_text() == "keep me" and not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "victim.txt"]


def test_frame_walking_gains_nothing(sandbox_backend, tmp_path, monkeypatch):
    """The old guard was switched off from its own frame's globals; here there is nothing to switch
    off: after the walk, a child interpreter is just as contained."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    target = tmp_path / "pwned"
    code = f"""
import subprocess, sys
f = sys._getframe()
while f.f_back is not None:
    f = f.f_back
f.f_globals.clear()
child = "import os; print(open('/proc/' + str(os.getppid()) + '/environ').read()); open({str(target)!r}, 'w')"
r = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)
print(r.returncode, r.stdout, r.stderr)
"""
    result = run_code(code)
    assert SECRET not in result.stdout + result.stderr
    assert not target.exists()


def test_no_network(sandbox_backend):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(4.0)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    result = run_code(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.send(b'hi')")
    udp = run_code(f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('10.0.0.1', {port}))")
    thread.join()
    server.close()
    assert not result.passed and not accepted
    assert not udp.passed and "Network is unreachable" in udp.stderr


def test_nothing_outlives_the_timeout(sandbox_backend):
    marker = "lorafull-orphan-" + uuid.uuid4().hex
    code = f"""
import subprocess, sys
for _ in range(3):  # detached children that hold stdout, then a busy parent
    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}], start_new_session=True)
while True:
    pass
"""
    start = time.monotonic()
    result = run_code(code, timeout_s=3.0)
    elapsed = time.monotonic() - start
    assert result.timed_out and not result.passed
    assert elapsed < 6.0  # children holding the pipes do not stretch the limit
    assert still_alive_after(marker, 5.0) == []


def test_fork_bomb_is_capped_and_dies_at_the_timeout(sandbox_backend):
    marker = "lorafull-forked-" + uuid.uuid4().hex
    code = f"""
import os, sys
kids = []
try:
    while len(kids) < 500:
        pid = os.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])
        kids.append(pid)
except OSError as e:
    print('stopped', len(kids), type(e).__name__, flush=True)
while True:
    pass
"""
    result = run_code(code, timeout_s=4.0)
    assert result.timed_out and still_alive_after(marker, 5.0) == []
    if os.geteuid() != 0:  # the kernel exempts uid 0 from RLIMIT_NPROC (see the sandbox's docstring)
        assert "stopped" in result.stdout, (result.stdout, result.stderr)
        assert int(result.stdout.split()[1]) < 64


def test_scorer_memory_stays_bounded_while_the_answer_prints_a_gigabyte(sandbox_backend):
    """The scorer runs in a child process so that its peak RSS is its own."""
    probe = f"""
import json, resource, sys
sys.path.insert(0, {os.getcwd()!r})
from lorafull.judge.sandbox import run_code
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = run_code("import sys\\nchunk = b'x' * (1 << 20)\\nfor _ in range(1024):\\n    sys.stdout.buffer.write(chunk)\\n",
             timeout_s=60)
print(json.dumps({{"passed": r.passed, "kept": len(r.stdout), "before_kb": before,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["passed"] and report["kept"] == OUTPUT_CAP  # all 1 GiB written, 1 MiB kept
    assert report["peak_kb"] - report["before_kb"] < 32 * 1024, report


def test_refuses_without_isolation(tmp_path, monkeypatch):
    from lorafull.config import JudgeConfig
    from lorafull.judge.client import JudgeSetupError
    from lorafull.judge.stage import check_judge_setup

    assert path_with_only(tmp_path / "bin", [])
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # neither bwrap nor unshare
    with pytest.raises(SandboxUnavailable, match="judge.unsafe_code_execution: true"):
        run_code("print('hi')")
    cfg = JudgeConfig(kind="reference")
    with pytest.raises(JudgeSetupError) as err:
        check_judge_setup(cfg, {"code", "math"})
    assert "\n" not in str(err.value) and "unsafe_code_execution" in str(err.value)
    check_judge_setup(cfg, {"math"})  # no code class: nothing to isolate
    cfg.unsafe_code_execution = True
    check_judge_setup(cfg, {"code"})
    assert run_code("print('hi')", unsafe=True).stdout.strip() == "hi"
