"""Trains the embedded models mq-tiny-dense (LlamaForCausalLM) and mq-tiny-moe (Qwen3MoeForCausalLM).

Run on one GPU, one process per model (both fit on one GPU at once); --device cpu trains in fp32
(no autocast), --init continues from a saved checkpoint with a fresh optimizer:
  python3 tools/train/train.py --model mq-tiny-dense --data .train/tok --out $OUT --budget 420
Training is time-budgeted: learning rate warms up linearly over the first --warmup steps, then follows a
cosine from --lr to lr/10 over the wall-clock budget. bf16 autocast, fp32 master weights, AdamW.
Batches are random windows of --seq-len+1 tokens of the token stream (documents joined by "\n\n").
Writes OUT/<model>/ (bf16 safetensors + config + generation config) and OUT/<model>.log.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppl  # noqa: E402

VOCAB = 2048
BOS_ID, EOS_ID = VOCAB - 2, VOCAB - 1


def make_model(name):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
    common = dict(vocab_size=VOCAB, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=64, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                  initializer_range=0.02, attention_bias=False, hidden_act="silu")
    if name == "mq-tiny-dense":
        cfg = LlamaConfig(num_hidden_layers=3, intermediate_size=512, mlp_bias=False, **common)
        model = LlamaForCausalLM(cfg)
    elif name == "mq-tiny-moe":
        cfg = Qwen3MoeConfig(num_hidden_layers=2, intermediate_size=512, moe_intermediate_size=128,
                             num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                             decoder_sparse_step=1, mlp_only_layers=[], router_aux_loss_coef=0.01,
                             output_router_logits=False, use_sliding_window=False, **common)
        model = Qwen3MoeForCausalLM(cfg)
    else:
        raise SystemExit(f"unknown model {name}")
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=420.0, help="training wall seconds")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--eval-every", type=float, default=30.0, help="seconds between held-out evals")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--init", help="continue from this saved checkpoint (fresh optimizer state)")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # bf16 autocast on the GPU; on a CPU (no GPU lent) plain fp32 is faster and exact.
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    out_dir = os.path.join(args.out, args.model)
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(args.out, f"{args.model}.log"), "w")

    def say(msg):
        print(f"[{args.model}] {msg}", flush=True)
        log.write(msg + "\n")
        log.flush()

    train = torch.from_numpy(np.fromfile(os.path.join(args.data, "train.u16"), dtype="<u2").astype(np.int64)).to(dev)
    held = np.fromfile(os.path.join(args.data, "heldout.u16"), dtype="<u2").astype(np.int64)
    held_w = ppl.windows(held, 256)
    say(f"train tokens {train.numel()}, heldout tokens {held.size} ({held_w.shape[0]} windows of 256)")

    if args.init:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32).to(dev)
        say(f"initialised from {args.init}")
    else:
        model = make_model(args.model).to(dev)
    moe = args.model == "mq-tiny-moe"
    nparam = sum(p.numel() for p in model.parameters())
    say(f"params {nparam} ({nparam * 2 / 2**20:.2f} MiB in bf16)")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    T = args.seq_len
    ar = torch.arange(T + 1, device=dev)

    def evaluate(max_windows=None):
        model.eval()
        with amp:
            p, nll, cnt, nw = ppl.perplexity(model, held, 256, max_windows, batch=64, device=dev)
        model.train()
        return p, nll

    def save():
        model.to(torch.bfloat16)
        model.config.dtype = "bfloat16"
        model.save_pretrained(out_dir)
        model.generation_config.bos_token_id = BOS_ID
        model.generation_config.eos_token_id = EOS_ID
        model.generation_config.save_pretrained(out_dir)
        model.float()

    t0 = time.time()
    step, ema, last_eval, last_save = 0, None, t0, t0
    warmup = args.warmup
    while True:
        el = time.time() - t0
        if el >= args.budget:
            break
        prog = min(el / args.budget, 1.0)
        lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        if step < warmup:
            lr *= (step + 1) / warmup
        for g in opt.param_groups:
            g["lr"] = lr
        off = torch.randint(0, train.numel() - T - 1, (args.batch,), device=dev, generator=gen)
        xb = train[off[:, None] + ar]
        with amp:
            out = model(input_ids=xb[:, :-1], output_router_logits=moe)
            loss = F.cross_entropy(out.logits.float().reshape(-1, VOCAB), xb[:, 1:].reshape(-1))
            total = loss + (model.config.router_aux_loss_coef * out.aux_loss if moe else 0.0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or ema is None:
            lv = loss.item()
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        if step % args.log_every == 0:
            msg = f"step {step} t {el:.0f}s lr {lr:.2e} loss {lv:.4f} ema {ema:.4f} gnorm {gn.item():.2f}"
            if moe:
                msg += f" aux {out.aux_loss.item():.3f}"
            if time.time() - last_eval > args.eval_every:
                p, _ = evaluate(64)
                msg += f" heldout64_ppl {p:.3f}"
                last_eval = time.time()
            say(msg)
        if time.time() - last_save > 120:
            save()
            last_save = time.time()
    say(f"done: {step} steps in {time.time() - t0:.1f}s, tokens seen {step * args.batch * T}, "
        f"final train loss ema {ema:.4f}")
    save()
    # Evaluate exactly the saved weights (bf16 rounded, computed in fp32).
    model.eval()
    p_all, nll_all, cnt, nw = ppl.perplexity(model, held, 256, None, batch=64, device=dev)
    p64, nll64, cnt64, _ = ppl.perplexity(model, held, 256, 64, batch=64, device=dev)
    res = dict(model=args.model, steps=step, train_loss_ema=ema, heldout_ppl_all=p_all,
               heldout_nll_all=nll_all, windows_all=nw, heldout_ppl_64=p64, heldout_nll_64=nll64)
    say(json.dumps(res))
    with open(os.path.join(args.out, f"{args.model}.result.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
