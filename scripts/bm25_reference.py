#!/usr/bin/env python3
"""An independent BM25 on Vitrine's relevance set (`vitrine bench relevance
--python PY` runs it): rank_bm25's BM25Okapi (k1 = 1.2, b = 0.75, as
Vitrine) over its own tokenizer (lowercase, alphanumeric runs, NLTK's English
stopwords, the Snowball English stemmer). Prints nDCG@10, recall@10 and top-1
per query kind as JSON.

Usage: bm25_reference.py SET.json   (SET: {"docs": [{"id", "text"}],
"queries": [{"text", "kind", "relevant": [ids]}]})
"""

import json
import math
import re
import sys

import snowballstemmer
from rank_bm25 import BM25Okapi

# NLTK's English stopword list (the list Qdrant's tokenizer also starts from).
STOPWORDS = set("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
his himself she she's her hers herself it it's its itself they them their theirs themselves what which who
whom this that that'll these those am is are was were be been being have has had having do does did doing a
an the and but if or because as until while of at by for with about against between into through during
before after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too very s t
can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn
needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

STEM = snowballstemmer.stemmer("english")


def tokens(text):
    words = re.findall(r"[0-9a-z]+", text.lower())
    return STEM.stemWords([w for w in words if w not in STOPWORDS])


def ndcg10(ranked, relevant):
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def main():
    data = json.load(open(sys.argv[1]))
    ids = [d["id"] for d in data["docs"]]
    bm25 = BM25Okapi([tokens(d["text"]) for d in data["docs"]], k1=1.2, b=0.75)
    by_kind = {}
    for q in data["queries"]:
        scores = bm25.get_scores(tokens(q["text"]))
        # Only documents that share a term are hits (as in a keyword index).
        order = sorted((i for i in range(len(ids)) if scores[i] > 0), key=lambda i: (-scores[i], ids[i]))
        ranked = [ids[i] for i in order[:10]]
        relevant = set(q["relevant"])
        k = by_kind.setdefault(q["kind"], {"ndcg": [], "recall": [], "top1": []})
        k["ndcg"].append(ndcg10(ranked, relevant))
        found = sum(1 for d in ranked if d in relevant)
        k["recall"].append(found / min(10, len(relevant)) if relevant else 0.0)
        k["top1"].append(1.0 if ranked and ranked[0] in relevant else 0.0)
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    print(json.dumps({kind: {"queries": len(v["ndcg"]), "ndcg@10": mean(v["ndcg"]),
                             "recall@10": mean(v["recall"]), "top1": mean(v["top1"])}
                      for kind, v in by_kind.items()}))


if __name__ == "__main__":
    main()
