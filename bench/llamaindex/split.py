"""The peer of glassbox-bench's "chunking alone" section.

LlamaIndex's SentenceSplitter(chunk_size=200, chunk_overlap=20), with its default tokenizer
(tiktoken), on the texts glassbox-bench wrote (one Document per file). Times
get_nodes_from_documents only, best of --rounds after one warm-up. Prints one JSON line.

Usage: python split.py --texts DIR [--rounds 3]
"""

import argparse
import json
import pathlib
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", required=True, type=pathlib.Path)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()

    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    documents = [
        Document(text=path.read_text(encoding="utf-8"), metadata={"file_name": path.name})
        for path in sorted(arguments.texts.glob("*.txt"))
    ]
    splitter = SentenceSplitter(chunk_size=200, chunk_overlap=20)
    splitter.get_nodes_from_documents(documents)
    best = float("inf")
    nodes = []
    for _ in range(arguments.rounds):
        started = time.perf_counter()
        nodes = splitter.get_nodes_from_documents(documents)
        best = min(best, time.perf_counter() - started)
    print(json.dumps({"documents": len(documents), "nodes": len(nodes), "best_seconds": best}))


if __name__ == "__main__":
    main()
