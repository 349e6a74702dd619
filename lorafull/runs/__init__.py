"""The run folder and its life cycle: where each file lies (paths), status.json and its named transitions
(status), the JSON-lines files stages talk through (jsonl), locks (lock), secret redaction (secrets) and
the command line every one-run stage shares (cli).

Library package (no command). Everything below is importable as `from lorafull.runs import NAME`; only
the transitions of lorafull.runs.status write status.json (tests/test_layout.py checks it).
"""
from lorafull.runs.cli import command_parser, not_a_run_folder, run_stage_cli
from lorafull.runs.jsonl import BackgroundJsonlWriter, JsonlWriter, iter_json_lines, read_jsonl, repair_jsonl_tail
from lorafull.runs.lock import LockBusy, file_lock, stage_lock
from lorafull.runs.paths import RunPaths, path_inside, write_json_atomic
from lorafull.runs.secrets import REDACTED, error_detail, error_line, redact, redact_obj, register_secret
from lorafull.runs.status import (EVAL_STAGES, STAGES, STATES, FolderView, Stage, State, classify_folder, done,
                                  eval_done, failed, interrupted, preempted, queued, read_status, started,
                                  superseded, train_done, waiting, write_status)

__all__ = [
    "command_parser", "not_a_run_folder", "run_stage_cli", "BackgroundJsonlWriter", "JsonlWriter", "iter_json_lines",
    "read_jsonl", "repair_jsonl_tail", "stage_lock", "file_lock", "LockBusy", "RunPaths", "path_inside", "write_json_atomic",
    "REDACTED", "error_detail", "error_line",
    "redact", "redact_obj", "register_secret", "EVAL_STAGES", "STAGES", "STATES", "FolderView", "Stage", "State",
    "classify_folder", "done", "eval_done", "failed", "interrupted", "preempted", "queued", "read_status",
    "started", "superseded", "train_done", "waiting", "write_status",
]
