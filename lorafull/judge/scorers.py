"""Offline scorers: a score in [0, 1] for a response against a reference, with no judge model.

    score("math", response, reference)   final number equal (1.0) or not (0.0); None if the reference has none
    score("code", response, reference)   the response's code + the reference's test code run in a sandboxed
                                         subprocess: passes (1.0) or not (0.0); None if the reference is not code
    score("text", response, reference)   ROUGE-L F1 (Chinese by character, other text by word)

Used by `judge.kind: reference` (class -> scorer through eval.judge.scorers) and by the analysis
generation tasks. The code sandbox (run_code) guards against the accidents of model-written code
(endless loops, memory blow-ups, stray file writes, network calls); it is not a security boundary
against a determined attacker.
"""
from __future__ import annotations

import ast
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Optional


SCORERS = ("math", "code", "text")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. 2021 from n samples of which c pass: 1 - C(n-c, k) / C(n, k),
    as a running product (no huge binomials)."""
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def samples_score(scorer: str, values: list[Optional[float]], k: int = 1) -> Optional[float]:
    """One item's score from its samples' scores: pass@k for the pass/fail scorers (math, code; an unscorable
    sample fails), the mean for text; None when no sample could be scored."""
    if all(v is None for v in values):
        return None
    if len(values) == 1:
        return values[0]
    if scorer in ("math", "code"):
        return pass_at_k(len(values), sum(v == 1.0 for v in values), k)
    known = [v for v in values if v is not None]
    return sum(known) / len(known)


def score(scorer: str, response: str, reference: str, **kw) -> Optional[float]:
    """Dispatch to a scorer by name; kw go to the scorer (e.g. timeout_s, mem_mb for code)."""
    if scorer == "math":
        return math_score(response, reference)
    if scorer == "code":
        return code_score(response, reference, **kw)
    if scorer == "text":
        return text_score(response, reference)
    raise ValueError(f"unknown scorer {scorer!r} (known: {', '.join(SCORERS)})")


# ---------------------------------------------------------------------------------------------
# math: the final number
# ---------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|\\frac\{-?\d+\}\{\d+\}")
# words that introduce the final answer; the first number after the last of them is the answer
_ANSWER_MARKERS = re.compile(r"答案是|答案为|答案[:：]|答[:：]|结果是|结果为|final answer|answer is|answer:|####|\\boxed\{",
                             re.IGNORECASE)


def _clean_math(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")  # full-width digits and NBSP -> ASCII
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000,000 -> 1000000
    return text


def _to_number(token: str) -> Optional[Fraction]:
    token = token.replace(" ", "")
    m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", token)
    try:
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if "/" in token:
            num, den = token.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def final_number(text: str) -> Optional[Fraction]:
    """The answer's number: the first one after the last answer marker ("答案是", "answer is", "####",
    \\boxed{), else the last number in the text. Units, trailing periods, commas are ignored."""
    text = _clean_math(text)
    markers = list(_ANSWER_MARKERS.finditer(text))
    if markers:
        m = _NUMBER.search(text, markers[-1].end())
        if m:
            return _to_number(m.group(0))
    numbers = _NUMBER.findall(text)
    return _to_number(numbers[-1]) if numbers else None


def math_score(response: str, reference: str) -> Optional[float]:
    expected = final_number(reference)
    if expected is None:
        return None  # nothing to compare against: unscored, not wrong
    got = final_number(response)
    if got is None:
        return 0.0
    tolerance = Fraction(1, 10 ** 6) * max(1, abs(expected))
    return 1.0 if abs(got - expected) <= tolerance else 0.0


# ---------------------------------------------------------------------------------------------
# the code sandbox
# ---------------------------------------------------------------------------------------------
# Runs first in the child (python -I: no PYTHONPATH, no user site), installs an audit hook, then runs
# the program. Audit hooks cannot be removed once installed, and every file, socket and process API of
# the standard library raises an audit event before it acts.
_GUARD = r'''
import os, sys, runpy
ROOT = os.path.realpath(sys.argv[1])
PROGRAM = sys.argv[2]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
               "os.truncate": (0,), "os.utime": (0,), "os.rename": (0, 1), "os.link": (0, 1),
               "os.symlink": (1,), "os.chdir": (0,), "os.chflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
               "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,), "os.removexattr": (0,),
               "os.setxattr": (0,)}
DENIED = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
          "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "os.kill", "os.killpg", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.chroot"}
DENIED_IMPORTS = {"ctypes", "_ctypes", "cffi", "_posixsubprocess"}

def inside(path):
    if isinstance(path, int):
        return True  # an fd we were already allowed to open
    try:
        real = os.path.realpath(os.fsdecode(path))  # relative paths resolve against the cwd
    except Exception:
        return False
    return real == ROOT or real.startswith(ROOT + os.sep)

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = bool(flags & WRITE) or any(c in (mode or "") for c in "wax+")
        if path is not None and not inside(path):
            if writing or (not isinstance(path, int) and os.path.isdir(path)):
                raise PermissionError(f"sandbox: writing outside the working folder is not allowed: {path}")
    elif event in PATH_EVENTS:
        for i in PATH_EVENTS[event]:
            if i < len(args) and args[i] is not None and not inside(args[i]):
                raise PermissionError(f"sandbox: {event} outside the working folder: {args[i]}")
    elif event in DENIED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    elif event == "import" and args[0] in DENIED_IMPORTS:
        raise ImportError(f"sandbox: import of {args[0]} is not allowed")

sys.addaudithook(hook)
sys.argv = [PROGRAM]
runpy.run_path(PROGRAM, run_name="__main__")
'''


@dataclass
class CodeResult:
    passed: bool
    returncode: Optional[int]
    timed_out: bool
    stdout: str
    stderr: str


@lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """`unshare -rn` (a private network namespace with only a down loopback) when the kernel allows
    unprivileged user namespaces; else nothing, and the audit hook alone blocks sockets."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (exe, "-rn") if ok else ()


def _limits(mem_mb: int, cpu_s: int, file_mb: int):
    def apply():  # runs in the child between fork and exec
        os.setsid()  # own process group: a timeout kills everything it started
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_code(code: str, timeout_s: float = 10.0, mem_mb: int = 1024, file_mb: int = 16,
             network: bool = False) -> CodeResult:
    """Run Python `code` in a fresh temp folder (its cwd, HOME and TMPDIR) with time, memory and
    file-size limits, no network, no subprocesses and no writes outside that folder."""
    workdir = Path(tempfile.mkdtemp(prefix="lorafull-code-"))
    try:
        (workdir / "program.py").write_text(code, encoding="utf-8")
        guard = workdir / ".guard.py"
        guard.write_text(_GUARD, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "TMPDIR": str(workdir),
               "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        prefix = () if network else _netns_prefix()
        cmd = [*prefix, sys.executable, "-I", "-B", str(guard), str(workdir), str(workdir / "program.py")]
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=_limits(mem_mb, int(timeout_s) + 2, file_mb))
        try:
            out, err = proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        return CodeResult(passed=(not timed_out and proc.returncode == 0), returncode=proc.returncode,
                          timed_out=timed_out, stdout=out.decode("utf-8", "replace")[-4000:],
                          stderr=err.decode("utf-8", "replace")[-4000:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# code: run it
# ---------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The Python code of a reply: its ``` fenced blocks joined (python-tagged ones first when some
    are), else the whole text (a model that answers with bare code)."""
    blocks = _FENCE.findall(text or "")
    if not blocks:
        return (text or "").strip()
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return "\n\n".join(python or [body for _, body in blocks]).strip()


def code_score(response: str, reference: str, timeout_s: float = 10.0, mem_mb: int = 1024) -> Optional[float]:
    """1.0 when the response's code followed by the reference's test code exits 0 in the sandbox."""
    tests = extract_code(reference)
    try:
        ast.parse(tests)
    except SyntaxError:
        return None  # a prose reference (e.g. BELLE's): there is no test to run
    if not tests.strip():
        return None
    solution = extract_code(response)
    result = run_code(solution + "\n\n" + tests, timeout_s=timeout_s, mem_mb=mem_mb)
    return 1.0 if result.passed else 0.0


# ---------------------------------------------------------------------------------------------
# text: ROUGE-L F1
# ---------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def text_tokens(text: str) -> list[str]:
    """Chinese characters one by one, other scripts by word, lower-cased, punctuation dropped."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    out = []
    for tok in _TOKEN.findall(text):
        if len(tok) > 1 and re.search(r"[\u3400-\u9fff]", tok):  # a word glued to CJK: split the CJK out
            out.extend(t for t in re.findall(r"[\u3400-\u9fff]|[^\u3400-\u9fff]+", tok))
        else:
            out.append(tok)
    return out


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, bit-parallel (Allison-Dix / Hyyro): one big-int update per
    token of b instead of a len(a) x len(b) table, so long answers cost milliseconds."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def text_score(response: str, reference: str) -> Optional[float]:
    ref, hyp = text_tokens(reference), text_tokens(response)
    if not ref:
        return None
    if not hyp:
        return 0.0
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
