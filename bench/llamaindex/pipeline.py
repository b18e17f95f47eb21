"""The peer of glassbox-bench's "pipeline without the model" section.

LlamaIndex's IngestionPipeline on the same corpus: pypdf (one Document per page, as
LlamaIndex's PDFReader does) and docx2txt to read, SentenceSplitter(200, 20), a mock
embedding of 384 dimensions (the model's cost is excluded on both sides), and
PGVectorStore (its defaults: no HNSW index) on the same Postgres. Prints one JSON line.

Usage: python pipeline.py --corpus DIR --database-url postgres://user@host:port/db
"""

import argparse
import json
import pathlib
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True, type=pathlib.Path)
    parser.add_argument("--database-url", required=True)
    arguments = parser.parse_args()

    import_started = time.perf_counter()
    import docx2txt
    from llama_index.core import Document
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.postgres import PGVectorStore
    from pypdf import PdfReader

    import_seconds = time.perf_counter() - import_started

    timings = {"store": 0.0}

    class TimedPGVectorStore(PGVectorStore):
        """PGVectorStore whose add() records its wall time."""

        def add(self, nodes, **add_kwargs):
            started = time.perf_counter()
            try:
                return super().add(nodes, **add_kwargs)
            finally:
                timings["store"] += time.perf_counter() - started

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
    files = 0
    for pdf in sorted((arguments.corpus / "pdf").glob("*.pdf")):
        files += 1
        reader = PdfReader(pdf)
        for number, page in enumerate(reader.pages, start=1):
            documents.append(
                Document(
                    # pypdf leaves NUL characters in some of these PDFs' text, which
                    # Postgres refuses in a text column: the one fix the peer needs.
                    text=page.extract_text().replace("\x00", ""),
                    metadata={"file_name": pdf.name, "page_label": str(number)},
                )
            )
    for docx in sorted((arguments.corpus / "docx").glob("*.docx")):
        files += 1
        documents.append(
            Document(text=docx2txt.process(str(docx)), metadata={"file_name": docx.name})
        )
    read_seconds = time.perf_counter() - started

    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=200, chunk_overlap=20),
            MockEmbedding(embed_dim=384),
        ],
        vector_store=vector_store,
    )
    run_started = time.perf_counter()
    nodes = pipeline.run(documents=documents)
    run_seconds = time.perf_counter() - run_started
    total_seconds = time.perf_counter() - started

    print(
        json.dumps(
            {
                "files": files,
                "documents": len(documents),
                "nodes": len(nodes),
                "import_seconds": import_seconds,
                "read_seconds": read_seconds,
                "transform_seconds": run_seconds - timings["store"],
                "store_seconds": timings["store"],
                "total_seconds": total_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
