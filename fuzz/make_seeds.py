#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/): small valid inputs of every
format, made here (a tiny Hugging Face BitNet folder with a tokenizer) and by the trit CLI
(`trit convert` of that folder, `trit create`, a one-step `trit finetune`, `trit export-peft`).
Run from the repository root after building: python3 fuzz/make_seeds.py build/trit
The corpora are committed; run this again only to change them."""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

TRIT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/trit")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes)."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def byte_level_tokenizer():
    """A GPT-2 style byte-level BPE: 256 byte tokens, a few merges, special tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    spell = {b: chr(c) for b, c in zip(bs, cs)}
    vocab = {spell[b]: b for b in range(256)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "s"), ("Ġ", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                "<|end_header_id|>"]
    added = []
    for s in specials:
        added.append({"id": len(vocab), "content": s, "special": True})
        vocab[s] = len(vocab)
    return {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": [a + " " + b for a, b in merges],
                  "ignore_merges": True},
    }, len(vocab)


def sentencepiece_tokenizer():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t in ["\u2581", "h", "i", "e", "y", "\u2581h", "\u2581hi", "ey", "\u2581hey"]:
        vocab[t] = len(vocab)
    return {
        "added_tokens": [{"id": i, "content": t, "special": True}
                         for i, t in enumerate(["<unk>", "<s>", "</s>"])],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True,
                  "vocab": vocab,
                  "merges": ["\u2581 h", "\u2581h i", "e y", "\u2581h ey"]},
    }


LLAMA3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>"
                   "{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}"
                   "<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
BITNET_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}"
                   "{{ 'User: ' + message['content'] + '<|eot_id|>' }}{% elif message['role'] == "
                   "'assistant' %}{{ 'Assistant: ' + message['content'] + '<|eot_id|>' }}{% endif %}"
                   "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")


def hf_folder(path, rng):
    """A 1-layer BitNet of hidden size 64 in bf16 with a byte-level tokenizer."""
    tok, n_vocab = byte_level_tokenizer()
    hidden, ff, heads, kv = 64, 128, 2, 1
    head_dim = hidden // heads
    config = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": hidden, "intermediate_size": ff, "num_attention_heads": heads,
        "num_key_value_heads": kv, "num_hidden_layers": 1, "vocab_size": n_vocab,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "bos_token_id": n_vocab - 5, "eos_token_id": n_vocab - 4,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "online"},
    }
    def mat(rows, cols):
        return ("BF16", [rows, cols], bf16([rng.gauss(0, 0.05) for _ in range(rows * cols)]))
    def ones(n):
        return ("BF16", [n], bf16([1.0] * n))
    p = "model.layers.0."
    tensors = {
        "model.embed_tokens.weight": mat(n_vocab, hidden),
        p + "input_layernorm.weight": ones(hidden),
        p + "post_attention_layernorm.weight": ones(hidden),
        p + "self_attn.attn_sub_norm.weight": ones(hidden),
        p + "mlp.ffn_sub_norm.weight": ones(ff),
        p + "self_attn.q_proj.weight": mat(hidden, hidden),
        p + "self_attn.k_proj.weight": mat(kv * head_dim, hidden),
        p + "self_attn.v_proj.weight": mat(kv * head_dim, hidden),
        p + "self_attn.o_proj.weight": mat(hidden, hidden),
        p + "mlp.gate_proj.weight": mat(ff, hidden),
        p + "mlp.up_proj.weight": mat(ff, hidden),
        p + "mlp.down_proj.weight": mat(hidden, ff),
        "model.norm.weight": ones(hidden),
    }
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(safetensors(tensors, {"format": "pt"}))
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                   "add_bos_token": True, "chat_template": LLAMA3_TEMPLATE}, f)
    return config


def run(*args, cwd=None):
    subprocess.run([TRIT, *args], check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def main():
    rng = random.Random(7)
    shutil.rmtree(CORPUS, ignore_errors=True)
    tmp = tempfile.mkdtemp()
    try:
        hf = os.path.join(tmp, "hf")
        config = hf_folder(hf, rng)
        read = lambda p: open(p, "rb").read()
        put("hf_config_fuzz", "bitnet.json", read(os.path.join(hf, "config.json")))
        for name in ["relu2_tied", "silu_untied", "llama_packed", "odd_widths"]:
            src = os.path.join(ROOT, "tests", "data", "hf_ref", name, "config.json")
            if os.path.exists(src):
                put("hf_config_fuzz", name + ".json", read(src))
        put("safetensors_fuzz", "bf16.safetensors", read(os.path.join(hf, "model.safetensors")))
        put("safetensors_fuzz", "f32_f16.safetensors", safetensors({
            "a": ("F32", [2, 3], f32([0.5, -1, 2, 0, 1e-3, 7])),
            "b": ("F16", [4], struct.pack("<4e", 1.0, -2.0, 0.25, 65504.0)),
            "c": ("F64", [1], struct.pack("<d", 3.5)),
            "d": ("U8", [3], b"\x01\x02\x03")}, {"format": "pt"}))
        tj = read(os.path.join(hf, "tokenizer.json"))
        put("tokenizer_json_fuzz", "byte_level.json",
            tj + b"\n#tokenizer_config.json\n" + read(os.path.join(hf, "tokenizer_config.json")))
        put("tokenizer_json_fuzz", "sentencepiece.json",
            json.dumps(sentencepiece_tokenizer(), ensure_ascii=False).encode())

        # GGUF models: the folder converted (tokenizer and chat template included), and random
        # ones of each ternary type and architecture.
        models = os.path.join(tmp, "models")
        os.makedirs(models)
        run("convert", hf, "-o", os.path.join(models, "hf_tq2_0.gguf"), "--type", "tq2_0")
        run("convert", hf, "-o", os.path.join(models, "hf_i2_s.gguf"), "--type", "i2_s")
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            json.dump({"n_embd": 256, "n_ff": 256, "n_head": 2, "n_head_kv": 1, "n_layer": 1,
                       "n_vocab": 32, "n_ctx": 64}, f)
        run("create", "--config", cfg, "--random", "--type", "tq1_0", "-o",
            os.path.join(models, "random_tq1_0.gguf"))
        run("create", "--config", cfg, "--random", "--arch", "llama", "--untied", "--act", "silu",
            "-o", os.path.join(models, "random_llama.gguf"))
        for name in sorted(os.listdir(models)):
            put("gguf_model_fuzz", name, read(os.path.join(models, name)))

        # An adapter of the shipped model's shapes (the adapter target checks against it), one
        # step of training on a few rows; and its PEFT export.
        model = os.path.join(ROOT, "models", "austen-tiny.gguf")
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for i in range(4):
                f.write(json.dumps({"text": "It is a truth universally acknowledged %d." % i}) + "\n")
        adapter = os.path.join(tmp, "adapter.gguf")
        run("finetune", "-m", model, "--data", data, "-o", adapter, "--steps", "1", "--rank", "1",
            "--targets", "q,down", "-c", "16", "--device", "cpu", "-t", "1")
        put("gguf_adapter_fuzz", "q_down_rank1.gguf", read(adapter))
        peft = os.path.join(tmp, "peft")
        run("export-peft", adapter, "-o", peft)
        conf = read(os.path.join(peft, "adapter_config.json"))
        put("peft_fuzz", "q_down_rank1", struct.pack("<I", len(conf)) + conf +
            read(os.path.join(peft, "adapter_model.safetensors")))

        # Datasets: the three JSONL formats and plain text.
        put("dataset_fuzz", "text.jsonl", '{"text": "It is a truth universally acknowledged."}\n'
            '{"text": "She was \\u00e9tonn\\u00e9e <|eot_id|> and\\nwent on."}\n')
        put("dataset_fuzz", "completions.jsonl",
            '{"prompt": "Who wrote Emma?", "completion": " Jane Austen."}\n'
            '{"prompt": "", "completion": "x"}\n')
        put("dataset_fuzz", "chat.jsonl", json.dumps({"messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Good day."}]}) + "\n")
        put("dataset_fuzz", "plain.txt", "Chapter 1\n\nIt is a truth universally acknowledged.\n")

        # Text for the tokenizers.
        put("tokenize_fuzz", "prose", "It is a truth universally acknowledged, that a single man.")
        put("tokenize_fuzz", "unicode", "caf\u00e9 \u2014 \u65e5\u672c\u8a9e \U0001F600\n\t  x")
        put("tokenize_fuzz", "special", "<|eot_id|>hi <s></s><|begin_of_text|>")
        put("tokenize_fuzz", "bytes", b"\xc3\x28 \xff\xfe\x00 end")

        # Chat templates: each family's Jinja, then messages (0x1E between records; a message's
        # first byte picks its role: 0 system, 1 user, 2 assistant).
        msgs = "\x1e\x00Be brief.\x1e\x01Hello there\x1e\x02Good day.\x1e\x01<|eot_id|>again"
        for name, jinja in [("llama3", LLAMA3_TEMPLATE), ("chatml", CHATML_TEMPLATE),
                            ("bitnet", BITNET_TEMPLATE)]:
            put("chat_template_fuzz", name, jinja + msgs)

        # Server request bodies.
        bodies = {
            "completion": {"model": "austen-tiny.gguf", "prompt": "It is a truth", "max_tokens": 8,
                           "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
                           "seed": 3, "stop": ["\n", "."], "stream": True,
                           "stream_options": {"include_usage": True}, "n": 1,
                           "lora": [{"id": 0, "scale": 0.5}], "repeat_penalty": 1.1,
                           "repeat_last_n": 32, "frequency_penalty": 0.5,
                           "presence_penalty": -0.25, "logit_bias": {"300": -100, "7": 2.5},
                           "logprobs": 2},
            "chat": {"messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hello"}],
                     "max_tokens": 16, "temperature": 0, "stop": "x", "ignore_eos": False,
                     "logit_bias": [[300, False], [7, 1.5]], "logprobs": True, "top_logprobs": 3},
            "chat_parts": {"messages": [{"role": "user",
                                         "content": [{"type": "text", "text": "Hi"}]}],
                           "max_completion_tokens": 4, "seed": -1},
            "prompt_tokens": {"prompt": [1, 2, 3], "max_tokens": 2},
        }
        for name, body in bodies.items():
            put("server_body_fuzz", name + ".json", json.dumps(body))
        put("server_body_fuzz", "tokenize.json", json.dumps(
            {"content": "It is a truth <|eot_id|>", "add_special": True, "with_pieces": True}))
        put("server_body_fuzz", "detokenize.json", json.dumps({"tokens": [1, 2, 300, 4095]}))
        put("server_body_fuzz", "lora_adapters.json",
            json.dumps([{"id": 0, "scale": 0.5}, {"id": 1, "scale": 2}]))

        # Fine-tuning job options.
        put("job_options_fuzz", "all_fields.json", json.dumps({
            "targets": "q,v", "rank": 8, "alpha": 16, "rslora": False, "dropout": 0.05,
            "lr": 0.0001, "schedule": "cosine", "warmup": 10, "weight_decay": 0.01,
            "grad_clip": 1.0, "epochs": 2, "steps": 0, "ctx": 256, "batch": 4, "grad_accum": 2,
            "mask_prompt": True, "chat_template": "chatml", "grad_checkpointing": True,
            "seed": 3, "val_every": 50, "val_examples": 0, "save_every": 20,
            "max_bad_steps": 5}))
        put("job_options_fuzz", "few.json", json.dumps({"rank": 4, "steps": 10}))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
