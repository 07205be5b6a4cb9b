"""Deploy for real: the cluster manifests in configs/ hold together, every `ecad-ray ...` command
line shipped in configs/, scripts/, the README and docs/ matches the real CLI, and the Ray Jobs
example runs against a local token-auth head on loopback."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
KUBERAY = {"RayJob", "RayCluster"}
IMAGE_CHECKOUT = "/home/ray/ecad-ray/"  # where docs/deploy.md's image puts this repository
SUBMIT_SCRIPT = CONFIGS / "ray_job_submit.sh"


# --------------------------------------------------------------------------- manifests

def _yaml_files() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*") if p.suffix in {".yaml", ".yml"})


def _documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in _yaml_files():
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def _kuberay() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _documents() if isinstance(d, dict) and d.get("kind") in KUBERAY]


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _pod_specs(spec: dict) -> list[tuple[str, dict]]:
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])]
    pods += [(f"worker group {g['groupName']}", g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_every_yaml_under_configs_parses():
    files = _yaml_files()
    assert {p.name for p in files} >= {"cluster.yaml", "demo.yaml", "rayjob.yaml", "raycluster.yaml", "storage.yaml"}
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.relative_to(ROOT)} holds no YAML document"


def test_kuberay_manifests_have_what_a_gpu_run_needs():
    manifests = _kuberay()
    assert {d["kind"] for _, d in manifests} == KUBERAY
    claims = {d["metadata"]["name"]: d for _, d in _documents()
              if isinstance(d, dict) and d.get("kind") == "PersistentVolumeClaim"}
    for path, doc in manifests:
        where = f"{path.relative_to(ROOT)} ({doc['kind']})"
        assert doc["apiVersion"] == "ray.io/v1", where
        spec = _cluster_spec(doc)
        major, minor = (int(x) for x in spec["rayVersion"].split(".")[:2])
        assert (major, minor) >= (2, 52), f"{where}: token auth (authOptions) needs Ray 2.52+"
        assert spec["authOptions"]["mode"] == "token", f"{where}: Ray's token auth must stay on"
        assert isinstance(spec["headGroupSpec"]["rayStartParams"], dict), where
        gpu_groups = []
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            assert isinstance(group["rayStartParams"], dict), where
            (worker,) = group["template"]["spec"]["containers"]
            if int(worker["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group["groupName"])
        assert gpu_groups, f"{where}: no worker group with an nvidia.com/gpu limit"

        images = set()
        for pod_name, pod in _pod_specs(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                images.add(container["image"])
                hf_home = _env(container).get("HF_HOME")
                assert hf_home, f"{where}: {pod_name} has no HF_HOME"
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert hf_home in mounts, f"{where}: {pod_name} mounts nothing at HF_HOME={hf_home}"
                volume = volumes[mounts[hf_home]]
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{where}: PVC {claim} is not defined under configs/"
                assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim} must be shared"
        assert len(images) == 1, f"{where}: head and workers must run one image, got {images}"


def test_the_rayjob_runs_a_real_generate_and_cleans_up():
    (path, job), = [(p, d) for p, d in _kuberay() if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and all(isinstance(v, str) for v in runtime_env["env_vars"].values())

    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["ecad-ray", "generate"]
    command = typer.main.get_command(_app()).commands["generate"]
    params = command.make_context("generate", args[2:]).params  # every option exists and parses

    # --num-workers asks for exactly the GPUs the worker groups have
    cluster = spec["rayClusterSpec"]
    gpus = sum(g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
               for g in cluster["workerGroupSpecs"])
    assert params["num_workers"] == gpus
    # the run folder is on a volume every pod mounts (actors write and read its embeddings store)
    out = str(params["output_dir"])
    for pod_name, pod in _pod_specs(cluster):
        mounts = [m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]]
        assert any(out.startswith(m.rstrip("/") + "/") for m in mounts), f"{pod_name} does not mount {out}"
    # inputs read from the image's checkout exist in this repository
    for name in ("config_file", "prompt_file", "schedule"):
        value = str(params[name])
        assert value.startswith(IMAGE_CHECKOUT), f"--{name}: {value}"
        assert (ROOT / value.removeprefix(IMAGE_CHECKOUT)).is_file(), f"{value} is not in the repository"


def test_cluster_launcher_config_keeps_token_auth_on_everywhere():
    launcher = yaml.safe_load((CONFIGS / "cluster.yaml").read_text())
    assert launcher["provider"]["type"] == "local"
    assert "~/.ray/auth_token" in launcher["file_mounts"]
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert any("ray[default]" in c for c in launcher["setup_commands"])


def test_the_submit_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SUBMIT_SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = SUBMIT_SCRIPT.read_text()
    assert "ray job submit" in text and "--working-dir" in text


# ------------------------------------------------------------------- command lines vs the CLI

def _app():
    from ecad_ray_cli.main import app

    return app


# `ecad-ray` (or a path to it) followed by something on the same line
_ECAD = re.compile(r"(?:^|(?<=[\s`(]))(?:[^\s`(]*/)?ecad-ray(?=[ \t]+\S)")
# what may stand before a command: nothing, a shell operator, `--` (ray job submit ... -- cmd),
# a wrapper, or VAR=value assignments
_COMMAND_START = re.compile(r"(?:^|[|;&(`]|\$\(|\s--|\bexec|\bsudo|\btime|\S+=\S*)\s*$")
_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "&", "\\"}


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join shell line continuations; keep the number of each logical line's first line."""
    out, buf, start = [], "", 0
    for number, line in lines:
        if not buf:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _snippets(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, is_code) pieces of a file that may hold command lines: markdown code blocks
    and code spans; shell and YAML lines, comments included (with their `#` taken off), and YAML
    string values (a folded RayJob entrypoint). In prose (comments, markdown outside code) an
    `ecad-ray` followed by an unknown word is a sentence, not a command."""
    text = path.read_text()
    numbered = list(enumerate(text.splitlines(), 1))
    pieces: list[tuple[int, str, bool]] = []
    if path.suffix == ".md":
        in_fence = False
        for number, line in _logical_lines(numbered):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            elif in_fence:
                pieces.append((number, line, True))
            else:
                pieces += [(number, span, True) for span in re.findall(r"`([^`]+)`", line)]
        return pieces
    comments = [(n, line.lstrip()[1:]) for n, line in numbered if line.lstrip().startswith("#")]
    code = [(n, line) for n, line in numbered if not line.lstrip().startswith("#")]
    pieces += [(n, line, False) for n, line in _logical_lines(comments)]
    pieces += [(n, line, path.suffix == ".sh") for n, line in _logical_lines(code)]
    if path.suffix in {".yaml", ".yml"}:
        for doc in yaml.safe_load_all(text):
            pieces += [(0, " ".join(s.split()), True) for s in _strings(doc) if "ecad-ray" in s]
    return pieces


def _uses(text: str) -> list[list[str]]:
    """The argument lists that follow each `ecad-ray` in a piece of text."""
    found = []
    for match in _ECAD.finditer(text):
        if not _COMMAND_START.search(text[:match.start()]):
            continue  # a name in a sentence or a command line (`kubectl get secret ecad-ray -o ...`)
        rest = text[match.end():].split("`")[0]  # an inline code span or $(...) ends at the backtick
        try:
            tokens = shlex.split(rest, comments=True)
        except ValueError:  # an unbalanced quote: a snippet cut mid-string
            tokens = rest.split()
        args = []
        for token in tokens:
            if token in _STOP:
                break
            args.append(token)
        found.append(args)
    return found


def _is_option(token: str) -> bool:
    return token.startswith("--") or (len(token) == 2 and token[0] == "-" and token[1].isalpha())


def _check(args: list[str], root, strict: bool) -> tuple[list[str], list[str]]:
    """Walk `args` down the command tree: (the command path, its problems). Every option must be
    one the command (or group) at that point has; under a group the next word must be one of its
    commands (strict) or the line is prose / a placeholder such as COMMAND (not strict)."""
    command, path, problems = root, [], []
    takes_value = False  # the previous token was an option that takes a value (a group's, too)
    for token in args:
        if _is_option(token):
            name = token.split("=", 1)[0]
            params = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if name not in params and name != "--help":
                problems.append(f"`{' '.join(['ecad-ray', *path])}` has no option {name}")
            param = params.get(name)
            takes_value = "=" not in token and param is not None and not getattr(param, "is_flag", False)
        elif takes_value:
            takes_value = False
        elif hasattr(command, "commands"):  # a group (typer vendors its own click)
            if token in command.commands:
                command = command.commands[token]
                path.append(token)
            elif strict and re.fullmatch(r"[a-z][a-z0-9-]*", token):
                problems.append(f"`{' '.join(['ecad-ray', *path])}` has no command {token}")
                return path, problems
            else:
                return path, problems
        # else: an argument or an option's value
    return path, problems


def _command_lines() -> list[tuple[str, list[str], list[str]]]:
    root = typer.main.get_command(_app())
    files = [p for p in CONFIGS.rglob("*") if p.suffix in {".yaml", ".yml", ".sh"}]
    files += sorted((ROOT / "scripts").glob("*.sh")) + [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    seen = []
    for path in files:
        for number, text, is_code in _snippets(path):
            for args in _uses(text):
                cmd, problems = _check(args, root, strict=is_code)
                if cmd or problems:
                    seen.append((f"{path.relative_to(ROOT)}:{number}", cmd, problems))
    return seen


def test_every_ecad_ray_command_line_in_configs_scripts_and_docs_matches_the_cli():
    seen = _command_lines()
    problems = [f"{where}: {p}" for where, _, found in seen for p in found]
    assert problems == []
    where_seen = {w.split(":")[0] for w, _, _ in seen}
    # the deploy files are really read (a broken extractor would find nothing and pass)
    assert {"configs/kuberay/rayjob.yaml", "configs/kuberay/raycluster.yaml", "configs/cluster.yaml",
            "configs/ray_job_submit.sh", "docs/deploy.md", "README.md"} <= where_seen
    runner = CliRunner()
    for path in sorted({tuple(cmd) for _, cmd, _ in seen}):
        done = runner.invoke(_app(), [*path, "--help"])
        assert done.exit_code == 0, (path, done.output)


def test_a_renamed_option_or_command_is_caught():
    root = typer.main.get_command(_app())
    for text, expected in [
        ("ecad-ray generate --model demo --output-folder runs/x", "has no option --output-folder"),
        ("ecad-ray schedule make fora --interval 3 --gap 2", "has no option --gap"),
        ("ecad-ray generat --model demo", "has no command generat"),
    ]:
        (args,) = _uses(text)
        _, problems = _check(args, root, strict=True)
        assert len(problems) == 1 and expected in problems[0], (text, problems)
    (args,) = _uses("ecad-ray --verbose generate -p 'a red circle' --num-workers=2")
    assert _check(args, root, strict=True) == (["generate"], [])
    assert _uses("image: registry/ecad-ray:0.1 and ecad-ray-venv/bin") == []
    assert _uses("kubectl get secret ecad-ray -o jsonpath=x; with ecad-ray installed") == []
    assert _uses("ray job submit --working-dir . -- ecad-ray generate --steps 2") == [["generate", "--steps", "2"]]
    assert _uses("HF_HOME=/x .venv/bin/ecad-ray demo score runs/x") == [["demo", "score", "runs/x"]]


# ------------------------------------------------------------------------ Ray Jobs, for real

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _job_server_missing(env: dict) -> str | None:
    """Why a Ray job server cannot start here, or None (Ray's own check: ray[default] installed)."""
    done = subprocess.run([sys.executable, "-c", "import ray.dashboard.optional_deps"], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return f"Ray Jobs need the dashboard's job server, i.e. ray[default]: `import ray.dashboard.optional_deps` failed: {last}"


def _http(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def _head_family(head: subprocess.Popen, tmp: str) -> list:
    """This test's Ray processes: the `ray start` process, every process whose command line names
    the head's temp dir (GCS, raylet, dashboard, ...), and all their children (the workers)."""
    import psutil

    roots = [p for p in psutil.process_iter(["cmdline"]) if tmp in " ".join(p.info["cmdline"] or [])]
    try:
        roots.append(psutil.Process(head.pid))
    except psutil.NoSuchProcess:
        pass
    family = {}
    for proc in roots:
        family[proc.pid] = proc
        try:
            family.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(family.values())


def _stop_head(head: subprocess.Popen, tmp: str) -> None:
    """Stop this test's head only, by process id (never `ray stop`, which stops every Ray on the
    machine): SIGTERM to `ray start --block`, which shuts its processes down; what is still
    running after a grace period is terminated, then killed."""
    import psutil

    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(5)  # measured: after a job, its raylet and GCS outlast 10 s of this
        except subprocess.TimeoutExpired:
            pass
    left = [p for p in _head_family(head, tmp) if p.pid != os.getpid()]
    for proc in left:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    if head.poll() is None:
        head.kill()
    head.wait(5)


@pytest.mark.slow  # 54-70 s measured on the 2-core machine while other jobs ran (run with -m slow)
def test_the_ray_jobs_example_runs_on_a_local_token_auth_head():
    """configs/ray_job_submit.sh, as a user runs it, against a head on 127.0.0.1 with token auth:
    2 demo prompts x 1 image, 2 steps; then the images and results.parquet are there. Needs
    ray[default] (the dashboard's job server); skipped with the import error where it is missing."""
    import psutil
    import pyarrow.parquet as pq

    tmp = tempfile.mkdtemp(prefix="ecj", dir="/tmp")  # short: Ray's unix socket paths live under it
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=f"{tmp}/home",  # the token goes to <HOME>/.ray/auth_token, not the user's
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        RAY_AUTH_MODE="token",  # what the cluster and the client both read (the script exports it too)
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every Ray server binds 127.0.0.1
        RAY_USAGE_STATS_ENABLED="0",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    os.makedirs(env["HOME"])
    reason = _job_server_missing(env)
    if reason:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(reason)

    started = time.monotonic()
    subprocess.run([f"{bin_dir}/ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    token = Path(env["HOME"], ".ray", "auth_token").read_text().strip()
    gcs, dashboard, client, agent = _free_ports(4)
    with open(f"{tmp}/head.log", "w") as log:
        head = subprocess.Popen(
            [f"{bin_dir}/ray", "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
             f"--temp-dir={tmp}/ray", "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while _http_or_none(f"{url}/api/version") is None:
            assert head.poll() is None, Path(f"{tmp}/head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the dashboard did not come up in 120 s"
            time.sleep(0.5)
        head_up = time.monotonic() - started
        # token auth is on: no token, no jobs API
        assert _http(f"{url}/api/jobs/") == 401
        assert _http(f"{url}/api/jobs/", token) == 200
        # and every server of this head listens on loopback only
        family = {p.pid for p in _head_family(head, tmp)}
        listening = {c.laddr.ip.removeprefix("::ffff:") for c in psutil.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in family}
        assert listening and listening <= {"127.0.0.1"}, listening

        work = Path(tmp, "wd")
        (work / "prompts").mkdir(parents=True)
        (work / "prompts" / "two.txt").write_text("a small red circle above a blue square\n"
                                                  "a large green triangle on a plain background\n")
        out = Path(tmp, "out", "run")
        submit_env = dict(env, RAY_ADDRESS=url, MODEL="demo", PROMPT_FILE="prompts/two.txt", OUTPUT_DIR=str(out),
                          NUM_WORKERS="1")
        submitted = time.monotonic()
        done = subprocess.run(["bash", str(SUBMIT_SCRIPT), "--steps", "2", "--batch-size", "2"], cwd=work,
                              env=submit_env, capture_output=True, text=True, timeout=300)
        job_seconds = time.monotonic() - submitted
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "succeeded" in done.stdout + done.stderr
        images = sorted((out / "images").glob("*.png"))
        assert len(images) == 2, images
        table = pq.read_table(out / "results.parquet")
        assert table.num_rows == 2
        print(f"\nhead up in {head_up:.1f} s; Ray Job (submit -> succeeded) {job_seconds:.1f} s")
    finally:
        stopping = time.monotonic()
        _stop_head(head, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"head stopped in {time.monotonic() - stopping:.1f} s; {time.monotonic() - started:.1f} s in all")


def _http_or_none(url: str) -> int | None:
    try:
        return _http(url)
    except (urllib.error.URLError, ConnectionError, OSError):
        return None
