"""Writes assets/text/{calib,heldout}.txt and assets/text/SOURCES.md from the corpus splits.

Documents are joined by one blank line; the file ends with a newline. SOURCES.md lists each document's
origin (file and Debian package) and the licences the package's copyright file declares.
"""
import argparse
import collections
import json
import os
import re


def licences(pkg):
    path = f"/usr/share/doc/{pkg}/copyright"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return "see the package's copyright file"
    names = []
    dep5 = text.startswith("Format:")
    for m in re.finditer(r"^License:[ \t]*(\S.*)$", text, re.M):
        name = m.group(1).strip()
        if name not in names:
            names.append(name)
    if dep5 and names:
        return ", ".join(names)
    found = []
    for pat, name in ((r"GNU General Public License", "GPL"), (r"Lesser General Public|Library General Public", "LGPL"),
                      (r"GNU Free Documentation License", "GFDL"), (r"Apache License", "Apache"),
                      (r"BSD|Redistribution and use in source and binary forms", "BSD"), (r"Permission is hereby granted", "MIT/X11-style"),
                      (r"Artistic", "Artistic")):
        if re.search(pat, text):
            found.append(name)
    return ", ".join(found) if found else f"see {path}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = ["# Sources of the embedded texts", "",
             "Real English text extracted offline from the Debian documentation installed on the build",
             "machine (Debian/Ubuntu packages): manual pages under /usr/share/man/man[1-8] rendered by",
             "man-db/groff at 80 columns (no hyphenation or justification, overstrikes removed, leading",
             "indentation and page header/footer lines removed), plain-text files under /usr/share/doc",
             "(README*, *.txt) and /usr/share/common-licenses. Each document goes to exactly one split",
             "(train / calib / heldout) by a hash of its path (tools/train/build_corpus.py); the training",
             "split is not committed. The texts are verbatim apart from that whitespace normalisation;",
             "copyright stays with their authors under the licences named below (from each package's",
             "/usr/share/doc/<package>/copyright), all of which permit redistribution.", ""]
    for split in ("calib", "heldout"):
        docs = [json.loads(line) for line in open(os.path.join(args.corpus, f"{split}.jsonl"), encoding="utf-8")]
        text = "\n\n".join(d["text"] for d in docs) + "\n"
        with open(os.path.join(args.out, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        by_pkg = collections.OrderedDict()
        for d in docs:
            by_pkg.setdefault(d["pkg"], []).append(d["src"])
        lines += [f"## {split}.txt ({len(text.encode())} bytes, {len(docs)} documents, in this order)", "",
                  "| package | licences (copyright file) | documents |", "|---|---|---|"]
        for pkg, srcs in sorted(by_pkg.items()):
            lines.append(f"| {pkg} | {licences(pkg)} | {'<br>'.join(srcs)} |")
        lines.append("")
    with open(os.path.join(args.out, "SOURCES.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
