#!/usr/bin/env python3
"""Writes data/demo/{train,valid,test}.jsonl: the fine-tuning task of the README's demo.

The task: given a person's name, write it surname first ("Elizabeth Bennet" -> "Bennet,
Elizabeth"). A model pretrained only on novels continues the prompt as prose instead, so it
scores near zero before fine-tuning; after it, the answer is a copy of two words of the prompt
in the other order, which a LoRA adapter learns in a few hundred steps.

Every (first name, surname) pair appears in one split only, so the test measures the skill on
pairs of names it has not seen together. (Surnames never seen in training stay hard for a
model this small: it tends to answer with a surname it was taught.) Deterministic: the same
files on every run.
"""
import json
import os
import random

FIRST = """Anne Catherine Charlotte Eleanor Elinor Elizabeth Emma Fanny Harriet Isabella Jane
Julia Lydia Louisa Maria Marianne Mary Penelope Sophia Susan Alice Clara Edith Grace Helen
Lucy Margaret Rose Sarah Agnes Charles Edmund Edward Frederick George Henry James John Robert
Thomas William Arthur Walter Richard Francis Samuel Philip Peter Stephen Andrew""".split()

SURNAMES = """Bennet Darcy Bingley Collins Wickham Lucas Dashwood Ferrars Brandon Willoughby
Jennings Steele Woodhouse Knightley Elton Churchill Fairfax Bates Martin Weston Bertram Crawford
Price Norris Rushworth Yates Elliot Wentworth Musgrove Croft Russell Harville Benwick Morland
Tilney Thorpe Allen Morgan Carter Hughes Turner Walker Wright Baker Hall Green Cooper Ward
Fletcher Palmer Gardner Reed Hayes Spencer Porter Shaw Marsh Lane Bell Grant""".split()


def row(first, surname):
    return {"prompt": f"Write the name surname first: {first} {surname}.\nAnswer:",
            "completion": f" {surname}, {first}"}


def main():
    rng = random.Random(2026)
    pairs = [(f, s) for f in FIRST for s in SURNAMES]
    rng.shuffle(pairs)
    test, valid, train = pairs[:100], pairs[100:140], pairs[140:740]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo")
    os.makedirs(out, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for first, surname in rows:
                f.write(json.dumps(row(first, surname)) + "\n")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
