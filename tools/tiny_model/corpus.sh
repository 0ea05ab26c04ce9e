#!/usr/bin/env bash
# The tiny model's corpus: Jane Austen's six novels from Debian's r-cran-janeaustenr.
#
#   tools/tiny_model/corpus.sh [DIR]        (DIR defaults to .corpus, which git ignores)
#
# 1. Installs r-base-core and r-cran-janeaustenr (apt-get, needs root) unless Rscript can
#    already load janeaustenr.
# 2. Exports janeaustenr::austen_books() to DIR/books/<Title>.txt, one file per novel, as the
#    package holds them: Project Gutenberg lines hard-wrapped at about 70 characters,
#    paragraphs separated by blank lines, underscores around italics.
# 3. Normalises each novel: paragraphs unwrapped into single lines (one line per paragraph,
#    chapter headings kept as lines of their own), underscores dropped, spaces collapsed.
# 4. Splits each novel deterministically: its last paragraphs, about 2% of its characters, go
#    to DIR/valid.txt, the rest to DIR/train.txt (novels in alphabetical order).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.corpus}

if ! Rscript -e 'invisible(janeaustenr::austen_books())' >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    r-base-core r-cran-janeaustenr
fi

mkdir -p "$DIR/books"
Rscript - "$DIR/books" <<'R'
out <- commandArgs(trailingOnly = TRUE)[1]
books <- janeaustenr::austen_books()
for (title in levels(books$book)) {
  name <- gsub("[^A-Za-z]+", "_", title)
  writeLines(as.character(books$text[books$book == title]), file.path(out, paste0(name, ".txt")))
}
R

python3 - "$DIR" <<'PY'
import glob, os, re, sys

VALID_FRACTION = 0.02
out = sys.argv[1]


def paragraphs(path):
    """A novel's paragraphs, each unwrapped onto one line, without the italics underscores."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("_", "")
    paras = []
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        if line:
            paras.append(line)
    return paras


def split(paras):
    """(train, valid): valid is the shortest tail holding VALID_FRACTION of the characters."""
    total = sum(len(p) + 1 for p in paras)
    n, tail = len(paras), 0
    while tail < VALID_FRACTION * total:
        n -= 1
        tail += len(paras[n]) + 1
    return paras[:n], paras[n:]


train, valid = [], []
for path in sorted(glob.glob(os.path.join(out, "books", "*.txt"))):
    t, v = split(paragraphs(path))
    train += t
    valid += v
    print(f"{os.path.basename(path)}: {len(t)} + {len(v)} paragraphs")
for name, paras in (("train.txt", train), ("valid.txt", valid)):
    text = "\n".join(paras) + "\n"
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{os.path.join(out, name)}: {len(paras)} paragraphs, {len(text)} characters")
PY
