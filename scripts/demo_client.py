"""The demo's client: upload the samples through the API, show progress, search.

Standard library only, so `make demo` needs nothing beyond Python 3.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".md": "text/markdown",
}
QUERIES = ["what happens after the fifth receive of a message", "how much sun do tomatoes need"]


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def upload(base, token, path):
    name = os.path.basename(path)
    content_type = CONTENT_TYPES[os.path.splitext(name)[1]]
    with open(path, "rb") as handle:
        payload = handle.read()
    status, created = call(base, token, "POST", "/v1/files", {"name": name, "content_type": content_type, "size": len(payload)})
    if status != 201:
        sys.exit(f"create {name} failed: {status} {created}")
    put = urllib.request.Request(created["upload"]["url"], data=payload, method="PUT")
    for header, value in created["upload"]["headers"].items():
        put.add_header(header, value)
    with urllib.request.urlopen(put, timeout=60):
        pass
    status, confirmed = call(base, token, "POST", f"/v1/files/{created['id']}/confirm", {})
    if status != 202:
        sys.exit(f"confirm {name} failed: {status} {confirmed}")
    print(f"  uploaded {name:<24} {len(payload):>7} bytes  -> {created['id']}")
    return created["id"]


def main():
    base, token, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    print("==> uploading sample documents (made by the project: PDF, DOCX, Markdown)")
    ids = [upload(base, token, os.path.join(folder, name)) for name in sorted(os.listdir(folder))]

    print("==> processing")
    deadline = time.time() + 300
    files = {}
    while time.time() < deadline:
        for file_id in ids:
            _, files[file_id] = call(base, token, "GET", f"/v1/files/{file_id}")
        line = "  ".join(f"{f['name']}: {f['status']}{'/' + f['stage'] if f.get('stage') else ''}" for f in files.values())
        print(f"\r  {line:<110}", end="", flush=True)
        if all(f["status"] in ("ready", "failed", "dead_lettered") for f in files.values()):
            break
        time.sleep(0.5)
    print()

    for query in QUERIES:
        print(f'==> search: "{query}"')
        status, found = call(base, token, "POST", "/v1/search", {"query": query, "top_k": 3})
        if status != 200:
            print(f"  search failed: {status} {found}")
            continue
        for hit in found["hits"]:
            snippet = " ".join(hit["text"].split())[:90]
            page = hit["page"] if hit["page"] is not None else "-"
            print(f"  {hit['score']:.3f}  {hit['file_name']:<24} page {page:<3} {snippet}")

    print("==> file status")
    print(f"  {'file':<24} {'status':<14} {'type':<9} {'pages':>5} {'chunks':>6}  {'model':<18} stage ms")
    for f in files.values():
        timings = " ".join(f"{stage}={ms}" for stage, ms in f["stage_durations_ms"].items())
        print(f"  {f['name']:<24} {f['status']:<14} {f['detected_type'] or '-':<9} {f['pages'] or '-':>5} {f['chunk_count'] or '-':>6}  {f['embedding_model'] or '-':<18} {timings}")
        if f["error_code"]:
            print(f"    error {f['error_code']}: {f['error_message']}")
    if any(f["status"] != "ready" for f in files.values()):
        sys.exit("some files did not become ready")


if __name__ == "__main__":
    main()
