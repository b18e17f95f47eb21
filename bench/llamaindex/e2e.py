"""The peer of glassbox-bench's `e2e` section: LlamaIndex with the same local model.

LlamaIndex's IngestionPipeline on the same files our fleet ingests end to end: pypdf
(one Document per page, as LlamaIndex's PDFReader does) and docx2txt to read,
SentenceSplitter(200, 20), HuggingFaceEmbedding on the same all-MiniLM-L6-v2 folder
(sentence-transformers on PyTorch, batch 32, the same thread count), and PGVectorStore
on the same Postgres. Prints one JSON line with the time of each stage.

Usage: python e2e.py --model-dir DIR --threads N --database-url URL FILE...
"""

import argparse
import json
import pathlib
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    arguments = parser.parse_args()

    import_started = time.perf_counter()
    import docx2txt
    import torch
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.postgres import PGVectorStore
    from pypdf import PdfReader

    torch.set_num_threads(arguments.threads)
    import_seconds = time.perf_counter() - import_started

    timings = {"split": 0.0, "embed": 0.0, "store": 0.0}

    class TimedSplitter(SentenceSplitter):
        """SentenceSplitter whose transform records its wall time."""

        def __call__(self, nodes, **kwargs):
            started = time.perf_counter()
            try:
                return super().__call__(nodes, **kwargs)
            finally:
                timings["split"] += time.perf_counter() - started

    class TimedEmbedding(HuggingFaceEmbedding):
        """HuggingFaceEmbedding whose transform records its wall time."""

        def __call__(self, nodes, **kwargs):
            started = time.perf_counter()
            try:
                return super().__call__(nodes, **kwargs)
            finally:
                timings["embed"] += time.perf_counter() - started

    class TimedPGVectorStore(PGVectorStore):
        """PGVectorStore whose add() records its wall time."""

        def add(self, nodes, **add_kwargs):
            started = time.perf_counter()
            try:
                return super().add(nodes, **add_kwargs)
            finally:
                timings["store"] += time.perf_counter() - started

    load_started = time.perf_counter()
    embedding = TimedEmbedding(
        model_name=arguments.model_dir,
        device="cpu",
        embed_batch_size=arguments.batch_size,
        max_length=256,
    )
    load_seconds = time.perf_counter() - load_started

    url = urlsplit(arguments.database_url)
    credentials = url.username or "postgres"
    if url.password:
        credentials += f":{url.password}"
    location = f"{credentials}@{url.hostname}:{url.port or 5432}{url.path}"
    vector_store = TimedPGVectorStore.from_params(
        connection_string=f"postgresql+psycopg2://{location}",
        async_connection_string=f"postgresql+asyncpg://{location}",
        table_name="bench_chunks",
        embed_dim=384,
    )

    started = time.perf_counter()
    documents = []
    for path in arguments.files:
        if path.suffix == ".pdf":
            for number, page in enumerate(PdfReader(path).pages, start=1):
                documents.append(
                    Document(
                        # pypdf leaves NUL characters in some of these PDFs' text, which
                        # Postgres refuses in a text column: the one fix the peer needs.
                        text=page.extract_text().replace("\x00", ""),
                        metadata={"file_name": path.name, "page_label": str(number)},
                    )
                )
        else:
            documents.append(
                Document(text=docx2txt.process(str(path)), metadata={"file_name": path.name})
            )
    read_seconds = time.perf_counter() - started

    pipeline = IngestionPipeline(
        transformations=[TimedSplitter(chunk_size=200, chunk_overlap=20), embedding],
        vector_store=vector_store,
    )
    nodes = pipeline.run(documents=documents)
    total_seconds = time.perf_counter() - started

    print(
        json.dumps(
            {
                "files": len(arguments.files),
                "documents": len(documents),
                "nodes": len(nodes),
                "threads": torch.get_num_threads(),
                "import_seconds": import_seconds,
                "model_load_seconds": load_seconds,
                "read_seconds": read_seconds,
                "split_seconds": timings["split"],
                "embed_seconds": timings["embed"],
                "store_seconds": timings["store"],
                "total_seconds": total_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
