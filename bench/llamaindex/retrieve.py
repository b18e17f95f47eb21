"""The peer of glassbox-bench's `search` section: LlamaIndex's retrievers over the same
chunks, the same vectors and the same model.

The chunks (text, file name, and the all-MiniLM-L6-v2 vector our fleet stored) go into a
PGVectorStore with hybrid search on (its `text_search_tsv` column, English config), on
the same Postgres, as TextNodes that already carry their embedding (so nothing is
re-embedded). Queries are embedded by HuggingFaceEmbedding on the same model folder.
Three retrievers answer every question, top k each:

- vector: `index.as_retriever()` (PGVectorStore's default, cosine distance);
- text: `vector_store_query_mode="sparse"` (ts_rank over plainto_tsquery);
- hybrid: `QueryFusionRetriever([vector, text], mode="reciprocal_rerank",
  num_queries=1)`, LlamaIndex's documented reciprocal-rank fusion recipe.

Prints one JSON object: for each retriever, per question, the file names of the hits in
order and the seconds the retrieve() call took (query embedding included).

Usage: python retrieve.py --chunks chunks.jsonl --questions questions.json \
    --model-dir DIR --database-url URL --top-k 10 --threads 2
"""

import argparse
import json
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()

    import torch
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.postgres import PGVectorStore

    torch.set_num_threads(arguments.threads)
    embedding = HuggingFaceEmbedding(
        model_name=arguments.model_dir, device="cpu", max_length=256
    )

    url = urlsplit(arguments.database_url)
    credentials = url.username or "postgres"
    if url.password:
        credentials += f":{url.password}"
    location = f"{credentials}@{url.hostname}:{url.port or 5432}{url.path}"
    store = PGVectorStore.from_params(
        connection_string=f"postgresql+psycopg2://{location}",
        async_connection_string=f"postgresql+asyncpg://{location}",
        table_name="peer_chunks",
        embed_dim=384,
        hybrid_search=True,
        text_search_config="english",
    )

    nodes = []
    with open(arguments.chunks, encoding="utf-8") as lines:
        for line in lines:
            chunk = json.loads(line)
            nodes.append(
                TextNode(
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                    metadata={"file_name": chunk["file_name"]},
                )
            )
    load_started = time.perf_counter()
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embedding,
    )
    load_seconds = time.perf_counter() - load_started

    top_k = arguments.top_k
    vector = index.as_retriever(similarity_top_k=top_k)
    text = index.as_retriever(
        vector_store_query_mode="sparse", sparse_top_k=top_k, similarity_top_k=top_k
    )
    hybrid = QueryFusionRetriever(
        [vector, text],
        mode="reciprocal_rerank",
        similarity_top_k=top_k,
        num_queries=1,
        use_async=False,
        # With one query no LLM writes variants; MockLLM stops LlamaIndex from resolving
        # its default (OpenAI) model, which is neither installed nor reachable here.
        llm=MockLLM(),
    )
    retrievers = {"vector": vector, "text": text, "hybrid": hybrid}

    with open(arguments.questions, encoding="utf-8") as handle:
        questions = json.load(handle)
    # One untimed query per retriever: model and connection warm-up.
    for retriever in retrievers.values():
        retriever.retrieve(questions[0]["query"])

    results = {"load_seconds": load_seconds, "nodes": len(nodes), "retrievers": {}}
    for name, retriever in retrievers.items():
        answers = []
        for question in questions:
            started = time.perf_counter()
            hits = retriever.retrieve(question["query"])
            seconds = time.perf_counter() - started
            answers.append(
                {
                    "files": [hit.node.metadata.get("file_name") for hit in hits][:top_k],
                    "seconds": seconds,
                }
            )
        results["retrievers"][name] = answers
    print(json.dumps(results))


if __name__ == "__main__":
    main()
