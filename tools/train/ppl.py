"""Held-out perplexity protocol shared by training (GPU) and the committed references (CPU).

Protocol: the whole text is encoded at once without special tokens (no <|begin_of_text|>); the ids
are cut into consecutive non-overlapping windows of seq_len tokens (a trailing partial window is
dropped); each window is an independent forward pass from position 0; within a window tokens 1..T-1
are scored (the first token of each window is context only). perplexity = exp(sum NLL / count),
NLL accumulated in float64 from float32 log-softmax.
"""
import math

import torch
import torch.nn.functional as F


def windows(ids, seq_len, max_windows=None):
    n = len(ids) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    t = torch.as_tensor(ids[: n * seq_len], dtype=torch.long)
    return t.view(n, seq_len)


@torch.no_grad()
def window_nll(model, wins, batch=16, device="cpu"):
    """Returns (sum of NLL in float64, number of scored tokens)."""
    total, count = 0.0, 0
    for i in range(0, wins.shape[0], batch):
        x = wins[i : i + batch].to(device)
        logits = model(input_ids=x).logits.float()
        logp = F.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total += nll.double().sum().item()
        count += nll.numel()
    return total, count


def perplexity(model, ids, seq_len, max_windows=None, batch=16, device="cpu"):
    wins = windows(ids, seq_len, max_windows)
    total, count = window_nll(model, wins, batch, device)
    return math.exp(total / count), total / count, count, wins.shape[0]
