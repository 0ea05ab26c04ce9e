#!/usr/bin/env python3
"""Reference LoRA training runs with Hugging Face PEFT, for trit's PEFT parity test.

Loads the random BitNet b1.58 checkpoint tests/data/hf_ref/relu2_tied (written by
tools/hf_reference.py; transformers runs it as W1.58A8 through an online AutoBitLinear with
straight-through gradients) in float32 on the CPU, wraps it with peft's LoRA (r 4, alpha 8, all
seven linear layers of each block, no dropout, no bias) and trains the adapter for 20 steps on
one fixed batch of two sequences with torch.optim.AdamW (foreach=False) and clip_grad_norm_.

The loss is computed from the logits by hand, exactly as trit defines it:
    loss = sum_{b,t} mask[b,t] * nll[b,t] / sum_{b,t} mask[b,t]
with nll[b,t] = -log_softmax(logits[b,t])[targets[b,t]], targets = the next token.

Three cases, one folder each under --out (default tests/data/peft_ref):
  zero_b          PEFT's own initialisation: A kaiming-uniform, B = 0 (A's gradient is zero at
                  step 1)
  random_b        the same A, B set to N(0, 0.02^2) after get_peft_model, so both get gradients
                  at once
  random_b_float  random_b with float activations: transformers' ActQuant (the per-token int8
                  activation quantiser) replaced by the identity, weights still ternary; trit's
                  --act-quant none. Without the int8 rounding the run is smooth, so it pins the
                  training arithmetic down far more tightly than the W1.58A8 cases can.

Each folder holds
  initial/        the adapter before training (model.save_pretrained: adapter_config.json and
                  adapter_model.safetensors, float32)
  final/          the adapter after the 20 steps (same format)
  ids.json        {"tokens": [[...], [...]], "targets": [[...], [...]], "mask": [[...], [...]]}
  losses.json     20 floats: the loss of each step, computed before that step's update
                  (info.json's final_loss is the loss of the final adapter)
  info.json       versions, settings, per-step gradient norms (before clipping), per-tensor
                  gradient norms of step 1 (GGUF names), and a noise-floor yardstick: the same
                  run repeated from an initial adapter scaled by 1 + 1e-6 * N(0, 1) per element
                  (float32-rounding-sized), and how far its losses and final adapter move.

W1.58A8 rounds every activation entering a linear layer to int8, so a float32 rounding
difference can flip one rounding and move the result by far more than 1 ulp; the yardstick
measures how far two equally correct float32 implementations can drift apart.

Needs torch, transformers (written against 5.17), peft, safetensors, numpy. Everything runs on
the CPU in float32; it ran on the GPU machine because that is where these are installed:
  PYTHONUNBUFFERED=1 python3 tools/peft_reference.py --out tests/data/peft_ref
"""

import os

# transformers decorates the BitNet quantisers with torch.compile; run them eagerly.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import argparse
import json
import re
import shutil
import sys
import tarfile

import numpy as np
import torch

import peft
import transformers
from peft import LoraConfig, get_peft_model
import transformers.integrations.bitnet as hf_bitnet
from transformers import BitNetForCausalLM

BASE = "tests/data/hf_ref/relu2_tied"
RANK = 4
ALPHA = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
N_SEQ = 2
SEQ_LEN = 24
VOCAB = 384
MASKED_PREFIX = 6  # the first 6 targets of the first sequence carry no loss
STEPS = 20
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.01
MAX_NORM = 1.0
B_STD = 0.02
PERTURB = 1e-6

GGUF_OF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
PARAM_RE = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.default\.weight$")


class _NoActQuant:
    """Stands in for transformers' ActQuant: float activations."""

    @staticmethod
    def apply(x):
        return x


_ACT_QUANT = hf_bitnet.ActQuant


def set_act_quant(on):
    # AutoBitLinear.forward looks ActQuant up in its module at each call.
    hf_bitnet.ActQuant = _ACT_QUANT if on else _NoActQuant


def log(*args):
    print(*args, flush=True)


def gguf_name(param_name):
    """base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight ->
    blk.0.attn_q.weight.lora_a"""
    m = PARAM_RE.search(param_name)
    if m is None:
        raise ValueError(f"unexpected trainable parameter {param_name}")
    return f"blk.{m.group(1)}.{GGUF_OF[m.group(2)]}.weight.lora_{m.group(3).lower()}"


def make_batch():
    rng = np.random.RandomState(4321)
    ids = rng.randint(3, VOCAB, size=(N_SEQ, SEQ_LEN + 1))
    ids[:, 0] = 1  # bos
    tokens = ids[:, :-1].tolist()
    targets = ids[:, 1:].tolist()
    mask = [[1.0] * SEQ_LEN for _ in range(N_SEQ)]
    for t in range(MASKED_PREFIX):
        mask[0][t] = 0.0
    return tokens, targets, mask


def masked_loss(logits, targets, mask):
    """sum(mask * nll) / sum(mask) in float32, from (B, T, V) logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (nll * mask).sum() / mask.sum()


def lora_params(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def get_state(model):
    return {n: p.detach().clone() for n, p in lora_params(model)}


def set_state(model, state):
    with torch.no_grad():
        for n, p in lora_params(model):
            p.copy_(state[n])


def save_adapter(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    readme = os.path.join(folder, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    names = sorted(os.listdir(folder))
    if names != ["adapter_config.json", "adapter_model.safetensors"]:
        raise RuntimeError(f"{folder}: unexpected files {names}")


def train(model, init_state, tokens, targets, mask):
    """20 steps from init_state; returns per-step losses, gradient norms, the step-1 per-tensor
    gradient norms and the final state."""
    set_state(model, init_state)
    named = lora_params(model)
    params = [p for _, p in named]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                            foreach=False)
    losses, gnorms, step1 = [], [], {}
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=tokens, use_cache=False)
        loss = masked_loss(out.logits, targets, mask)
        loss.backward()
        for n, p in named:
            if p.grad is None:
                raise RuntimeError(f"step {step + 1}: {n} got no gradient")
        if step == 0:
            step1 = {gguf_name(n): float(p.grad.norm()) for n, p in named}
        gn = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        opt.step()
        losses.append(float(loss.item()))
        gnorms.append(float(gn))
        log(f"  step {step + 1:2d}: loss {losses[-1]:.7f}  grad norm {gnorms[-1]:.6f}")
    return losses, gnorms, step1, get_state(model)


def rel_l2(a, b):
    d = float((a.double() - b.double()).norm())
    n = float(b.double().norm())
    return d / n if n > 0 else d


def run_case(name, model, init_state, batch, out_dir, gen, act_quant):
    tokens, targets, mask = batch
    set_act_quant(act_quant)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder)
    t_tok = torch.tensor(tokens, dtype=torch.long)
    t_tgt = torch.tensor(targets, dtype=torch.long)
    t_mask = torch.tensor(mask, dtype=torch.float32)

    set_state(model, init_state)
    save_adapter(model, os.path.join(folder, "initial"))
    log(f"{name}: training")
    losses, gnorms, step1, final = train(model, init_state, t_tok, t_tgt, t_mask)
    set_state(model, final)
    save_adapter(model, os.path.join(folder, "final"))
    with torch.no_grad():
        final_loss = float(masked_loss(model(input_ids=t_tok, use_cache=False).logits, t_tgt,
                                       t_mask).item())
    log(f"{name}: loss of the final adapter {final_loss:.7f}")

    # Noise floor: the same run from an initial adapter perturbed at float32-rounding level.
    pert = {n: (t * (1.0 + PERTURB * torch.randn(t.shape, generator=gen))).float()
            for n, t in init_state.items()}
    log(f"{name}: yardstick run (initial adapter * (1 + {PERTURB:g} N(0, 1)))")
    p_losses, _, _, p_final = train(model, pert, t_tok, t_tgt, t_mask)
    loss_rel = [abs(a - b) / abs(b) for a, b in zip(p_losses, losses)]
    fin = {gguf_name(n): rel_l2(p_final[n], final[n]) for n in final}
    yard = {
        "relative_perturbation": PERTURB,
        "max_loss_rel_diff": max(loss_rel),
        "loss_rel_diff": loss_rel,
        "max_final_rel_l2_lora_a": max(v for k, v in fin.items() if k.endswith("lora_a")),
        "max_final_rel_l2_lora_b": max(v for k, v in fin.items() if k.endswith("lora_b")),
        "final_rel_l2": fin,
    }
    log(f"{name}: yardstick: max loss rel diff {yard['max_loss_rel_diff']:.3e}, final rel L2 "
        f"A {yard['max_final_rel_l2_lora_a']:.3e}, B {yard['max_final_rel_l2_lora_b']:.3e}")

    with open(os.path.join(folder, "ids.json"), "w") as f:
        json.dump({"tokens": tokens, "targets": targets, "mask": mask}, f)
    with open(os.path.join(folder, "losses.json"), "w") as f:
        json.dump(losses, f, indent=1)
    moved = {gguf_name(n): rel_l2(final[n], init_state[n]) for n in final
             if float(init_state[n].norm()) > 0}
    info = {
        "case": name,
        "base": BASE,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "settings": {
            "rank": RANK, "lora_alpha": ALPHA, "scaling": ALPHA / RANK, "target_modules": TARGETS,
            "lora_dropout": 0.0, "bias": "none", "dtype": "float32", "device": "cpu",
            "model_mode": "eval", "steps": STEPS,
            "activations": "int8 per token (W1.58A8)" if act_quant else "float (ActQuant disabled)", "optimizer": "torch.optim.AdamW(foreach=False)",
            "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
            "clip_grad_norm_max": MAX_NORM,
            "loss": "sum(mask * nll) / sum(mask) over the whole batch, float32",
            "initial_b": "zero (PEFT default)" if name == "zero_b" else f"N(0, {B_STD}^2)",
            "order": "zero_grad, forward, backward, clip_grad_norm_, AdamW.step",
        },
        "losses": losses,
        "final_loss": final_loss,
        "grad_norms_before_clip": gnorms,
        "step1_grad_norms": step1,
        "final_vs_initial_rel_l2": moved,
        "yardstick": yard,
    }
    with open(os.path.join(folder, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return folder


def folder_bytes(folder):
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/peft_ref")
    ap.add_argument("--tar", default="", help="also write a .tar.gz of --out here")
    args = ap.parse_args()

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.set_float32_matmul_precision("highest")

    model = BitNetForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")
    model.to("cpu")
    model.eval()
    q = model.model.layers[0].self_attn.q_proj
    log(f"base q_proj: {type(q).__name__}, online_quant={getattr(q, 'online_quant', None)}")
    if type(q).__name__ != "AutoBitLinear" or not getattr(q, "online_quant", False):
        sys.exit(f"expected an online AutoBitLinear, got {q!r}")

    torch.manual_seed(20251125)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.eval()  # no dropout anywhere (lora_dropout is 0 as well)
    lq = model.base_model.model.model.layers[0].self_attn.q_proj
    log(f"wrapped q_proj: {type(lq).__module__}.{type(lq).__name__}, scaling {lq.scaling}, "
        f"base {type(lq.base_layer).__name__}")
    try:
        import inspect

        log("peft lora.Linear.forward:\n" + inspect.getsource(type(lq).forward))
    except Exception as e:  # noqa: BLE001
        log(f"could not show peft's forward: {e!r}")
    named = lora_params(model)
    log(f"{len(named)} trainable tensors, {sum(p.numel() for _, p in named)} values")
    if len(named) != 2 * len(TARGETS) * model.config.num_hidden_layers:
        sys.exit("unexpected number of trainable tensors")
    for n, p in named:
        if p.dtype != torch.float32:
            sys.exit(f"{n} is {p.dtype}")
    init_zero = get_state(model)
    if any(float(t.abs().max()) != 0 for n, t in init_zero.items() if ".lora_B." in n):
        sys.exit("PEFT did not initialise B to zero")

    gen = torch.Generator().manual_seed(7)
    init_rand = {n: (t if ".lora_A." in n else torch.randn(t.shape, generator=gen) * B_STD).float()
                 for n, t in init_zero.items()}

    batch = make_batch()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    pgen = torch.Generator().manual_seed(99)
    # Float activations must change the loss (the ActQuant swap took effect).
    t_tok = torch.tensor(batch[0], dtype=torch.long)
    losses = []
    for on in (True, False):
        set_act_quant(on)
        with torch.no_grad():
            logits = model(input_ids=t_tok, use_cache=False).logits
        losses.append(float(masked_loss(logits, torch.tensor(batch[1]), torch.tensor(batch[2])).item()))
    log(f"base loss: W1.58A8 {losses[0]:.7f}, float activations {losses[1]:.7f}")
    if losses[0] == losses[1]:
        sys.exit("disabling ActQuant did not change the loss")
    for name, init, aq in (("zero_b", init_zero, True), ("random_b", init_rand, True),
                           ("random_b_float", init_rand, False)):
        folder = run_case(name, model, init, batch, args.out, pgen, aq)
        log(f"{name}: {folder_bytes(folder)} bytes")
    log(f"total: {folder_bytes(args.out)} bytes")

    if args.tar:
        with tarfile.open(args.tar, "w:gz") as tf:
            tf.add(args.out, arcname="peft_ref")
        log(f"wrote {args.tar} ({os.path.getsize(args.tar)} bytes)")


if __name__ == "__main__":
    main()
