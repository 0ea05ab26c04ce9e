#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for trit's `convert` and `logits` tests.

Builds small random BitNet b1.58 checkpoints with transformers' BitNetForCausalLM, lets
transformers compute W1.58A8 logits for a fixed sequence of token ids, and writes one folder
per case under --out (default tests/data/hf_ref):

  relu2_tied   2B4T layout: squared ReLU, tied embeddings, f32 master weights, one file
  silu_untied  1bitLLM style: SiLU, separate lm_head, bf16 master weights in two shards
  packed       relu2_tied's weights in the offline packed layout of the 2B4T checkpoint
               (uint8 codes of shape (out/4, in) plus a one-element weight_scale)
  llama_packed Falcon3 1.58-bit layout: LlamaForCausalLM (no sub-norms, SiLU, GQA, separate
               lm_head) with quantization_config {"quant_method": "bitnet"} only, so
               transformers runs BitLinear on packed codes and an inverse weight_scale
  llama_online Llama-architecture with float master weights and AutoBitLinear online
               quantisation, tied embeddings
  odd_widths   the 1bitLLM bitnet_b1_58-3B shape in small: hidden 320, feed-forward 864
               (neither a multiple of 256), SiLU, no GQA, computed by transformers' BitNet
               model and written with 1bitLLM's names and config (BitnetForCausalLM,
               inner_attn_ln / ffn_layernorm, no quantization_config)

Each folder holds config.json, the safetensors file(s) (+ index), ids.txt (comma separated),
logits.f32 (raw little-endian float32, n_tokens x n_vocab, row-major), logits_float.f32 (the
same from the script's float64 forward pass with float activations, which transformers has no
mode for; that pass agrees with transformers to ~1e-6 under W1.58A8) and info.json.

The script also settles what `weight_scale` means in the packed layout by loading variants
of the packed model through transformers and comparing their logits with the float model,
checks transformers' float32 logits against an independent float64 implementation, and
records how far the logits move under float32-rounding-sized perturbations (info.json,
perturbation_rel_err): W1.58A8 rounds activations to int8, and one rounding that flips can
spread through later layers. The weights are built so that trit's GGUF types hold them exactly
(see grid_linear), so a correct forward pass should agree to about 1e-6.

Needs torch, transformers (written against 5.17), safetensors, numpy. Logits are computed on
the CPU in float32, so they do not depend on TF32 or GPU kernels; it ran on the GPU machine
because that is where transformers is installed:
  PYTHONUNBUFFERED=1 python3 tools/hf_reference.py --out tests/data/hf_ref
"""

import os

# transformers decorates several BitNet helpers with torch.compile; eager mode is what we want
# for reference numbers (and it avoids compiling on the reference machine).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import traceback

import numpy as np
import torch

import transformers
from safetensors.torch import save_file
from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM

HIDDEN = 256
INTERMEDIATE = 512
LAYERS = 2
HEADS = 4
KV_HEADS = 2
VOCAB = 384
EPS = 1e-5
N_TOKENS = 24
LINEAR_SUFFIXES = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def log(*args):
    print(*args, flush=True)


def is_linear(name):
    return name.startswith("model.layers.") and name.endswith(LINEAR_SUFFIXES)


def quant_config(linear_class, mode):
    return {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": mode}


def make_config(act, tied, theta, llama=False, **shape):
    try:
        cfg = _make_config(act, tied, theta, llama, shape, rope_theta=theta)
    except TypeError:  # a transformers that only takes rope_parameters
        cfg = _make_config(act, tied, theta, llama, shape,
                           rope_parameters={"rope_type": "default", "rope_theta": theta})
    # transformers 5 keeps rope_theta inside rope_parameters; set both spellings.
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = theta
    try:
        cfg.rope_theta = theta
    except Exception:  # noqa: BLE001
        pass
    cfg.architectures = ["LlamaForCausalLM" if llama else "BitNetForCausalLM"]
    return cfg


def _make_config(act, tied, theta, llama, shape, **rope):
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=shape.get("hidden", HIDDEN),
        intermediate_size=shape.get("intermediate", INTERMEDIATE),
        num_hidden_layers=LAYERS,
        num_attention_heads=shape.get("heads", HEADS),
        num_key_value_heads=shape.get("kv_heads", KV_HEADS),
        hidden_act=act,
        max_position_embeddings=512,
        rms_norm_eps=EPS,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        **rope,
    )
    if llama:
        return LlamaConfig(attention_bias=False, mlp_bias=False, **kw)
    return BitNetConfig(**kw)


def is_llama(cfg):
    return isinstance(cfg, LlamaConfig)


def model_class(cfg):
    return LlamaForCausalLM if is_llama(cfg) else BitNetForCausalLM


def config_dict(cfg, qcfg):
    d = cfg.to_dict()
    if qcfg is None:
        d.pop("quantization_config", None)
    else:
        d["quantization_config"] = qcfg
    d["architectures"] = ["LlamaForCausalLM" if is_llama(cfg) else "BitNetForCausalLM"]
    d["model_type"] = "llama" if is_llama(cfg) else "bitnet"
    # Spell rope_theta at the top level too, as pre-5 configs (and the 2B4T one) do.
    rp = d.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp:
        d.setdefault("rope_theta", rp["rope_theta"])
    return d


def grid_linear(shape, gen):
    """A linear weight whose absmean ternarisation every implementation computes exactly.

    Values are k * 2^-10 * c with integer k ~ N(0, 20) and c in {1/2, 1, 2} (per tensor); the
    element count is a power of two and sum |k| is nudged to exactly 16 n, so mean|W| is exactly
    2^-6 * c in float32 whatever the order of summation, 1 / mean|W| is exact, the scale is exact
    in fp16 (TQ1_0/TQ2_0 block scales) and fp32 (I2_S), and |k| = 8 (the rounding tie
    W / mean|W| = 0.5) never occurs. The GGUF files trit writes then hold exactly the model that
    transformers runs, so the reference test measures the forward pass, not format rounding.
    """
    n = shape[0] * shape[1]
    # Every partial sum of |W| / (2^-10 c) is an integer below 2^24: exact in float32 in any
    # order, and so is mean|W| = 2^-6 c (the quotient of two exact values that is representable).
    assert 16 * n < 2 ** 24, shape
    c = [0.5, 1.0, 2.0][int(torch.randint(0, 3, (1,), generator=gen))]
    k = torch.round(torch.randn(shape, generator=gen) * 20.05).to(torch.int64)
    sign = torch.where(k < 0, -1, 1)
    a = k.abs().view(-1).clone()
    eights = (a == 8).nonzero().view(-1)
    a[eights] = torch.where(torch.rand(len(eights), generator=gen) < 0.5, 7, 9)
    diff = int(16 * n - int(a.sum()))
    if diff > 0:
        cand = ((a + 1) != 8).nonzero().view(-1)
        assert len(cand) >= diff
        a[cand[torch.randperm(len(cand), generator=gen)[:diff]]] += 1
    elif diff < 0:
        cand = ((a >= 1) & ((a - 1) != 8)).nonzero().view(-1)
        assert len(cand) >= -diff
        a[cand[torch.randperm(len(cand), generator=gen)[:-diff]]] -= 1
    assert int(a.sum()) == 16 * n and not bool((a == 8).any())
    w = (sign.view(-1) * a).double() * (2.0 ** -10) * c
    w = w.float().view(shape).contiguous()
    m = float(w.abs().mean())
    # Exact when n is a power of two; otherwise torch may multiply by a rounded 1 / n.
    assert abs(m - 2.0 ** -6 * c) <= 2.0 ** -6 * c * 2.0 ** -22, (m, c)
    return w


def random_state(cfg, seed, embd_std=0.1):
    """Float32 weights: linears from grid_linear (std about 0.02), embeddings N(0, embd_std)
    rounded to values exact in f16 (trit's default embedding type), norms 1 + U(-0.4, 0.4)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = model_class(cfg)(cfg).float()
    sd = {}
    for name, p in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if p.ndim == 1:
            t = 1.0 + (torch.rand(p.shape, generator=gen) - 0.5) * 0.8
        elif "embed_tokens" in name or name == "lm_head.weight":
            t = torch.randn(p.shape, generator=gen) * embd_std
            t = torch.where(t.abs() < 2.0 ** -12, torch.sign(t) * 2.0 ** -12 + (t == 0) * 2.0 ** -12, t)
            t = t.half().float()
        else:
            t = grid_linear(tuple(p.shape), gen)
        sd[name] = t.float().contiguous()
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def sensitivity(model, ids, base, trials=3):
    """How far transformers' own logits move when every norm weight is scaled by 1 + 1e-6 * N(0, 1)
    (a perturbation at the level of float32 rounding): the noise floor of W1.58A8 logits, where
    one flipped int8 rounding can spread through later quantisations."""
    gen = torch.Generator().manual_seed(99)
    norms = [p for n, p in model.named_parameters() if p.ndim == 1]
    worst = 0.0
    for _ in range(trials):
        saved = [p.detach().clone() for p in norms]
        with torch.no_grad():
            for p in norms:
                p.mul_(1.0 + 1e-6 * torch.randn(p.shape, generator=gen))
        worst = max(worst, rel_err(run_logits(model, ids), base))
        with torch.no_grad():
            for p, q in zip(norms, saved):
                p.copy_(q)
    return worst


def write_config(folder, cfg, qcfg):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_dict(cfg, qcfg), f, indent=2, sort_keys=True)


def save_single(folder, sd):
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def save_sharded(folder, sd):
    names = sorted(sd)
    first = [n for n in names if n.startswith("model.layers.0.") or "embed_tokens" in n]
    second = [n for n in names if n not in first]
    shards = [first, second]
    weight_map = {}
    total = 0
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        part = {n: sd[n] for n in group}
        save_file(part, os.path.join(folder, fname), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fname
            total += sd[n].numel() * sd[n].element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def absmean_trits(w):
    """transformers' WeightQuant: s = 1 / max(mean|W|, 1e-5); T = clamp(round(W * s), -1, 1)."""
    w = w.float()
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    t = (w * s).round().clamp(-1, 1)
    return t.to(torch.int8), s


def pack_codes(trits):
    """The 2B4T packing: byte [i, k] holds (T + 1) of rows i + j * (out / 4) at bits 2j."""
    out, n_in = trits.shape
    assert out % 4 == 0
    rows = out // 4
    codes = (trits.to(torch.int16) + 1).to(torch.uint8)
    packed = torch.zeros((rows, n_in), dtype=torch.uint8)
    for j in range(4):
        packed |= codes[j * rows:(j + 1) * rows] << (2 * j)
    try:  # cross-check against transformers' own packer
        from transformers.integrations.bitnet import pack_weights

        theirs = pack_weights(trits.clone().to(torch.int8).float())
        if not torch.equal(theirs.to(torch.uint8), packed):
            log("WARNING: pack_weights disagrees with the 2B4T packing implemented here")
    except Exception as e:  # noqa: BLE001
        log(f"note: transformers pack_weights not usable for the cross-check: {e!r}")
    return packed


def packed_state(sd, scale_kind):
    """sd's linears as uint8 codes plus weight_scale: 'inverse' stores 1/mean|W| (what
    transformers' BitLinear divides by), 'mean' stores mean|W| (a multiplier)."""
    out = {}
    for name, t in sd.items():
        if is_linear(name):
            trits, s = absmean_trits(t)
            out[name] = pack_codes(trits).contiguous()
            ws = s if scale_kind == "inverse" else 1.0 / s
            # bf16, as in the 2B4T checkpoint (exact here: the scales are powers of two).
            out[name[: -len("weight")] + "weight_scale"] = ws.reshape(1).to(torch.bfloat16).contiguous()
        else:
            out[name] = t
    return out


def load_model(folder, cls=BitNetForCausalLM):
    model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.to("cpu")
    model.eval()
    return model


def linear_repr(model):
    m = model.model.layers[0].self_attn.q_proj
    return type(m).__name__, repr(m)


def run_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().cpu()


# ---- independent float64 reference (W1.58A8 as DESIGN.md section 2 states it) ----


def ref64_logits(sd, cfg, ids, quant_acts=True):
    """The forward pass in float64 from the float weights: W1.58A8 as transformers computes it,
    or with quant_acts=False float activations (ternary weights times their scale only)."""
    d = torch.float64
    theta = cfg_theta(cfg)
    act = cfg.hidden_act
    hidden, heads, kv_heads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = hidden // heads
    sub_norms = not is_llama(cfg)

    def rms(x, g):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * g.to(d)

    def bitlin(x, w):
        trits, s = absmean_trits(w)
        m = 1.0 / s.double()
        if not quant_acts:
            return (x @ trits.to(d).T) * m
        sx = 127.0 / x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        q = (x * sx).round().clamp(-128, 127)
        return (q @ trits.to(d).T) * m / sx

    def rope(x, pos):  # x: (T, H, hd); NeoX rotate-half pairs (i, i + hd/2)
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=d) / hd))
        ang = pos[:, None].to(d) * inv[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return x * cos + rot * sin

    T = len(ids)
    pos = torch.arange(T)
    h = sd["model.embed_tokens.weight"].to(d)[torch.tensor(ids)]
    for li in range(LAYERS):
        p = f"model.layers.{li}."
        x = rms(h, sd[p + "input_layernorm.weight"])
        q = bitlin(x, sd[p + "self_attn.q_proj.weight"]).view(T, heads, hd)
        k = bitlin(x, sd[p + "self_attn.k_proj.weight"]).view(T, kv_heads, hd)
        v = bitlin(x, sd[p + "self_attn.v_proj.weight"]).view(T, kv_heads, hd)
        q, k = rope(q, pos), rope(k, pos)
        rep = heads // kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = torch.einsum("hts,shd->thd", att, v).reshape(T, hidden)
        if sub_norms:
            o = rms(o, sd[p + "self_attn.attn_sub_norm.weight"])
        h = h + bitlin(o, sd[p + "self_attn.o_proj.weight"])
        x = rms(h, sd[p + "post_attention_layernorm.weight"])
        g = bitlin(x, sd[p + "mlp.gate_proj.weight"])
        u = bitlin(x, sd[p + "mlp.up_proj.weight"])
        a = torch.relu(g) ** 2 if act == "relu2" else torch.nn.functional.silu(g)
        f = rms(a * u, sd[p + "mlp.ffn_sub_norm.weight"]) if sub_norms else a * u
        h = h + bitlin(f, sd[p + "mlp.down_proj.weight"])
    h = rms(h, sd["model.norm.weight"])
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"]).to(d)
    return (h @ head.T).float()


def cfg_theta(cfg):
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(cfg.rope_theta)


# ---- outputs ----


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def top1_margin(logits):
    top2 = logits.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def write_outputs(folder, ids, logits, info, float_logits):
    """float_logits: the float64 reference with float activations (transformers has no such
    mode), written as logits_float.f32 for `trit logits --act-quant none`."""
    with open(os.path.join(folder, "ids.txt"), "w") as f:
        f.write(",".join(str(i) for i in ids) + "\n")
    for name, lg in (("logits.f32", logits), ("logits_float.f32", float_logits)):
        arr = lg.numpy().astype("<f4")
        assert arr.shape == (len(ids), VOCAB)
        arr.tofile(os.path.join(folder, name))
    info = dict(info)
    info.update(
        {
            "n_tokens": len(ids),
            "n_vocab": VOCAB,
            "top1": [int(i) for i in logits.argmax(-1)],
            "min_top1_margin": top1_margin(logits),
            "logits_rms": float(logits.pow(2).mean().sqrt()),
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
    )
    with open(os.path.join(folder, "info.json"), "w") as f:
        json.dump(info, f, indent=2)


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


ONE_BIT_LLM_NAMES = (("self_attn.attn_sub_norm", "self_attn.inner_attn_ln"),
                     ("mlp.ffn_sub_norm", "mlp.ffn_layernorm"))


def family_case(name, cfg, sd, qcfg, stored, ids, out_dir, expect_module, failures,
                one_bit_llm=False):
    """Writes `stored` (the state dict as the folder holds it) with cfg and qcfg, loads it
    through transformers, checks the linear module class and the logits against the float64
    reference of the float weights `sd`, and writes the outputs. one_bit_llm: after computing,
    rename the sub-norms and rewrite config.json as 1bitLLM's folders have them (their custom
    BitnetForCausalLM is the same computation as transformers' BitNet model)."""
    folder = os.path.join(out_dir, name)
    os.makedirs(folder)
    write_config(folder, cfg, qcfg)
    save_single(folder, stored)
    model = load_model(folder, model_class(cfg))
    cls, rep = linear_repr(model)
    log(f"{name}: q_proj module is {cls}: {rep}")
    if cls != expect_module:
        failures.append(f"{name}: expected {expect_module}, got {cls}")
    logits = run_logits(model, ids)
    ref = ref64_logits(sd, cfg, ids)
    err64 = rel_err(logits, ref)
    log(f"{name}: float64 reference vs transformers: rel err {err64:.3e}, top-1 agree "
        f"{float((logits.argmax(-1) == ref.argmax(-1)).float().mean()):.3f}")
    if err64 > 1e-2:
        failures.append(f"{name}: transformers and the float64 reference differ by {err64:.3e}")
    sens = sensitivity(model, ids, logits)
    if one_bit_llm:
        renamed = {}
        for n, t in stored.items():
            for a, b in ONE_BIT_LLM_NAMES:
                n = n.replace(a, b)
            renamed[n] = t
        os.remove(os.path.join(folder, "model.safetensors"))
        save_single(folder, renamed)
        d = config_dict(cfg, None)
        d["architectures"] = ["BitnetForCausalLM"]
        d["model_type"] = "llama"
        d.setdefault("rope_theta", cfg_theta(cfg))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    write_outputs(folder, ids, logits, {"case": name, "linear_module": cls,
                                        "float64_rel_err": err64, "perturbation_rel_err": sens},
                  ref64_logits(sd, cfg, ids, quant_acts=False))
    return folder_bytes(folder)



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/hf_ref")
    ap.add_argument("--tar", default="", help="also write a .tar.gz of --out here")
    ap.add_argument("--dump-source", default="", help="write transformers' BitNet sources here")
    args = ap.parse_args()

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"cuda {torch.cuda.is_available()}")
    if args.dump_source:
        import inspect

        os.makedirs(args.dump_source, exist_ok=True)
        for modname in ("transformers.integrations.bitnet", "transformers.quantizers.quantizer_bitnet",
                        "transformers.models.bitnet.modeling_bitnet",
                        "transformers.models.bitnet.configuration_bitnet"):
            try:
                mod = __import__(modname, fromlist=["x"])
                with open(os.path.join(args.dump_source, modname.split(".")[-1] + ".py"), "w") as f:
                    f.write(inspect.getsource(mod))
            except Exception as e:  # noqa: BLE001
                log(f"could not dump {modname}: {e!r}")

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    rng = np.random.RandomState(1234)
    ids = [1] + [int(i) for i in rng.randint(3, VOCAB, size=N_TOKENS - 1)]

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    summary = {}
    failures = []

    online = quant_config("autobitlinear", "online")

    # (a) relu2_tied: f32, one file
    cfg_a = make_config("relu2", True, 500000.0)
    sd_a = random_state(cfg_a, seed=1)
    dir_a = os.path.join(args.out, "relu2_tied")
    os.makedirs(dir_a)
    write_config(dir_a, cfg_a, online)
    save_single(dir_a, sd_a)
    model_a = load_model(dir_a)
    cls, rep = linear_repr(model_a)
    log(f"relu2_tied: q_proj module is {cls}: {rep}")
    if cls != "AutoBitLinear" or not getattr(model_a.model.layers[0].self_attn.q_proj, "online_quant", False):
        failures.append(f"relu2_tied: expected an online AutoBitLinear, got {cls}")
    log(f"relu2_tied: lm_head {type(model_a.lm_head).__name__}, tied="
        f"{model_a.lm_head.weight.data_ptr() == model_a.model.embed_tokens.weight.data_ptr()}")
    logits_a = run_logits(model_a, ids)
    ref_a = ref64_logits(sd_a, cfg_a, ids)
    err64_a = rel_err(logits_a, ref_a)
    log(f"relu2_tied: float64 reference vs transformers: rel err {err64_a:.3e}, "
        f"max abs {float((logits_a - ref_a).abs().max()):.3e}, top-1 agree "
        f"{float((logits_a.argmax(-1) == ref_a.argmax(-1)).float().mean()):.3f}")
    sens_a = sensitivity(model_a, ids, logits_a)
    log(f"relu2_tied: rel change of the logits under 1e-6 perturbations of the norms: {sens_a:.3e}")
    write_outputs(dir_a, ids, logits_a, {"case": "relu2_tied", "linear_module": cls,
                                          "float64_rel_err": err64_a,
                                          "perturbation_rel_err": sens_a},
                  ref64_logits(sd_a, cfg_a, ids, quant_acts=False))
    summary["relu2_tied"] = folder_bytes(dir_a)

    # (b) silu_untied: bf16, two shards
    cfg_b = make_config("silu", False, 10000.0)
    sd_b = random_state(cfg_b, seed=2)
    sd_b16 = {n: t.to(torch.bfloat16).contiguous() for n, t in sd_b.items()}
    dir_b = os.path.join(args.out, "silu_untied")
    os.makedirs(dir_b)
    write_config(dir_b, cfg_b, online)
    save_sharded(dir_b, sd_b16)
    model_b = load_model(dir_b)
    cls_b, rep_b = linear_repr(model_b)
    log(f"silu_untied: q_proj module is {cls_b}; lm_head {type(model_b.lm_head).__name__}; "
        f"act {model_b.model.layers[0].mlp.act_fn}")
    logits_b = run_logits(model_b, ids)
    sd_b32 = {n: t.float() for n, t in sd_b16.items()}
    ref_b = ref64_logits(sd_b32, cfg_b, ids)
    err64_b = rel_err(logits_b, ref_b)
    log(f"silu_untied: float64 reference vs transformers: rel err {err64_b:.3e}, top-1 agree "
        f"{float((logits_b.argmax(-1) == ref_b.argmax(-1)).float().mean()):.3f}")
    sens_b = sensitivity(model_b, ids, logits_b)
    log(f"silu_untied: rel change of the logits under 1e-6 perturbations of the norms: {sens_b:.3e}")
    write_outputs(dir_b, ids, logits_b, {"case": "silu_untied", "linear_module": cls_b,
                                          "float64_rel_err": err64_b,
                                          "perturbation_rel_err": sens_b},
                  ref64_logits(sd_b32, cfg_b, ids, quant_acts=False))
    summary["silu_untied"] = folder_bytes(dir_b)

    # (c) packed: what does weight_scale mean? Try both readings under both linear classes.
    findings = {}
    tmp = tempfile.mkdtemp()
    for linear_class in ("bitlinear", "autobitlinear"):
        for kind in ("inverse", "mean"):
            key = f"{linear_class}/{kind}"
            folder = os.path.join(tmp, key.replace("/", "_"))
            os.makedirs(folder)
            try:
                write_config(folder, cfg_a, quant_config(linear_class, "offline"))
                save_single(folder, packed_state(sd_a, kind))
                m = load_model(folder)
                c, r = linear_repr(m)
                lg = run_logits(m, ids)
                findings[key] = {"module": c, "max_abs_diff_vs_online": float((lg - logits_a).abs().max()),
                                 "rel_err_vs_online": rel_err(lg, logits_a)}
                log(f"packed {key}: module {c}: max |diff| vs online float model "
                    f"{findings[key]['max_abs_diff_vs_online']:.3e}, rel {findings[key]['rel_err_vs_online']:.3e}")
                if kind == "inverse" and linear_class == "bitlinear":
                    log(f"packed {key}: module repr: {r}")
            except Exception as e:  # noqa: BLE001
                findings[key] = {"error": repr(e)}
                log(f"packed {key}: FAILED: {e!r}")
                traceback.print_exc()
    shutil.rmtree(tmp, ignore_errors=True)

    # The 2B4T checkpoint's config names linear_class "bitlinear"; write that variant with
    # whichever weight_scale reading reproduces the float model.
    good = [k for k in ("bitlinear/inverse", "bitlinear/mean")
            if findings.get(k, {}).get("rel_err_vs_online", 1.0) < 1e-4]
    dir_c = os.path.join(args.out, "packed")
    if len(good) == 1:
        kind = good[0].split("/")[1]
        os.makedirs(dir_c)
        write_config(dir_c, cfg_a, quant_config("bitlinear", "offline"))
        save_single(dir_c, packed_state(sd_a, kind))
        m = load_model(dir_c)
        logits_c = run_logits(m, ids)
        diff = float((logits_c - logits_a).abs().max())
        log(f"packed: written with weight_scale = {'1/mean|W|' if kind == 'inverse' else 'mean|W|'}; "
            f"max |logits(c) - logits(a)| = {diff:.3e}")
        write_outputs(dir_c, ids, logits_c, {"case": "packed", "linear_module": linear_repr(m)[0],
                                              "weight_scale": "1/mean|W| (divisor)" if kind == "inverse"
                                              else "mean|W| (multiplier)",
                                              "max_abs_diff_vs_relu2_tied": diff,
                                              "weight_scale_findings": findings},
                      ref64_logits(sd_a, cfg_a, ids, quant_acts=False))
        summary["packed"] = folder_bytes(dir_c)
    else:
        failures.append(f"packed: no single weight_scale reading matched: {findings}")

    # (d) llama_packed: Falcon3 1.58-bit's layout and config (only quant_method: BitLinear,
    # offline), untied head, a rope theta like Falcon3's.
    cfg_d = make_config("silu", False, 1000042.0, llama=True)
    sd_d = random_state(cfg_d, seed=4)
    summary["llama_packed"] = family_case(
        "llama_packed", cfg_d, sd_d, {"quant_method": "bitnet", "modules_to_not_convert": None},
        packed_state(sd_d, "inverse"), ids, args.out, "BitLinear", failures)

    # (e) llama_online: float master weights, AutoBitLinear online, tied embeddings.
    cfg_e = make_config("silu", True, 500000.0, llama=True)
    sd_e = random_state(cfg_e, seed=5)
    summary["llama_online"] = family_case("llama_online", cfg_e, sd_e, online, sd_e, ids, args.out,
                                          "AutoBitLinear", failures)

    # (f) odd_widths: bitnet_b1_58-3B's proportions in small (3200 / 8640 -> 320 / 864).
    cfg_f = make_config("silu", False, 10000.0, hidden=320, intermediate=864, heads=4, kv_heads=4)
    sd_f = random_state(cfg_f, seed=6)
    summary["odd_widths"] = family_case("odd_widths", cfg_f, sd_f, online, sd_f, ids, args.out,
                                        "AutoBitLinear", failures, one_bit_llm=True)

    log("weight_scale findings: " + json.dumps(findings, indent=1))
    total = 0
    for k, v in summary.items():
        log(f"{k}: {v} bytes")
        total += v
    log(f"total: {total} bytes")

    if args.tar:
        with tarfile.open(args.tar, "w:gz") as tf:
            tf.add(args.out, arcname="hf_ref")
        log(f"wrote {args.tar} ({os.path.getsize(args.tar)} bytes)")
    if failures:
        for f in failures:
            log("FAILURE: " + f)
        sys.exit(1)


if __name__ == "__main__":
    main()
