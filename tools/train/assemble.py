"""Copies a trained checkpoint and the tokenizer into assets/models/<name>/.

  python tools/train/assemble.py --ckpt .train/out --tok .train/tok
The MoE config also gets "num_experts" next to transformers 5's "num_local_experts" (same value), the
key Qwen3-MoE checkpoints on the Hub carry, so readers of either spelling find it.
"""
import argparse
import json
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ("config.json", "generation_config.json", "model.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tok", required=True)
    args = ap.parse_args()
    for name in ("mq-tiny-dense", "mq-tiny-moe"):
        dst = os.path.join(ROOT, "assets/models", name)
        os.makedirs(dst, exist_ok=True)
        for f in FILES:
            shutil.copyfile(os.path.join(args.ckpt, name, f), os.path.join(dst, f))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(args.tok, f), os.path.join(dst, f))
        cfg_path = os.path.join(dst, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        if "num_local_experts" in cfg:
            cfg["num_experts"] = cfg["num_local_experts"]
            with open(cfg_path, "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)
                f.write("\n")


if __name__ == "__main__":
    main()
