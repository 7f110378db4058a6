"""Computes the held-out perplexity golden of an embedded model with transformers on CPU in fp32.

  python tools/train/make_reference.py assets/models/mq-tiny-dense [--windows 64] [--all]
writes <model>/ppl_reference.json (protocol in tools/train/ppl.py, repeated in the JSON).
"""
import argparse
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--text", default=os.path.join(ROOT, "assets/text/heldout.txt"))
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--all", action="store_true", help="also print the perplexity over all windows")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    raw = open(args.text, "rb").read()
    ids = tok(raw.decode("utf-8"), add_special_tokens=False)["input_ids"]
    p, nll, count, nw = ppl.perplexity(model, ids, args.seq_len, args.windows)
    res = {
        "protocol": ("text = assets/text/heldout.txt read as UTF-8 and encoded whole with the model's "
                     "tokenizer.json without special tokens (no BOS); ids cut into consecutive "
                     "non-overlapping windows of seq_len tokens starting at id 0, the first num_windows "
                     "windows used; each window is an independent forward pass (positions 0..seq_len-1, "
                     "no cache); in each window the targets are tokens 1..seq_len-1 (the first token is "
                     "not scored); perplexity = exp(mean NLL over all scored tokens), NLL from float32 "
                     "log-softmax summed in float64"),
        "model": os.path.basename(os.path.normpath(args.model)),
        "text": "assets/text/heldout.txt",
        "text_sha256": hashlib.sha256(raw).hexdigest(),
        "text_tokens": len(ids),
        "first_ids": ids[:16],
        "seq_len": args.seq_len,
        "num_windows": nw,
        "scored_tokens": count,
        "mean_nll": nll,
        "perplexity": p,
        "weights": "bf16 safetensors upcast to float32",
        "compute": "transformers 5.14.1, torch 2.11 CPU, float32, sdpa attention",
    }
    if args.all:
        pa, nlla, _, nwa = ppl.perplexity(model, ids, args.seq_len, None)
        res["all_windows"] = {"num_windows": nwa, "mean_nll": nlla, "perplexity": pa}
    with open(os.path.join(args.model, "ppl_reference.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
