"""`ecad-ray dataset prompts` on Ray: LLM prompt strategies as one Ray Data stage, batched and resumable.

    class rows (classes not yet in P.json)
      --run_stages--> LlmPromptStage "llm prompts" (pool of --num-workers actors; each answers a
                      batch of classes on a small thread pool, within its share of --llm-rate)
      --> driver: every finished batch merged into P.json (atomic rewrite), so an interruption
          or a failing endpoint keeps every class already done; a rerun asks only for the rest.

Why not `ray.data.llm`'s HTTP request processor: in Ray 2.60 it needs aiohttp (not a dependency
here), and it sends one request per row, while nameonly's metaprompt strategy is a conversation
per class (each request lists the answers before it). A class per row keeps that order and makes
"class done" the unit of resume. A class the endpoint fails on comes back in an error column (as
ray.data.llm does), so the classes done alongside it in the same batch are still written.
The static strategies (template, fake_f) need no Ray: they are written in the driver.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from actors.pipeline import StageSpec, run_stages
from actors.stage import Stage
from ecad_ray.dataset.classes import ClassSet
from ecad_ray.dataset.llm import LlmClient, LlmError, RateLimiter
from ecad_ray.dataset.prompts import (
    PromptJob, PromptsSummary, check_output, class_rows, done_classes, llm_entry, write_prompt_file, write_static_prompts,
)
from ecad_ray.errors import UserError

CLASSES_PER_BATCH = 4  # classes one actor works on at once (one thread each)


class LlmPromptStage(Stage):
    """Ask the LLM for the prompts of each class in a batch; a class's JSON entry, or its error."""

    name = "llm prompts"
    consumes = {
        "class_name": "the class (its key in the prompt file)",
        "description": "what prompts call the class",
    }
    produces = {
        "entry_json": "the class's prompt-file entry as JSON ('' when it failed)",
        "error": "why the endpoint failed for this class ('' when it did not)",
        "requests": "requests sent for this class, retries included",
    }

    def __init__(self, job: PromptJob, rate: float):
        self.job = job
        self.limiter = RateLimiter(rate)  # this actor's share of --llm-rate, for all its threads

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
            results = list(pool.map(lambda i: self._one(str(batch["class_name"][i]), str(batch["description"][i])), range(n)))
        batch["entry_json"] = np.array([r[0] for r in results], dtype=object)
        batch["error"] = np.array([r[1] for r in results], dtype=object)
        batch["requests"] = np.array([r[2] for r in results], dtype=np.int64)
        return batch

    def _one(self, cls: str, description: str) -> tuple[str, str, int]:
        client = LlmClient(self.job.llm, self.limiter)  # one per class, to count its requests
        try:
            entry = llm_entry(self.job, cls, description, client.ask)
        except LlmError as err:
            return "", f"{err}: class {cls!r}", client.requests
        return json.dumps(entry), "", client.requests


def llm_prompt_stages(job: PromptJob, num_workers: int) -> list[StageSpec]:
    """The plan: one stage, `num_workers` actors sharing --llm-rate evenly."""
    rate = job.llm.rate / num_workers
    return [StageSpec(LlmPromptStage, {"job": job, "rate": rate}, batch_size=CLASSES_PER_BATCH,
                      num_cpus=0.25, pool=(num_workers, num_workers))]


def make_prompt_file(class_set: ClassSet, job: PromptJob, output: str | Path, num_workers: int = 1,
                     address: str | None = None) -> PromptsSummary:
    """Write `output` for every class of `class_set`, resuming from what it already holds.

    Static strategies are written in the driver; LLM strategies stream through the Ray plan and
    every finished batch of classes is merged into the file at once. A class the endpoint keeps
    failing on ends the run with one line naming the endpoint and the class; the file keeps the
    classes done so far.
    """
    output = check_output(output)
    if num_workers < 1:
        raise UserError(f"--num-workers {num_workers}: must be at least 1")
    if not job.uses_llm:
        return write_static_prompts(class_set, job, output)
    from actors.plan import ray_session

    data = done_classes(output)
    kept = sum(c in data for c in class_set.classes)
    rows = class_rows(class_set, data)
    written = requests = 0
    with ray_session(address, num_cpus=max(2, num_workers)):
        for batch in run_stages(rows, llm_prompt_stages(job, num_workers), rows_per_block=CLASSES_PER_BATCH):
            errors = []
            for cls, entry, error, sent in zip(batch["class_name"], batch["entry_json"], batch["error"], batch["requests"]):
                requests += int(sent)
                if error:
                    errors.append(str(error))
                else:
                    data[str(cls)] = json.loads(entry)
                    written += 1
            write_prompt_file(output, data, class_set.classes)
            if errors:
                done = sum(c in data for c in class_set.classes)
                raise UserError(f"{errors[0]}; {done} of {len(class_set.classes)} classes are in {output}: "
                                "rerun the same command to ask only for the rest")
    return PromptsSummary(output, written, kept, requests)
