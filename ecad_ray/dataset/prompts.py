"""Prompt files for synthetic datasets, in nameonly's JSON layout, and the strategies that write them.

The layout, exactly as nameonly's image generator reads it:

    {class: {"metaprompts": [{"index": i, "metaprompt": text, "prompts": [{"index": j, "content": prompt}]}]}}

`content` is the finished prompt (the class already in it); `metaprompt` is what it came from:
the static template, the LLM's metaprompt, or "dummy" (nameonly's word) for strategies that have
none. Image j of a class takes the class's prompts in file order (`prompt_texts`).

Strategies (nameonly's, in our words and with our own templates and examples):
- `template`: static templates with `[concept]` (no LLM).
- `fake_f`: `"{class}, {hypernym} inside {place}"` over the shipped 200 Places365 scenes (no LLM).
- `metaprompt`: nameonly's two stages: an LLM writes metaprompts for the class (the first is
  "A photo of a {class}."), then rewrites each into prompts; each request lists the ones before
  it so the LLM avoids repeating itself.
- `synclr`: SynCLR's few-shot captions: object only / object + relation / object + place, with
  probabilities 0.44 / 0.11 / 0.45 (the places are the shipped scenes).
- `synthclip`: SynthCLIP's one caption per request, at most 15 words.
Everything a strategy draws at random comes from `random.Random(f"{seed}:{class}")`, so a class's
prompts depend on the seed and the class only, never on which worker made them. The LLM
strategies run on Ray (`actors/dataset_prompts.py`); the static ones need no Ray.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.dataset.classes import ClassSet
from ecad_ray.dataset.llm import LlmSettings
from ecad_ray.errors import UserError

PLACES_FILE = Path(__file__).resolve().parent / "places.txt"
STATIC_STRATEGIES = ("template", "fake_f")
LLM_STRATEGIES = ("metaprompt", "synclr", "synthclip")
STRATEGIES = STATIC_STRATEGIES + LLM_STRATEGIES
CONCEPT = "[concept]"
NO_METAPROMPT = "dummy"  # nameonly's metaprompt text for strategies without one

TEMPLATES = (
    "a photo of the [concept].",
    "a close-up photo of the [concept].",
    "a bright photo of the [concept].",
    "a dark photo of the [concept].",
    "a blurry photo of the [concept].",
    "a cropped photo of the [concept].",
    "a photo of the [concept], seen from far away.",
    "a photo of the [concept] outdoors.",
    "a photo of the [concept] indoors.",
    "a black and white photo of the [concept].",
    "a low-light photo of the [concept].",
    "a photo of the [concept] on a plain background.",
    "a photo of several [concept] objects together.",
    "a photo of the small [concept].",
    "a photo of the large [concept].",
    "a sharp, detailed photo of the [concept].",
    "a photo of the [concept] in natural light.",
    "a photo of the [concept] in its usual surroundings.",
    "a snapshot of the [concept] taken with a phone.",
    "a professional photo of the [concept].",
)

DEFAULT_PROMPTS_PER_CLASS = {"template": len(TEMPLATES), "fake_f": 200, "metaprompt": 50, "synclr": 200, "synthclip": 50}
METAPROMPTS = 10  # nameonly's first stage: 10 metaprompts, then 5 prompts each (50)
SYNCLR_MODES = ((0.44, "object"), (0.55, "relation"), (1.0, "place"))  # cumulative, as SynCLR/nameonly
SYNCLR_RELATIONS = ("in", "on", "next to", "behind", "in front of", "over", "under", "above", "below", "beside")

# Few-shot examples for synclr, ours: (category, [relation or place], caption).
SYNCLR_OBJECT_EXAMPLES = (
    ("lighthouse", "A white lighthouse stands on a rocky point while waves break against the cliffs below."),
    ("teapot", "A blue ceramic teapot steams on a wooden kitchen table beside two small cups."),
    ("fox", "A red fox trots through fresh snow at the edge of a pine forest."),
    ("bicycle", "An old green bicycle leans against a brick wall covered in ivy."),
    ("sunflower", "A tall sunflower turns its golden head toward the late afternoon sun."),
    ("violin", "A polished violin rests on an open case lined with red velvet."),
)
SYNCLR_RELATION_EXAMPLES = (
    ("cat", "on", "A grey cat sleeps on a sunny windowsill, its tail hanging over the edge."),
    ("lantern", "next to", "A paper lantern glows next to a stone path in a quiet garden."),
    ("dog", "under", "A small dog naps under a picnic table in a crowded park."),
    ("kite", "above", "A bright red kite flies high above a sandy beach."),
    ("umbrella", "behind", "A striped umbrella stands behind two folding chairs on the terrace."),
)
SYNCLR_PLACE_EXAMPLES = (
    ("horse", "meadow", "A chestnut horse grazes in a wide meadow dotted with yellow flowers."),
    ("laptop", "library", "An open laptop sits on a long table in a hushed university library."),
    ("boat", "harbor", "A small fishing boat is moored in a busy harbor at dawn."),
    ("guitar", "bedroom", "An acoustic guitar leans against the bed in a cosy bedroom."),
    ("owl", "forest", "A brown owl watches from a branch deep in a misty forest."),
)


@dataclass(frozen=True)
class PromptJob:
    """What `ecad-ray dataset prompts` makes: which strategy, how many prompts per class, the seed
    everything random comes from, and for LLM strategies where to ask."""

    strategy: str
    prompts_per_class: int | None = None  # None: the strategy's default (nameonly's counts)
    seed: int = 0
    llm: LlmSettings | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy {self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        n = self.prompts_per_class
        if n is not None and n < 1:
            raise UserError(f"--prompts-per-class {n}: must be at least 1")
        most = {"template": len(TEMPLATES), "fake_f": len(places())}.get(self.strategy)
        if n is not None and most is not None and n > most:
            raise UserError(f"--prompts-per-class {n}: the {self.strategy} strategy has {most} distinct prompts per class")
        if self.strategy in LLM_STRATEGIES and self.llm is None:
            raise UserError(f"--strategy {self.strategy} asks an LLM: give --llm-endpoint URL and --llm-model NAME")

    @property
    def count(self) -> int:
        return self.prompts_per_class or DEFAULT_PROMPTS_PER_CLASS[self.strategy]

    @property
    def uses_llm(self) -> bool:
        return self.strategy in LLM_STRATEGIES


@functools.cache
def places() -> tuple[str, ...]:
    """The shipped scene names (nameonly's 200 Places365 scenes, `_` as spaces)."""
    lines = PLACES_FILE.read_text().splitlines()
    return tuple(line.strip().replace("_", " ") for line in lines if line.strip() and not line.startswith("#"))


# ---- the layout ----------------------------------------------------------------------------

def class_entry(groups: list[tuple[str, list[str]]]) -> dict:
    """One class's value in a prompt file: (metaprompt, prompts) groups, indexed in order."""
    return {"metaprompts": [
        {"index": i, "metaprompt": metaprompt, "prompts": [{"index": j, "content": p} for j, p in enumerate(prompts)]}
        for i, (metaprompt, prompts) in enumerate(groups)
    ]}


def prompt_texts(entry: Mapping) -> list[str]:
    """A class's prompts in file order (metaprompt by metaprompt), what its images cycle through."""
    return [p["content"] for m in entry["metaprompts"] for p in m["prompts"]]


def read_prompt_file(path: str | Path) -> dict[str, dict]:
    """A prompt file, checked against nameonly's layout; a bad one is a one-line error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such prompt file") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a JSON prompt file ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {{class: {{\"metaprompts\": [...]}}}}, got a JSON {type(data).__name__}")
    for cls, entry in data.items():
        problem = _layout_problem(entry)
        if problem:
            raise UserError(f"{path}: class {cls!r}: {problem}")
    return data


def _layout_problem(entry) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("metaprompts"), list):
        return 'expected {"metaprompts": [...]}'
    for m in entry["metaprompts"]:
        if not isinstance(m, dict) or not {"index", "metaprompt", "prompts"} <= m.keys() or not isinstance(m["prompts"], list):
            return 'each metaprompt needs "index", "metaprompt" and a "prompts" list'
        for p in m["prompts"]:
            if not isinstance(p, dict) or not isinstance(p.get("content"), str) or "index" not in p:
                return 'each prompt needs "index" and a "content" string'
    if not any(m["prompts"] for m in entry["metaprompts"]):
        return "holds no prompt"
    return None


def write_prompt_file(path: str | Path, data: Mapping[str, dict], order: tuple[str, ...] = ()) -> Path:
    """Write a prompt file atomically: the classes of `order` first, in that order, then any others."""
    from ecad_ray.atomic import write_text_atomic  # (pyarrow: kept out of the CLI's --help)

    ordered = {c: data[c] for c in order if c in data}
    ordered.update({c: e for c, e in data.items() if c not in ordered})
    return write_text_atomic(path, json.dumps(ordered, ensure_ascii=False) + "\n")


def done_classes(path: str | Path) -> dict[str, dict]:
    """The classes a previous (maybe interrupted) run already wrote to `path`; {} when none.

    Classes are written whole, so a class present is complete: resuming asks nothing for it."""
    return read_prompt_file(path) if Path(path).exists() else {}


# ---- the strategies ------------------------------------------------------------------------

def class_rng(seed: int, cls: str) -> random.Random:
    """The random numbers of one class's prompts: from the seed and the class, nothing else."""
    return random.Random(f"{seed}:{cls}")


def static_entry(job: PromptJob, cls: str, description: str, hypernym: str) -> dict:
    """A class's prompts for `template` or `fake_f` (no LLM)."""
    rng = class_rng(job.seed, cls)
    n = job.count
    if job.strategy == "template":
        chosen = TEMPLATES if n == len(TEMPLATES) else rng.sample(TEMPLATES, n)
        return class_entry([(t, [t.replace(CONCEPT, description)]) for t in chosen])
    if job.strategy == "fake_f":
        return class_entry([(NO_METAPROMPT, [f"{description}, {hypernym} inside {place}"])
                            for place in rng.sample(places(), n)])
    raise ValueError(f"{job.strategy} is not a static strategy")


Ask = Callable[[str], str]  # one user message -> the LLM's answer


def llm_entry(job: PromptJob, cls: str, description: str, ask: Ask) -> dict:
    """A class's prompts for an LLM strategy; `ask` sends one request (an `LlmClient.ask`)."""
    rng = class_rng(job.seed, cls)
    if job.strategy == "metaprompt":
        return _metaprompt_entry(description, job.count, ask)
    if job.strategy == "synclr":
        return class_entry([(NO_METAPROMPT, [_caption(ask(synclr_request(description, rng)))]) for _ in range(job.count)])
    if job.strategy == "synthclip":
        return class_entry([(NO_METAPROMPT, [_caption(ask(synthclip_request(description)))]) for _ in range(job.count)])
    raise ValueError(f"{job.strategy} is not an LLM strategy")


def _metaprompt_entry(description: str, n: int, ask: Ask) -> dict:
    """nameonly's two stages: metaprompts (the first fixed), then prompts rewritten from each."""
    m = min(METAPROMPTS, n)
    metaprompts = [f"A photo of a {description}."]
    while len(metaprompts) < m:
        metaprompts.append(_after_prompt_label(ask(metaprompt_request(description, metaprompts))))
    sizes = [n // m + (i < n % m) for i in range(m)]  # n prompts spread over m metaprompts
    groups = []
    for metaprompt, size in zip(metaprompts, sizes):
        prompts: list[str] = []
        for _ in range(size):
            prompts.append(_after_prompt_label(ask(rewrite_request(description, metaprompt, prompts))))
        groups.append((metaprompt, prompts))
    return class_entry(groups)


def metaprompt_request(description: str, previous: list[str]) -> str:
    """Stage 1: one new, different metaprompt for the class, given the ones so far."""
    listed = "".join(f"\nprompt: {p}" for p in previous)
    return (f"I am writing prompts for a text-to-image model about one concept: {description}. Keep the images "
            "photorealistic but vary the scene, the visual style and the colour palette. These prompts exist "
            f"already; write a new one that differs from all of them.{listed}\nAnswer with one prompt of at "
            f"most 10 words that contains '{description}', in the form 'prompt: <answer>'.")


def rewrite_request(description: str, metaprompt: str, previous: list[str]) -> str:
    """Stage 2: a close variation of one metaprompt, unlike the variations so far."""
    listed = "".join(f"\nprompt: {p}" for p in previous)
    return (f"I am writing prompts for a text-to-image model. Rewrite '{metaprompt}' into a similar but slightly "
            "different photorealistic prompt (another scene, style or colour palette). These rewrites exist "
            f"already; do not repeat them.{listed}\nAnswer with one prompt of at most 15 words that contains "
            f"'{description}', in the form 'prompt: <answer>'.")


def synclr_request(description: str, rng: random.Random) -> str:
    """SynCLR's few-shot request: object only, object + relation, or object + place."""
    draw = rng.random()
    mode = next(name for limit, name in SYNCLR_MODES if draw < limit)
    if mode == "object":
        shots = rng.sample(SYNCLR_OBJECT_EXAMPLES, 3)
        lines = [f"{c} => {t}" for c, t in shots] + [f"{description} =>"]
        head = "Write an image description for an object category:"
    elif mode == "relation":
        shots = rng.sample(SYNCLR_RELATION_EXAMPLES, 3)
        lines = [f"{c}, {r} => {t}" for c, r, t in shots] + [f"{description}, {rng.choice(SYNCLR_RELATIONS)} =>"]
        head = "Write an image description for an object category and a relation:"
    else:
        shots = rng.sample(SYNCLR_PLACE_EXAMPLES, 3)
        lines = [f"{c}, {p} => {t}" for c, p, t in shots] + [f"{description}, {rng.choice(places())} =>"]
        head = "Write an image description for an object category and a place:"
    return head + "\n\n" + "\n\n".join(lines)


def synthclip_request(description: str) -> str:
    """SynthCLIP's request: one caption of at most 15 words that shows the concept in a scene."""
    return (f"Write one image caption that shows and visually describes a scene with this concept: {description}. "
            "One grammatical sentence of at most 15 words; no notes, counts or facts, only the sentence.")


_PROMPT_LABEL = re.compile(r"prompt:\s*(.*)", re.IGNORECASE)


def _after_prompt_label(answer: str) -> str:
    """The text after `prompt:` (nameonly's answer format), else the whole first line."""
    match = _PROMPT_LABEL.search(answer)
    return _one_line(match.group(1) if match else answer)


def _one_line(answer: str) -> str:
    line = next((x.strip() for x in answer.splitlines() if x.strip()), "")
    return line.strip('"').strip()


def _caption(answer: str) -> str:
    """A caption answer's last non-empty line: a chatty model puts "Sure! Here it is:" first."""
    lines = [x.strip() for x in answer.splitlines() if x.strip()]
    return lines[-1].strip('"').strip() if lines else ""


# ---- a whole file --------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptsSummary:
    """What one `dataset prompts` call did: classes written now, classes kept from before."""

    output: Path
    written: int
    kept: int
    requests: int = 0  # LLM requests sent (retries included)


def class_rows(class_set: ClassSet, skip: Mapping[str, dict]) -> list[dict]:
    """One row per class still to do: its name, what prompts call it and its hypernym."""
    return [{"class_name": c, "description": class_set.description(c), "hypernym": class_set.hypernym(c)}
            for c in class_set.classes if c not in skip]


def write_static_prompts(class_set: ClassSet, job: PromptJob, output: str | Path) -> PromptsSummary:
    """`template` / `fake_f` for every class of the set not already in `output`, in one write."""
    if job.uses_llm:
        raise ValueError("LLM strategies run on Ray: actors.dataset_prompts.make_prompt_file")
    data = done_classes(output)
    kept = sum(c in data for c in class_set.classes)
    rows = class_rows(class_set, data)
    for row in rows:
        data[row["class_name"]] = static_entry(job, row["class_name"], row["description"], row["hypernym"])
    write_prompt_file(output, data, class_set.classes)
    return PromptsSummary(Path(output), len(rows), kept)


def check_output(output: str | Path) -> Path:
    """The prompt file to write: a .json path whose folder can be made."""
    output = Path(output)
    if output.suffix.lower() != ".json":
        raise UserError(f"--output {output}: expected a .json file")
    if output.is_dir():
        raise UserError(f"--output {output}: is a folder, expected a .json file")
    return output


def total_prompts(data: Mapping[str, dict]) -> int:
    return sum(len(prompt_texts(e)) for e in data.values())

