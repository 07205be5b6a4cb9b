"""`ecad-ray dataset prompts`: options reach the library as given; bad input is one line, exit 1."""

import json
import subprocess
import sys

import pytest
from chat_server import ChatServer, closed_port_url
from typer.testing import CliRunner

from ecad_ray.errors import UserError
from ecad_ray_cli.main import app


def test_options_reach_the_plan(tmp_path, monkeypatch):
    import actors.dataset_prompts as plan

    seen = {}

    def fake(class_set, job, output, num_workers, address):
        seen.update(classes=class_set.classes, job=job, output=output, num_workers=num_workers, address=address)
        return plan.PromptsSummary(output, len(class_set.classes), 0, 7)

    monkeypatch.setattr(plan, "make_prompt_file", fake)
    out = tmp_path / "P.json"
    result = CliRunner().invoke(app, [
        "dataset", "prompts", "--dataset", "domainnet", "--class-range", "2:4", "--strategy", "synthclip",
        "--prompts-per-class", "3", "--seed", "9", "--output", str(out), "--llm-endpoint", "http://127.0.0.1:8000/v1",
        "--llm-model", "qwen", "--llm-rate", "5", "--llm-retries", "1", "--num-workers", "2"])
    assert result.exit_code == 0, result.output
    job = seen["job"]
    assert seen["classes"] == ("alarm_clock", "ambulance") and seen["output"] == out and seen["num_workers"] == 2
    assert (job.strategy, job.prompts_per_class, job.seed) == ("synthclip", 3, 9)
    assert (job.llm.endpoint, job.llm.model, job.llm.rate, job.llm.retries) == ("http://127.0.0.1:8000/v1", "qwen", 5.0, 1)
    assert "2 class(es) written, 0 kept (synthclip, 3 prompts per class, 7 LLM request(s))" in result.output


def test_template_prompts_end_to_end(tmp_path):
    out = tmp_path / "P.json"
    result = CliRunner().invoke(app, ["dataset", "prompts", "--dataset", "shapes", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())) == 24
    again = CliRunner().invoke(app, ["dataset", "prompts", "--dataset", "shapes", "--output", str(out)])
    assert "0 class(es) written, 24 kept" in again.output


@pytest.mark.parametrize("args,line", [
    (["--dataset", "coco"], "error: --dataset 'coco' is not a known class set; known: cifar10, domainnet, imagenet, "
                            "imagenet_full, pacs, shapes"),
    (["--dataset", "pacs", "--class-range", "7:9"], "error: --class-range '7:9' selects no class (the set has 7 classes)"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, line):
    out = tmp_path / "P.json"
    proc = subprocess.run([sys.executable, "-m", "ecad_ray_cli", "dataset", "prompts", *args, "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [line]
    assert not out.exists()


def test_endpoint_down_through_the_cli(ray_local, tmp_path):
    url = closed_port_url()
    out = tmp_path / "P.json"
    result = CliRunner().invoke(app, ["dataset", "prompts", "--dataset", "shapes", "--class-range", "0:2",
                                      "--strategy", "metaprompt", "--output", str(out), "--llm-endpoint", url,
                                      "--llm-model", "m", "--llm-retries", "0"])
    assert isinstance(result.exception, UserError)  # main() prints it as "error: ..." and exits 1
    assert str(result.exception).startswith(f"--llm-endpoint {url}: cannot reach")
    assert "0 of 2 classes are in" in str(result.exception)


def test_llm_strategy_end_to_end(ray_local, tmp_path):
    out = tmp_path / "P.json"
    with ChatServer() as server:
        result = CliRunner().invoke(app, ["dataset", "prompts", "--dataset", "pacs", "--class-range", "0:2",
                                          "--strategy", "metaprompt", "--prompts-per-class", "4", "--output", str(out),
                                          "--llm-endpoint", server.url, "--llm-model", "m", "--llm-rate", "100"])
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 2 * (3 + 4)  # per class: 3 metaprompts asked (the first is fixed) + 4 prompts
    data = json.loads(out.read_text())
    assert list(data) == ["dog", "elephant"]
    assert [len(m["prompts"]) for m in data["dog"]["metaprompts"]] == [1, 1, 1, 1]


def test_the_command_module_imports_nothing_heavy():
    code = "import sys, ecad_ray_cli.main; print(sorted(m for m in ('numpy', 'pyarrow', 'ray', 'torch') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stderr  # `ecad-ray --help` stays fast
