"""A judge model the study serves itself (eval.judge.serve): vLLM on GPUs, `transformers serve` on CPUs.

    python -m lorafull.judge.serve STUDY_DIR/judge_server/<key>

    files    the server's folder in the study: settings, the 0600 address file, state, Slurm job, clients
    engine   the engine process on 127.0.0.1 (its command, its health, its stop)
    proxy    the one door from other nodes: bearer token, allowed paths only, request counters
    server   the process that runs both and writes the address once healthy (the command above)
    client   the eval side: wait for the server within a bound, judge through it, notice it died
    local    the server as a subprocess here (local executors, the agreement command)
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'ServerPaths': 'files',
    'all_servers': 'files',
    'read_json': 'files',
    'read_clients': 'files',
    'server_lock': 'files',
    'write_private_json': 'files',
    'write_state': 'files',
    'SERVER_ROOT': 'files',
    'Engine': 'engine',
    'engine_command': 'engine',
    'JudgeProxy': 'proxy',
    'ServedJudge': 'server',
    'ServedEndpoint': 'client',
    'served_name': 'client',
    'wait_for_server': 'client',
    'health': 'client',
    'ServerProcess': 'local',
    'write_settings': 'local',
})
