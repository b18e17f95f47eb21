"""The peer of glassbox-bench's `embed` section: sentence-transformers on PyTorch.

Loads all-MiniLM-L6-v2 from the same folder our encoder reads (model.safetensors and
the sentence-transformers module files next to it), with the same thread count, and
then answers requests from the bench one JSON line at a time, so the bench can
alternate our runs and this peer's on the same chunks:

    request:  {"texts": "chunks.json", "batch_size": 32, "vectors": "ours.json"}
    answer:   {"chunks": 1024, "seconds": 7.9, "min_cosine": 0.99999, "mean_cosine": ...}

`texts` is a JSON list of strings; `vectors`, when given, is our JSON list of vectors for
the same texts, and the answer then carries the cosine between each pair. The first line
printed is {"ready": true, "torch": "...", "sentence_transformers": "...", "threads": N}.

Usage: python embed.py --model-dir DIR --threads N
"""

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", required=True, type=int)
    arguments = parser.parse_args()

    import numpy
    import sentence_transformers
    import torch

    torch.set_num_threads(arguments.threads)
    model = sentence_transformers.SentenceTransformer(arguments.model_dir, device="cpu")
    model.max_seq_length = 256
    # One untimed batch: first-touch allocations and thread pool start.
    model.encode(["warm up the model"] * 8, batch_size=8)
    reply(
        {
            "ready": True,
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "threads": torch.get_num_threads(),
            "max_seq_length": model.max_seq_length,
        }
    )

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        with open(request["texts"], encoding="utf-8") as source:
            texts = json.load(source)
        started = time.perf_counter()
        vectors = model.encode(
            texts,
            batch_size=request["batch_size"],
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        seconds = time.perf_counter() - started
        answer = {"chunks": len(texts), "seconds": seconds}
        if request.get("vectors"):
            with open(request["vectors"], encoding="utf-8") as source:
                ours = numpy.asarray(json.load(source), dtype=numpy.float32)
            ours /= numpy.linalg.norm(ours, axis=1, keepdims=True)
            cosines = (ours * vectors).sum(axis=1)
            answer["min_cosine"] = float(cosines.min())
            answer["mean_cosine"] = float(cosines.mean())
        reply(answer)


def reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


if __name__ == "__main__":
    main()
