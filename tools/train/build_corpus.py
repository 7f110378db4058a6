"""Builds the English text corpus of the embedded models from this machine's Debian documentation.

Sources (all offline): the English manual pages under /usr/share/man/man[1-8] rendered with man-db
(groff, 80 columns, no hyphenation/justification, overstrikes removed by `col -bx`), plain-text
documentation under /usr/share/doc (README*, *.txt, gzipped or not), and /usr/share/common-licenses.
Split by document, deterministically: documents of at most --max-eval-doc-bytes (gcloud pages
excluded) are taken in the order of a hash of their path, the first ones up to --heldout-bytes go to
heldout, the next ones up to --calib-bytes to calib; everything else is train. Identical texts are kept once. All man
pages are used except google-cloud-cli's ~16600 generated `gcloud_*` pages (templated near-duplicates):
of those only --gcloud-bytes (hash order) go to train, none to calib or held-out.

Writes OUT/{train,calib,heldout}.jsonl (one {"src","pkg","text"} per document).
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from multiprocessing import Pool

MAN_ROOT = "/usr/share/man"
DOC_ROOT = "/usr/share/doc"
LICENSE_ROOT = "/usr/share/common-licenses"


def path_hash(path):
    return hashlib.sha1(path.encode()).hexdigest()


def is_gcloud(path):
    return os.path.basename(path).startswith("gcloud")


def package_map():
    owner = {}
    info = "/var/lib/dpkg/info"
    for name in sorted(os.listdir(info)):
        if not name.endswith(".list"):
            continue
        pkg = name[:-5].split(":")[0]
        with open(os.path.join(info, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                owner[line.rstrip("\n")] = pkg
    return owner


def clean(text):
    text = text.replace("\r", "")
    # Drop remaining control characters except newline and tab.
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    out, blank = [], 0
    for ln in lines:
        ln = ln.strip()
        if not ln:
            blank += 1
            continue
        if out and blank:
            out.append("")
        blank = 0
        out.append(ln)
    return "\n".join(out)


HEADER = re.compile(r"^\S+\(\S+\)\s.*\S+\(\S+\)$")


def render_man(path):
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    try:
        p = subprocess.run(
            f"man --nh --nj -l -E UTF-8 -P cat '{path}' 2>/dev/null | col -bx",
            shell=True, capture_output=True, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        return path, ""
    text = p.stdout.decode("utf-8", errors="replace")
    lines = [ln for ln in text.split("\n")]
    # Page header "LS(1)  User Commands  LS(1)" and footer "GNU coreutils 9.4  2024-01-01  LS(1)".
    nonempty = [i for i, ln in enumerate(lines) if ln.strip()]
    if nonempty and HEADER.match(lines[nonempty[0]].strip()):
        lines[nonempty[0]] = ""
    if len(nonempty) > 1 and re.search(r"\S+\(\S+\)$", lines[nonempty[-1]].strip()):
        lines[nonempty[-1]] = ""
    return path, clean("\n".join(lines))


def read_doc(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(2_000_000)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return ""
    return clean(text)


def english_enough(text):
    if len(text) < 400:
        return False
    ascii_letters = sum(c.isascii() and c.isalpha() for c in text)
    words = re.findall(r"[A-Za-z]{2,}", text)
    # Prose, not tables of numbers or code dumps.
    return ascii_letters > 0.55 * len(text) and len(words) > 60


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-bytes", type=int, default=36_000_000)
    ap.add_argument("--gcloud-bytes", type=int, default=4_000_000)
    ap.add_argument("--max-doc-bytes", type=int, default=600_000)
    ap.add_argument("--heldout-bytes", type=int, default=200_000)
    ap.add_argument("--calib-bytes", type=int, default=400_000)
    ap.add_argument("--max-eval-doc-bytes", type=int, default=40_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", help="directory of a previous run's *.jsonl: reuse its rendered pages")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    owner = package_map()

    docs = []  # (path, text)
    for root in (LICENSE_ROOT,):
        for name in sorted(os.listdir(root)):
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                docs.append((p, read_doc(p)))
    for dirpath, _, files in sorted(os.walk(DOC_ROOT)):
        for name in sorted(files):
            base = name[:-3] if name.endswith(".gz") else name
            if not (base.upper().startswith("README") or base.endswith(".txt")):
                continue
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            docs.append((p, read_doc(p)))
    docs = [(p, t) for p, t in docs if english_enough(t) and len(t.encode()) <= args.max_doc_bytes]
    seen = set()
    unique = []
    for p, t in docs:
        h = hashlib.sha1(t.encode()).hexdigest()
        if h not in seen:
            seen.add(h)
            unique.append((p, t))
    docs = unique
    total = sum(len(t.encode()) for _, t in docs)
    print(f"doc files: {len(docs)} documents, {total} bytes", file=sys.stderr)

    pages = []
    for sec in range(1, 9):
        d = os.path.join(MAN_ROOT, f"man{sec}")
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if name.endswith(".gz") and os.path.isfile(p) and not os.path.islink(p):
                pages.append(p)
    pages.sort(key=lambda p: (is_gcloud(p), path_hash(p)))
    cache = {}
    if args.cache:
        for name in ("train", "calib", "heldout"):
            with open(os.path.join(args.cache, f"{name}.jsonl"), encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    cache[d["src"]] = d["text"]
    gcloud = 0

    def rendered():
        todo = [p for p in pages if p not in cache]
        with Pool(args.jobs) as pool:
            fresh = pool.imap(render_man, todo, chunksize=8)
            for p in pages:
                yield next(fresh) if p not in cache else (p, cache[p])

    for i, (p, t) in enumerate(rendered()):
        if total >= args.max_bytes or (is_gcloud(p) and gcloud >= args.gcloud_bytes):
            break
        h = hashlib.sha1(t.encode()).hexdigest()
        if not english_enough(t) or h in seen or len(t.encode()) > args.max_doc_bytes:
            continue
        seen.add(h)
        docs.append((p, t))
        total += len(t.encode())
        if is_gcloud(p):
            gcloud += len(t.encode())
        if i % 500 == 0:
            print(f"man {i}/{len(pages)} total {total}", file=sys.stderr, flush=True)

    outs = {s: open(os.path.join(args.out, f"{s}.jsonl"), "w", encoding="utf-8")
            for s in ("train", "calib", "heldout")}
    sizes = {s: 0 for s in outs}
    split = {}
    filled = {"heldout": 0, "calib": 0}
    limit = {"heldout": args.heldout_bytes, "calib": args.calib_bytes}
    for p, t in sorted(docs, key=lambda d: path_hash(d[0])):
        n = len(t.encode())
        if is_gcloud(p) or n > args.max_eval_doc_bytes:
            continue
        for s in ("heldout", "calib"):
            if filled[s] < limit[s]:
                split[p] = s
                filled[s] += n
                break
    for p, t in sorted(docs):
        s = split.get(p, "train")
        pkg = owner.get(p, "unknown")
        outs[s].write(json.dumps({"src": p, "pkg": pkg, "text": t}, ensure_ascii=False) + "\n")
        sizes[s] += len(t.encode())
    for f in outs.values():
        f.close()
    print(json.dumps(sizes), file=sys.stderr)


if __name__ == "__main__":
    main()
