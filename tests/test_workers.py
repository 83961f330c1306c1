"""phonalign.workers: the one process pool of the toolkit, with real worker processes.

The workers run the factories of ``tests/worker_targets.py`` (the ``worker_targets`` fixture puts
``tests/`` on their path), which are ordinary functions as the toolkit's own are.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from phonalign.workers import WorkerError, WorkerPool, WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("phonalign", "analysis", "lam_train")


def _gone(pid: int) -> bool:
    """The process has ended (a zombie whose parent died counts: it runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_answers_come_back_in_input_order_whichever_worker_was_faster(worker_targets):
    # a few slow tasks early on: later ones finish first on the other workers, and wait for them
    tasks = [f"sleep:{0.2 if i % 17 == 3 else 0}".encode() if i < 60 else str(i).encode() for i in range(300)]
    with WorkerPool(f"{worker_targets}:echo", b">", workers=3, name="echo", in_flight=4) as pool:
        replies = list(pool.map(iter(tasks)))
        assert [r.index for r in replies] == list(range(300))
        assert [r.data for r in replies] == [b">" + t for t in tasks]
        assert pool.deaths == 0
    with WorkerPool(f"{worker_targets}:pid", workers=3, name="pid", in_flight=1) as pool:
        used = {r.data for r in pool.map([b"sleep"] * 30)}
        assert {int(p) for p in used if p} <= set(pool.pids) and len(used) > 1


@pytest.mark.parametrize("in_flight", [1, 8])
def test_a_worker_that_dies_fails_the_task_it_held_and_the_rest_goes_on(worker_targets, in_flight):
    tasks = [str(i).encode() for i in range(100)]
    tasks[5] = tasks[6] = tasks[70] = b"die"
    with WorkerPool(f"{worker_targets}:echo", b">", workers=2, name="echo", in_flight=in_flight) as pool:
        first = pool.pids
        replies = list(pool.map(tasks))
        assert [r.index for r in replies] == list(range(100))
        died = [r.index for r in replies if r.died]
        assert died == [5, 6, 70] and all(replies[i].exit_code == 7 for i in died)
        # the tasks queued behind a dying worker were answered by the others, not lost or failed
        assert all(r.data == b">" + tasks[r.index] for r in replies if not r.died)
        assert pool.deaths == 3
        replaced = [p for p in first if p not in pool.pids]
        assert replaced and _wait_gone(replaced)
        # the pool goes on with its replacements
        assert [r.data for r in pool.map([b"a", b"b"])] == [b">a", b">b"]


def test_a_factory_that_fails_raises_once_instead_of_failing_every_task(worker_targets):
    t = time.monotonic()
    with pytest.raises(WorkerError, match="could not start") as err:
        with WorkerPool(f"{worker_targets}:failing_setup", workers=2, name="broken") as pool:
            list(pool.map([b"x"] * 50))
    assert not err.value.started and err.value.exit_code == 1
    assert time.monotonic() - t < 60


def test_stray_output_of_a_worker_goes_to_stderr_not_into_the_answers(worker_targets, capfd):
    with WorkerPool(f"{worker_targets}:echo", b">", workers=1, name="echo", in_flight=4) as pool:
        assert [r.data for r in pool.map([b"a", b"print", b"b"])] == [b">a", b">print", b">b"]
    assert "stray output from a worker" in capfd.readouterr().err


def test_workers_end_when_their_stream_is_closed(worker_targets):
    pool = WorkerPool(f"{worker_targets}:echo", b"", workers=2, name="echo")
    pids = pool.pids
    assert [r.data for r in pool.map([b"x"])] == [b"x"]
    pool.close()
    assert all(_gone(p) for p in pids)


def test_closing_a_map_half_way_ends_the_workers_with_it(worker_targets):
    pool = WorkerPool(f"{worker_targets}:echo", b"", workers=2, name="echo", in_flight=2)
    replies = pool.map([b"sleep:0.05"] * 100)
    next(replies)
    replies.close()  # a consumer that stops early (an exception in the runner, Ctrl-C)
    pool.close()
    assert all(_gone(p) for p in pool.pids)


def test_workers_end_when_their_parent_is_killed(worker_targets, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from phonalign.workers import WorkerPool
        pool = WorkerPool("{worker_targets}:echo", b"", workers=2, name="echo")
        replies = pool.map([b"sleep:0.2"] * 1000)
        next(replies)
        print(" ".join(map(str, pool.pids)), flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # each worker finishes the task in hand, finds its stream closed, and exits
        assert _wait_gone(pids), "a worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_workers_ignore_ctrl_c_the_parent_decides_when_they_stop(worker_targets):
    with WorkerPool(f"{worker_targets}:echo", b">", workers=1, name="echo") as pool:
        assert [r.data for r in pool.map([b"a"])] == [b">a"]
        os.kill(pool.pids[0], signal.SIGINT)
        time.sleep(0.2)
        assert [r.data for r in pool.map([b"b"])] == [b">b"] and pool.deaths == 0


def test_one_worker_process_answers_only_when_asked(worker_targets):
    w = WorkerProcess(f"{worker_targets}:echo", b"=", name="echo")
    try:
        w.send(b"one")
        assert w.receive() == b"=one"
        w.send(b"die")
        with pytest.raises(WorkerError, match="stopped") as err:
            w.receive()
        assert err.value.exit_code == 7
    finally:
        w.close()


def _code_in_strings(path: Path) -> list[str]:
    """Places where ``path`` runs Python held in a string: an argument list with ``-c``
    (``[sys.executable, "-c", CODE]``), or a shell command ``python -c ...``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and any(
                isinstance(e, ast.Constant) and e.value == "-c" for e in node.elts):
            found.append(f"{path}:{node.lineno}: an argument list with '-c'")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(
                r"\bpython[0-9.]*\s+-c\b", node.value):
            found.append(f"{path}:{node.lineno}: a 'python -c' command")
    return found


def test_no_package_runs_python_held_in_a_string():
    """Worker processes run importable functions (phonalign.workers), which linters, type checkers
    and coverage see; code held in a string and run with ``python -c`` is none of that."""
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    assert [hit for p in files for hit in _code_in_strings(p)] == []


def test_the_code_in_strings_check_finds_the_old_writer(tmp_path):
    old = tmp_path / "old_run.py"
    old.write_text('import subprocess, sys\n_CODE = "print(1)"\n'
                   'subprocess.Popen([sys.executable, "-c", _CODE])\n'
                   'CMD = "python3 -c \'import x\'"\n', encoding="utf-8")
    assert len(_code_in_strings(old)) == 2
