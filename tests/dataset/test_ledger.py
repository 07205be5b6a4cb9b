"""The ledger on its own (no Ray, no model): leases, takeover, one claimer per task, settings kept."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ecad_ray.dataset.ledger import Ledger, TaskSpec, worker_id
from ecad_ray.dataset.status import status_lines
from ecad_ray.errors import UserError

META = {"class_set": "shapes", "classes": ["red circle", "blue square"], "targets": {"red circle": 4, "blue square": 2},
        "format": "jpg"}
TASKS = [TaskSpec("00000-00-00000", "red circle", "demo", 0, 0, 2), TaskSpec("00000-00-00001", "red circle", "demo", 1, 2, 2),
         TaskSpec("00001-00-00000", "blue square", "demo", 0, 0, 2)]


def ledger(tmp_path, **kw) -> Ledger:
    led = Ledger(tmp_path, **kw)
    led.setup(META, TASKS)
    return led


def test_tasks_go_pending_running_done_and_each_is_claimed_once(tmp_path):
    led = ledger(tmp_path)
    a, b = worker_id(), worker_id()
    first, second, third = led.claim(a), led.claim(b), led.claim(a)
    assert [t.task_id for t in (first, second, third)] == [t.task_id for t in TASKS]
    assert led.claim(b) is None  # all running, leases alive
    assert led.finish(first.task_id, a) and not led.finish(second.task_id, a)  # only the holder finishes it
    states = {t.spec.task_id: (t.state, t.worker) for t in led.tasks()}
    assert states[first.task_id] == ("done", a) and states[second.task_id] == ("running", b)
    assert led.unfinished() == 2


def test_an_expired_lease_is_taken_again_and_a_heartbeat_keeps_it(tmp_path):
    led = ledger(tmp_path, lease_seconds=0.3)
    a, b = worker_id(), worker_id()
    held = [led.claim(a) for _ in TASKS]
    time.sleep(0.2)
    assert led.heartbeat(a) == 3  # a lives: its leases move on
    time.sleep(0.2)
    assert led.claim(b) is None
    time.sleep(0.35)  # a stops beating (killed on another node): its leases run out
    taken = led.claim(b)
    assert taken == held[0]
    task = next(t for t in led.tasks() if t.spec.task_id == taken.task_id)
    assert (task.state, task.worker, task.attempts) == ("running", b, 2)
    assert not led.finish(taken.task_id, a)  # the old holder's late finish does not count


def test_a_dead_process_of_this_machine_loses_its_tasks_at_once(tmp_path):
    led = ledger(tmp_path, lease_seconds=3600)
    gone = subprocess.run([sys.executable, "-c", "from ecad_ray.dataset.ledger import worker_id; print(worker_id())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for _ in TASKS:
        led.claim(gone)
    assert led.claim(worker_id()).task_id == TASKS[0].task_id  # taken back long before the hour-long lease ends


def test_concurrent_claimers_never_share_a_task(tmp_path):
    tasks = [TaskSpec(f"{i:05d}-00-00000", "red circle", "demo", 0, i, 1) for i in range(60)]
    Ledger(tmp_path).setup(META, tasks)
    got: dict[str, list[str]] = {}

    def claimer():
        led, me = Ledger(tmp_path), worker_id()
        got[me] = []
        while (task := led.claim(me)) is not None:
            got[me].append(task.task_id)
            led.finish(task.task_id, me)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [x for ids in got.values() for x in ids]
    assert sorted(claimed) == [t.task_id for t in tasks]  # every task once, none twice
    assert Ledger(tmp_path).unfinished() == 0


def test_other_settings_are_refused_naming_the_setting(tmp_path):
    ledger(tmp_path)
    with pytest.raises(UserError, match=r"^--output-dir .*: holds a dataset made with format=\"jpg\", this command has "
                                        r"format=\"png\"; use another --output-dir$"):
        Ledger(tmp_path).setup({**META, "format": "png"}, TASKS)
    Ledger(tmp_path).setup(META, TASKS)  # the same settings join


def test_failed_tasks_show_in_status_and_a_rerun_retries_them(tmp_path):
    led = ledger(tmp_path)
    me = worker_id()
    task = led.claim(me)
    led.fail(task.task_id, me, "generate: item_name 'red_circle/000000.jpg', seed 0: RuntimeError: boom")
    running = led.claim(me)
    lines = status_lines(tmp_path)
    assert lines[0].split() == ["red", "circle", "0/4", "images", "tasks:", "1", "failed,", "1", "running"]
    assert lines[2] == "total: 0/6 images, 0/3 tasks done"
    assert any(x.startswith(f"running: task {running.task_id} (red circle, demo, images 2..3) by {me}, lease expires in")
               for x in lines)
    assert f"failed: task {task.task_id} (red circle, demo) by {me}: generate: item_name 'red_circle/000000.jpg', " \
           "seed 0: RuntimeError: boom" in lines
    assert led.retry_failed() == 1 and led.claim(me).task_id == task.task_id
