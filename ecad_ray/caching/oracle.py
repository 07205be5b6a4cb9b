"""A naive, obviously-right implementation of schedule semantics, for tests to compare against.

It shares no code with the hooks: each block's forward is written out again from the
diffusers maths (PixArt `BasicTransformerBlock` with adaLN-single, FLUX double and single
blocks), and every sub-layer call goes through `_Store.sublayer`, which keeps every output
forever (ECAD's way, no liveness) and looks the step up in the schedule directly. TGATE after
the gate step runs the transformer on the cond half and returns that twice.
Slow and memory-hungry on purpose; never used for generation.
"""

from __future__ import annotations

import contextlib
import types

import torch

from ecad_ray.caching.schedule import Schedule


class _Store:
    """Outputs of every (block, sub-layer) at the last step each was computed, plus the step."""

    def __init__(self, schedule: Schedule, cfg: bool):
        self.schedule = schedule
        self.cfg = cfg
        self.step = 0
        self.half = False  # this call runs the cond half only (TGATE after the gate step)
        self.current_batch = 0  # samples in this call
        self.outputs: dict[tuple[str, str], object] = {}

    def sublayer(self, block: str, component: str, run):
        """Compute via `run()` or return the stored output, as the schedule says for this step."""
        key = (block, component)
        if self.schedule.recompute(self.step, block, component) or key not in self.outputs:
            self.outputs[key] = run()
            return self.outputs[key]
        stored = self.outputs[key]
        if self.half and _batch(stored) != self.current_batch:
            first, second = _split(stored)
            if component == "attn2" and block in self.schedule.tgate_blocks():
                stored = _zip(first, second, lambda a, b: (a + b) / 2)
            else:
                stored = second
            self.outputs[key] = stored
        return stored


def _batch(value) -> int:
    return value.shape[0] if isinstance(value, torch.Tensor) else value[0].shape[0]


def _split(value):
    if isinstance(value, torch.Tensor):
        h = value.shape[0] // 2
        return value[:h], value[h:]
    halves = [_split(v) for v in value]
    return tuple(a for a, _ in halves), tuple(b for _, b in halves)


def _zip(a, b, fn):
    if isinstance(a, torch.Tensor):
        return fn(a, b)
    return tuple(fn(x, y) for x, y in zip(a, b))


def _pixart_block(store: _Store, key: str):
    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, timestep=None, cross_attention_kwargs=None,
                class_labels=None, added_cond_kwargs=None):
        b = hidden_states.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(b, 6, -1)
        ).chunk(6, dim=1)
        x = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        a = store.sublayer(key, "attn1", lambda: self.attn1(x, encoder_hidden_states=None, attention_mask=attention_mask))
        hidden_states = gate_msa * a + hidden_states
        h = hidden_states
        a = store.sublayer(key, "attn2", lambda: self.attn2(
            h, encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask))
        hidden_states = a + hidden_states
        x = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        f = store.sublayer(key, "ff", lambda: self.ff(x))
        return gate_mlp * f + hidden_states

    return forward


def _flux_double(store: _Store, key: str):
    def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                joint_attention_kwargs=None):
        x, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)
        c, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(encoder_hidden_states, emb=temb)
        attn, ctx_attn = store.sublayer(key, "full_attn", lambda: self.attn(
            hidden_states=x, encoder_hidden_states=c, image_rotary_emb=image_rotary_emb))
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * attn
        x = self.norm2(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        f = store.sublayer(key, "full_ff", lambda: self.ff(x))
        hidden_states = hidden_states + gate_mlp.unsqueeze(1) * f
        encoder_hidden_states = encoder_hidden_states + c_gate_msa.unsqueeze(1) * ctx_attn
        c = self.norm2_context(encoder_hidden_states) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        fc = store.sublayer(key, "full_ff_context", lambda: self.ff_context(c))
        encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * fc
        return encoder_hidden_states, hidden_states

    return forward


def _flux_single(store: _Store, key: str):
    def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                joint_attention_kwargs=None):
        text_len = encoder_hidden_states.shape[1]
        x_all = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        x, gate = self.norm(x_all, emb=temb)
        mlp = self.act_mlp(store.sublayer(key, "single_proj_mlp", lambda: self.proj_mlp(x)))
        attn = store.sublayer(key, "single_attn", lambda: self.attn(hidden_states=x, image_rotary_emb=image_rotary_emb))
        joined = torch.cat([attn, mlp], dim=2)
        out = x_all + gate.unsqueeze(1) * store.sublayer(key, "single_proj_out", lambda: self.proj_out(joined))
        return out[:, :text_len], out[:, text_len:]

    return forward


@contextlib.contextmanager
def oracle_schedule(transformer, schedule: Schedule, cfg: bool):
    """Within the context, `transformer` follows `schedule` through the naive block forwards.

    Step i is the i-th transformer call inside the context; `cfg` says whether calls carry a
    `[uncond, cond]` batch (used by TGATE only).
    """
    store = _Store(schedule, cfg)
    gate = schedule.tgate_gate_step
    patched = []
    if hasattr(transformer, "single_transformer_blocks"):
        for i, blk in enumerate(transformer.transformer_blocks):
            patched.append((blk, _flux_double(store, str(i))))
        for i, blk in enumerate(transformer.single_transformer_blocks):
            patched.append((blk, _flux_single(store, f"single_{i}")))
    else:
        for i, blk in enumerate(transformer.transformer_blocks):
            patched.append((blk, _pixart_block(store, str(i))))
    for blk, fn in patched:
        blk.forward = types.MethodType(fn, blk)
    stock_forward = transformer.forward

    def forward(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        store.half = cfg and gate is not None and store.step >= gate
        store.current_batch = hidden.shape[0] // 2 if store.half else hidden.shape[0]
        if store.half:
            half = hidden.shape[0] // 2
            cut = lambda v: v[half:] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == 2 * half else v  # noqa: E731
            args = tuple(cut(a) for a in args)
            kwargs = {k: ({kk: cut(vv) for kk, vv in v.items()} if isinstance(v, dict) else cut(v))
                      for k, v in kwargs.items()}
            out = stock_forward(*args, **kwargs)
            out = (torch.cat([out[0], out[0]]),) if isinstance(out, tuple) else type(out)(
                sample=torch.cat([out.sample, out.sample]))
        else:
            out = stock_forward(*args, **kwargs)
        store.step += 1
        return out

    transformer.forward = forward
    try:
        yield store
    finally:
        del transformer.forward
        for blk, _ in patched:
            del blk.forward
