"""Trains the byte-level BPE tokenizer of the embedded models (Llama-3 layout) and tokenizes the corpus.

Layout as Meta-Llama-3's tokenizer.json: no normalizer; pre-tokenizer Sequence[Split(Llama-3 regex,
isolated), ByteLevel(add_prefix_space=false, use_regex=false)]; BPE with ignore_merges=true; ByteLevel
decoder; post-processor Sequence[ByteLevel, TemplateProcessing] that prepends <|begin_of_text|>.
The two special tokens take the last two ids, as in Llama 3.

  python tools/train/train_tokenizer.py --corpus .train/corpus --vocab 2048 --out .train/tok
writes OUT/tokenizer.json, OUT/tokenizer_config.json and OUT/{train,calib,heldout}.u16 (token ids,
uint16 little endian; each document encoded without special tokens and followed by the ids of "\n\n").
"""
import argparse
import json
import os

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def build(vocab_size, texts):
    tok = Tokenizer(models.BPE(ignore_merges=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == vocab_size - 2, tok.get_vocab_size()
    tok.add_special_tokens([BOS, EOS])
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    assert (bos_id, eos_id) == (vocab_size - 2, vocab_size - 1)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
            special_tokens=[(BOS, bos_id)]),
    ])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train = load(os.path.join(args.corpus, "train.jsonl"))
    tok = build(args.vocab, train)
    tok.save(os.path.join(args.out, "tokenizer.json"))

    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                 model_max_length=512, clean_up_tokenization_spaces=False)
    hf.save_pretrained(args.out)

    sep = tok.encode("\n\n", add_special_tokens=False).ids
    for split in ("train", "calib", "heldout"):
        texts = train if split == "train" else load(os.path.join(args.corpus, f"{split}.jsonl"))
        ids = []
        for enc in tok.encode_batch(texts, add_special_tokens=False):
            ids.extend(enc.ids)
            ids.extend(sep)
        arr = np.asarray(ids, dtype="<u2")
        arr.tofile(os.path.join(args.out, f"{split}.u16"))
        nbytes = sum(len(t.encode()) for t in texts)
        print(f"{split}: {len(texts)} docs, {nbytes} bytes, {arr.size} tokens, "
              f"{nbytes / arr.size:.2f} bytes/token")


if __name__ == "__main__":
    main()
