"""A policy on disk: `policy.safetensors` (weights, and the optimizer's moments for `--resume`)
plus `policy.json` (config, step, episodes, curves) beside it.

Both files are written atomically, weights first; the JSON names the step the weights are
from, so an interrupted save leaves the previous checkpoint readable. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ecad_ray.atomic import write_bytes_atomic, write_text_atomic
from ecad_ray.errors import UserError
from ecad_ray.var.rl.policy import Policy, PolicyConfig

OPTIM_PREFIX = "optim."
ASSETS = Path(__file__).resolve().parents[1] / "assets"
# `rl:<demo>`: the policy shipped for each shipped demo VAR, once one is trained and exported there
SHIPPED = {name: ASSETS / f"{name}-rl.safetensors" for name in ("demo-var", "demo-var-digits")}
SHIP_SUMMARY_KEYS = ("update", "episodes", "mean_reward", "fidelity", "flops_share")  # the last curve row, shipped


def resolve(weights: str | Path, option: str = "--controller") -> Path:
    """A policy file, or the name of a shipped one (`rl:demo-var-digits`: the digits demo's policy)."""
    name = str(weights)
    if name not in SHIPPED:
        return Path(weights)
    if not SHIPPED[name].exists():
        raise UserError(f"{option} rl:{name}: no shipped policy for {name} yet; train one with "
                        f"`ecad-ray var rl train --model {name} -o D` and use rl:D/policy.safetensors (docs/rl.md)")
    return SHIPPED[name]


def meta_path(weights: str | Path) -> Path:
    """`D/policy.safetensors` -> `D/policy.json`."""
    return Path(weights).with_suffix(".json")


def save_policy(weights: str | Path, policy: Policy, meta: dict[str, Any],
                optimizer: torch.optim.Optimizer | None = None) -> None:
    """Weights (+ optimizer moments) then the JSON, each atomically."""
    tensors = {k: v.detach().contiguous() for k, v in policy.state_dict().items()}
    groups = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for name, value in st.items():
                tensors[f"{OPTIM_PREFIX}{pid}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
        groups = sd["param_groups"]
    step = str(meta.get("step", 0))
    write_bytes_atomic(weights, save_tensors(tensors, metadata={"step": step}))
    doc = {"config": policy.config.to_dict(), **meta}
    if groups is not None:
        doc["optimizer_param_groups"] = groups
    write_text_atomic(meta_path(weights), json.dumps(doc, indent=1))


def read_meta(weights: str | Path, option: str = "--controller") -> dict[str, Any]:
    """The JSON beside a policy file; one-line errors when either file is missing or broken."""
    weights = resolve(weights, option)
    if not weights.exists():
        raise UserError(f"{option} rl:{weights}: policy file not found")
    meta = meta_path(weights)
    if not meta.exists():
        raise UserError(f"{option} rl:{weights}: {meta.name} (the policy's config) is missing beside it")
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{option} rl:{weights}: {meta.name} is not valid JSON ({err})") from None


def load_policy(weights: str | Path, option: str = "--controller") -> tuple[Policy, dict[str, Any], dict[str, torch.Tensor]]:
    """(policy in eval mode, its JSON, the optimizer tensors) from `weights`."""
    doc = read_meta(weights, option)
    if "fingerprint" not in doc.get("config", {}):
        raise UserError(f"{option} rl:{weights}: {meta_path(resolve(weights)).name} does not say which model the "
                        "policy was trained for (no config fingerprint: saved by an older version); retrain it")
    try:
        config = PolicyConfig.from_dict(doc["config"])
        tensors = load_tensors(resolve(weights).read_bytes())
    except Exception as err:  # a file of another kind, or a JSON of another version
        raise UserError(f"{option} rl:{weights}: not a pruning policy ({err})") from None
    policy = Policy(config)
    own = {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}
    try:
        policy.load_state_dict(own)
    except RuntimeError as err:
        raise UserError(f"{option} rl:{weights}: weights do not match policy.json ({str(err).splitlines()[0]})") from None
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)}
    return policy.eval(), doc, optim


def export_policy(weights: str | Path, dest: str | Path) -> Path:
    """The shipping form of a trained policy: its weights (no optimizer moments) and a JSON with
    its config, step, training config and last curve row (the full curves stay in the training
    folder's curves.parquet). A few tens of KB; `rl:` loads it like any policy."""
    policy, doc, _ = load_policy(weights, "POLICY")
    curves = doc.get("curves") or []
    last = {k: curves[-1][k] for k in SHIP_SUMMARY_KEYS if k in curves[-1]} if curves else {}
    meta = {"step": doc.get("step", 0), "episodes": doc.get("episodes", 0),
            "train_config": doc.get("train_config", {}), "final": last}
    dest = Path(dest)
    if dest.suffix != ".safetensors":
        raise UserError(f"--output {dest}: must end in .safetensors (the JSON goes beside it)")
    save_policy(dest, policy, meta)
    return dest


def restore_optimizer(optimizer: torch.optim.Optimizer, doc: dict[str, Any], optim: dict[str, torch.Tensor]) -> None:
    """Put saved Adam moments back (a resumed run continues where it stopped)."""
    if not optim or not doc.get("optimizer_param_groups"):
        return
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in optim.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer_param_groups"]})


def policy_controller(weights: str | Path, pipeline, budget: float | None = None, act=None,
                      option: str = "--controller"):
    """A deterministic `PolicyController` for `pipeline`'s model from a policy file.

    `act` replaces the in-process policy call (the controller actor's proxy does this)."""
    from ecad_ray.var.rl.policy import PolicyController
    from ecad_ray.var.rl.state import ModelFacts

    policy, _, _ = load_policy(weights, option)
    facts = ModelFacts.of(pipeline)
    policy.config.check_model(facts, f"{option} rl:{weights}")
    return PolicyController(policy.config, facts, act or policy.act, budget, name=f"rl:{weights}")
