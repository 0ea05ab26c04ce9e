#!/usr/bin/env python3
"""Train trit's tiny BitNet b1.58 model on Jane Austen's novels (see docs/TINY_MODEL.md).

Reads the train/valid files that tools/tiny_model/corpus.sh writes and

  1. trains a byte-level BPE tokenizer (llama-3 pre-tokenizer, so trit reads it as "llama-bpe"),
  2. trains a BitNet b1.58 model from scratch with quantisation-aware training: the forward pass
     is transformers' BitNetForCausalLM with quantization_config {bitnet, autobitlinear, online}
     (absmean ternary weights, per-token int8 absmax activations, straight-through estimator),
     relu2, sub-norms, GQA, NeoX rope and tied embeddings (the 2B4T layout),
  3. keeps the weights of the best validation loss, rounds them onto the grid trit's GGUF types
     hold (f16 embedding, fp16 per-tensor scales), and saves a Hugging Face folder
     (config.json, model.safetensors with bf16 master weights, tokenizer.json,
     tokenizer_config.json),
  4. loads that folder with transformers, compares its logits with this script's model and
     prints validation perplexity and sample generations.

Validation perplexity is computed as `trit perplexity -c CTX` does: the whole valid file
encoded once (with <|begin_of_text|> in front), cut into chunks of CTX tokens, every position
of a chunk but the last scored.

Needs one CUDA GPU, torch, transformers (with BitNetForCausalLM), tokenizers and safetensors;
the defaults are the shipped model's recipe (about two minutes on an H100):

  PYTHONUNBUFFERED=1 python3 tools/tiny_model/train.py --data .corpus --out austen-tiny
  ./build/trit convert austen-tiny -o models/austen-tiny.gguf --type tq2_0
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# The llama-3 pre-tokenizer regex; trit's loader compares it byte for byte (kLlama3Pattern).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
# BitNet b1.58 2B4T's chat template ("Role: content<|eot_id|>"); trit recognises it.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% set content = message['role'] | capitalize + ': ' + "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)
QUANT_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                "quantization_mode": "online"}
PROMPTS = ["It is a truth universally", "Emma Woodhouse, handsome, clever, and rich,",
           "\"My dear Mr. Bennet,\" said his lady to him one day,", "Captain Wentworth",
           "The next morning"]


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(train_path, vocab_size):
    """Byte-level BPE with llama-3's pre-tokenizer, decoder and <|begin_of_text|> post-processor."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([train_path], trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
    # llama-3 takes a word that is a token whole (trit does so for "llama-bpe"); make sure the
    # trained model keeps that setting.
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(spec))


def tokenizer_config(max_len):
    return {"bos_token": BOS, "eos_token": EOS, "add_bos_token": True,
            "clean_up_tokenization_spaces": False, "model_max_length": max_len,
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE}


def encode_paragraphs(tok, path):
    """The file's tokens as one stream (no BOS) and the index where each paragraph starts."""
    with open(path, encoding="utf-8") as f:
        paras = [line for line in f.read().split("\n") if line]
    enc = tok.encode_batch([p + "\n" for p in paras], add_special_tokens=False)
    ids, starts = [], []
    for e in enc:
        starts.append(len(ids))
        ids.extend(e.ids)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def encode_like_trit(tok, path):
    """The whole file as `trit perplexity` encodes it: one encode, <|begin_of_text|> first."""
    with open(path, encoding="utf-8") as f:
        return torch.tensor(tok.encode(f.read()).ids, dtype=torch.long)


# ---------------------------------------------------------------- model (transformers' BitNet)


def weight_quant(w):
    """Absmean ternary weights, dequantised (transformers' WeightQuant.forward)."""
    dtype = w.dtype
    w = w.float()
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    return ((w * s).round().clamp(-1, 1) / s).to(dtype)


def act_quant(x):
    """Per-token int8 absmax activations, dequantised (transformers' ActQuant.forward)."""
    dtype = x.dtype
    x = x.float()
    s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return ((x * s).round().clamp(-128, 127) / s).to(dtype)


def straight_through(x, q):
    """q in the forward pass, the identity's gradient in the backward pass."""
    return x + (q - x).detach()


class BitLinear(nn.Linear):
    """transformers' AutoBitLinear with online quantisation.

    Training takes the straight-through gradient as plain tensor operations rather than an
    autograd.Function (whose custom backward torch.compile may not keep); evaluation computes
    the quantised values directly, so it is exactly transformers' forward.
    """

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out, bias=False)

    def forward(self, x):
        w = self.weight
        if self.training:
            return F.linear(straight_through(x, act_quant(x.detach())),
                            straight_through(w, weight_quant(w.detach())))
        return F.linear(act_quant(x), weight_quant(w))


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim, n_ctx, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float()
                           / head_dim))
    freqs = torch.outer(torch.arange(n_ctx, device=device).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.n_kv, self.hd = c["heads"], c["kv_heads"], c["dim"] // c["heads"]
        self.q_proj = BitLinear(c["dim"], self.n_head * self.hd)
        self.k_proj = BitLinear(c["dim"], self.n_kv * self.hd)
        self.v_proj = BitLinear(c["dim"], self.n_kv * self.hd)
        self.o_proj = BitLinear(self.n_head * self.hd, c["dim"])
        self.attn_sub_norm = RMSNorm(c["dim"], c["eps"])

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, -1, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, -1, self.hd).transpose(1, 2)
        cos, sin = cos[:T].to(q.dtype), sin[:T].to(q.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.n_head // self.n_kv  # GQA: each KV head serves rep query heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(self.attn_sub_norm(y))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = BitLinear(c["dim"], c["ff"])
        self.up_proj = BitLinear(c["dim"], c["ff"])
        self.down_proj = BitLinear(c["ff"], c["dim"])
        self.ffn_sub_norm = RMSNorm(c["ff"], c["eps"])

    def forward(self, x):
        return self.down_proj(self.ffn_sub_norm(F.relu(self.gate_proj(x)).square() * self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["dim"], c["eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["dim"], c["eps"])
        self.mlp = MLP(c)
        self.drop = nn.Dropout(c["dropout"])

    def forward(self, x, cos, sin):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class BitNetLM(nn.Module):
    """BitNetForCausalLM's forward (tied embeddings, float head); dropout only in training."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"], c["eps"])
        self.drop = nn.Dropout(c["dropout"])
        cos, sin = rope_tables(c["dim"] // c["heads"], c["ctx"], c["theta"], "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        x = self.drop(self.embed_tokens(ids))
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return F.linear(self.norm(x), self.embed_tokens.weight)

    def hf_state_dict(self):
        """Tensor names as in BitNetForCausalLM (lm_head is tied, so left out)."""
        return {"model." + k: v.detach().bfloat16().cpu().contiguous()
                for k, v in self.state_dict().items()}


# ---------------------------------------------------------------- data and evaluation


def sample_batch(stream, starts, bos, batch, ctx, gen):
    """ctx+1 tokens per row: half from a random offset, half <|begin_of_text|> + a paragraph."""
    n_rand = batch // 2
    offs = torch.randint(0, len(stream) - ctx - 1, (n_rand,), generator=gen, device=stream.device)
    rows = stream[offs[:, None] + torch.arange(ctx + 1, device=stream.device)]
    valid_starts = starts[starts < len(stream) - ctx]
    pick = valid_starts[torch.randint(0, len(valid_starts), (batch - n_rand,), generator=gen,
                                      device=stream.device)]
    para = stream[pick[:, None] + torch.arange(ctx, device=stream.device)]
    para = torch.cat([torch.full_like(para[:, :1], bos), para], dim=1)
    xy = torch.cat([rows, para], dim=0)
    return xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def chunk_nll(model, ids, ctx, batch=32):
    """Mean NLL as `trit perplexity -c ctx` computes it, and the number of scored tokens."""
    n = len(ids) // ctx
    chunks = ids[: n * ctx].view(n, ctx)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        c = chunks[i: i + batch]
        logits = model(c[:, :-1]).float()
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), c[:, 1:].reshape(-1),
                                       reduction="sum"))
        count += c[:, 1:].numel()
    return total / count, count


def evaluate(model, ids, ctx):
    was = model.training
    model.eval()
    nll, _ = chunk_nll(model, ids, ctx)
    model.train(was)
    return nll


# ---------------------------------------------------------------- training


def lr_at(step, a):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def make_optimizer(model, a):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def check_gradients(model):
    """Every linear weight must get a gradient (a lost straight-through estimator gives 0)."""
    norms = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
    zero = [n for n, v in norms.items() if not v > 0]
    log(f"first step gradient norms: q_proj.0 {norms['layers.0.self_attn.q_proj.weight']:.2e}, "
        f"down_proj.0 {norms['layers.0.mlp.down_proj.weight']:.2e}, "
        f"embed {norms['embed_tokens.weight']:.2e}")
    if zero or len(norms) != len(list(model.parameters())):
        raise SystemExit(f"parameters without a gradient: {zero}")


def train(model, stream, starts, valid_ids, bos, a):
    """AdamW, warmup + cosine, bf16 autocast; returns the state of the best validation loss."""
    opt = make_optimizer(model, a)
    step_fn = torch.compile(model) if a.compile else model
    gen = torch.Generator(device=stream.device).manual_seed(a.seed)
    best = (float("inf"), -1, None)
    t0, tokens = time.time(), 0
    loss_sum, loss_n = torch.zeros((), device=stream.device), 0
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        x, y = sample_batch(stream, starts, bos, a.batch, a.ctx, gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            check_gradients(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += x.numel()
        loss_sum += loss.detach()
        loss_n += 1
        if (step + 1) % a.eval_every == 0 or step == a.steps - 1:
            vl = evaluate(model, valid_ids, a.ctx)
            tl = float(loss_sum) / loss_n
            loss_sum.zero_()
            loss_n = 0
            el = time.time() - t0
            mark = ""
            if vl < best[0]:
                best = (vl, step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
                mark = " *"
            log(f"step {step + 1:6d}  lr {lr_at(step, a):.2e}  train {tl:.4f}  valid {vl:.4f} "
                f"(ppl {math.exp(vl):.2f})  {tokens / 1e6:.1f}M tok  {el:.0f}s "
                f"{tokens / el / 1e3:.0f}k tok/s{mark}")
    torch.cuda.synchronize()
    return best, {"steps": step + 1, "tokens": tokens, "seconds": time.time() - t0,
                  "final_train_loss": tl}


# ---------------------------------------------------------------- export


def nudge_absmean(w, target, gen):
    """w (bf16 values) with mean|w| moved onto target: one bf16 step up or down on as many
    entries with ternary code 0 (|w| in (0.1, 0.4) times the scale) as the difference needs."""
    flat = w.flatten().clone()
    for _ in range(4):
        a = flat.abs()
        diff = target * flat.numel() - float(a.double().sum())
        cand = ((a > 0.1 * target) & (a < 0.4 * target)).nonzero().flatten()
        cand = cand[torch.randperm(len(cand), generator=gen)]
        bits = a[cand].bfloat16().view(torch.int16) + (1 if diff > 0 else -1)
        new = bits.view(torch.bfloat16).float()
        k = int(((new - a[cand]).abs().double().cumsum(0) <= abs(diff)).sum())
        flat[cand[:k]] = torch.sign(flat[cand[:k]]) * new[:k]
    return flat.view_as(w)


@torch.no_grad()
def snap_to_gguf_grid(model):
    """Round the weights to the bf16 master weights that are saved, placed where trit's GGUF
    is exact.

    TQ2_0 stores a tensor's absmean scale as fp16 per block and the embedding is written as
    f16. Each linear weight, rounded to bf16, has its mean|W| moved onto the nearest fp16 value
    (nudge_absmean; the change is below 1e-3 of the scale) and the embedding keeps only values
    f16 holds (|x| < 2^-14 becomes 0). transformers and trit then compute with the same ternary
    weights, scales (to float32 rounding) and embedding. Returns the largest relative distance
    left between a linear's absmean and its fp16 rounding.
    """
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for m in model.modules():
        if isinstance(m, BitLinear):
            w = m.weight.detach().float().cpu().bfloat16().float()
            target = float(w.abs().double().mean().clamp(min=1e-5).half())
            w = nudge_absmean(w, target, gen)
            m.weight.copy_(w)
            s = float(w.abs().double().mean())
            worst = max(worst, abs(s - target) / target)
        elif isinstance(m, RMSNorm):
            m.weight.copy_(m.weight.bfloat16().float())
    e = model.embed_tokens.weight
    e.copy_(torch.where(e.abs() < 2.0 ** -14, 0.0, e).bfloat16().float())
    assert torch.equal(e.half().float(), e)
    return worst


def hf_config(c, tok):
    from transformers import BitNetConfig

    kw = dict(vocab_size=c["vocab"], hidden_size=c["dim"], intermediate_size=c["ff"],
              num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
              num_key_value_heads=c["kv_heads"], hidden_act="relu2",
              max_position_embeddings=c["ctx"], rms_norm_eps=c["eps"], tie_word_embeddings=True,
              bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
              attention_bias=False)
    try:
        cfg = BitNetConfig(rope_theta=c["theta"], **kw)
    except TypeError:  # a transformers that only takes rope_parameters
        cfg = BitNetConfig(rope_parameters={"rope_type": "default", "rope_theta": c["theta"]}, **kw)
    d = cfg.to_dict()
    d["architectures"] = ["BitNetForCausalLM"]
    d["model_type"] = "bitnet"
    d["quantization_config"] = QUANT_CONFIG
    d["rope_theta"] = c["theta"]  # at the top level too, as the 2B4T config has it
    if isinstance(d.get("rope_parameters"), dict):
        d["rope_parameters"]["rope_theta"] = c["theta"]
    d["torch_dtype"] = "bfloat16"
    return d


def save_hf(model, tok, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(model.c, tok), f, indent=2, sort_keys=True)
    save_file(model.hf_state_dict(), os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(model.c["ctx"]), f, indent=2)


# ---------------------------------------------------------------- checks


@torch.no_grad()
def compare_with_transformers(model, out, valid_ids, ctx, n_seq=4):
    """Load the saved folder with BitNetForCausalLM; compare logits; its validation perplexity."""
    from transformers import BitNetForCausalLM

    hf = BitNetForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    hf.to("cuda").eval()
    q = hf.model.layers[0].self_attn.q_proj
    log(f"transformers: q_proj is {type(q).__name__} (online_quant="
        f"{getattr(q, 'online_quant', None)}), lm_head tied "
        f"{hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()}")
    model.eval()
    seqs = valid_ids[: n_seq * ctx].view(n_seq, ctx).cuda()
    ours = model(seqs).float()
    theirs = hf(input_ids=seqs, use_cache=False).logits.float()
    rel = float((ours - theirs).norm() / theirs.norm())
    max_rel = float((ours - theirs).abs().max() / theirs.abs().max())
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    log(f"logits vs transformers on {n_seq} x {ctx} valid tokens: rel err {rel:.2e}, "
        f"max abs err / max |logit| {max_rel:.2e}, top-1 agreement {agree:.4f}")

    class Wrap(nn.Module):
        def forward(self, ids):
            return hf(input_ids=ids, use_cache=False).logits

    nll, _ = chunk_nll(Wrap(), valid_ids.cuda(), ctx, batch=8)
    log(f"transformers validation: loss {nll:.4f}, ppl {math.exp(nll):.3f}")
    return {"logits_rel_err": rel, "logits_max_rel_err": max_rel, "top1_agreement": agree,
            "hf_valid_loss": nll}


@torch.no_grad()
def generate(model, tok, prompt, n, temp, top_k, gen):
    ids = torch.tensor([tok.encode(prompt).ids], device="cuda")
    for _ in range(n):
        logits = model(ids[:, -model.c["ctx"]:])[0, -1].float()
        if temp <= 0:
            nxt = logits.argmax()
        else:
            v, i = logits.topk(top_k)
            nxt = i[torch.multinomial(F.softmax(v / temp, -1), 1, generator=gen)][0]
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tok.decode(ids[0].tolist(), skip_special_tokens=True)


def show_samples(model, tok, n=48):
    model.eval()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for p in PROMPTS:
        log(f"greedy : {generate(model, tok, p, n, 0, 0, gen)!r}")
        log(f"t=0.8  : {generate(model, tok, p, n, 0.8, 40, gen)!r}")


# ---------------------------------------------------------------- main


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".corpus", help="folder with train.txt and valid.txt")
    ap.add_argument("--out", default="austen-tiny", help="Hugging Face folder to write "
                    "(its name becomes the GGUF's general.name)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=1536)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--theta", type=float, default=10000.0)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    return ap.parse_args()


def main():
    a = parse_args()
    import transformers
    import tokenizers

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, {torch.cuda.get_device_name()}")
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 evaluation stays fp32
    torch.backends.cudnn.allow_tf32 = False

    train_path, valid_path = (os.path.join(a.data, f) for f in ("train.txt", "valid.txt"))
    t0 = time.time()
    tok = train_tokenizer(train_path, a.vocab)
    stream, starts = encode_paragraphs(tok, train_path)
    valid_ids = encode_like_trit(tok, valid_path)
    n_chars = os.path.getsize(train_path)
    log(f"tokenizer: {tok.get_vocab_size()} tokens, {time.time() - t0:.1f}s; train "
        f"{len(stream)} tokens ({n_chars / len(stream):.2f} bytes/token), valid {len(valid_ids)} "
        f"tokens")

    c = {"vocab": tok.get_vocab_size(), "dim": a.dim, "layers": a.layers, "heads": a.heads,
         "kv_heads": a.kv_heads, "ff": a.ff, "ctx": a.ctx, "theta": a.theta, "eps": 1e-5,
         "dropout": a.dropout}
    model = BitNetLM(c).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {c}, {n_params / 1e6:.2f}M parameters; {a.steps} steps of {a.batch} x {a.ctx} "
        f"tokens = {a.steps * a.batch * a.ctx / len(stream):.1f} epochs")

    stream, starts, valid_ids = stream.cuda(), starts.cuda(), valid_ids.cuda()
    best, stats = train(model, stream, starts, valid_ids, tok.token_to_id(BOS), a)
    log(f"trained {stats['steps']} steps, {stats['tokens'] / 1e6:.1f}M tokens in "
        f"{stats['seconds']:.0f}s; best valid loss {best[0]:.4f} (ppl {math.exp(best[0]):.3f}) "
        f"at step {best[1]}")

    model.load_state_dict(best[2])
    model.eval()
    before = evaluate(model, valid_ids, a.ctx)
    worst = snap_to_gguf_grid(model)
    after = evaluate(model, valid_ids, a.ctx)
    log(f"valid loss before/after rounding to bf16 on the GGUF grid: {before:.5f} / {after:.5f} "
        f"(scales within {worst:.1e} of fp16) "
        f"(ppl {math.exp(after):.3f}, {len(valid_ids) // a.ctx} chunks of {a.ctx})")
    save_hf(model, tok, a.out)
    check = compare_with_transformers(model, a.out, valid_ids, a.ctx)
    show_samples(model, tok)
    summary = dict(stats, best_step=best[1], valid_loss=after, valid_ppl=math.exp(after),
                   train_tokens=len(stream), valid_tokens=len(valid_ids), params=n_params,
                   config=c, args=vars(a), **check)
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(json.dumps(summary))


if __name__ == "__main__":
    main()
