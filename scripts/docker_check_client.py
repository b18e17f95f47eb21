"""`make docker-check`'s client: the API calls scripts/docker-check.sh makes on top of the
demo's (scripts/demo_client.py does the uploads and the agent run).

- `search BASE TOKEN`: the demo's queries must each find the sample that answers them.
- `upload-large BASE TOKEN FOLDER`: write and upload a long Markdown file (every
  paragraph different, so nothing is reused from earlier chunks) and print its id.
- `tools-ok BASE TOKEN EXECUTION_ID`: every tool call of the execution succeeded (a
  search_files that could not embed its query shows up here, not in the status).
- `wait BASE TOKEN FILE_ID STATUS[,STATUS...] SECONDS`: wait until the file has one of
  these statuses; print it (and the stage). Exits 1 on time-out or on an end state that
  was not asked for.

Standard library only.
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_client import call, trace, upload  # noqa: E402  (the demo's client, one copy)

# Each demo query and the sample whose text answers it (see testkit's make-samples).
EXPECTED_FIRST = {
    "what happens after the fifth receive of a message": "operator-handbook.pdf",
    "how much sun do tomatoes need": "garden-rules.docx",
    # A scanned page (no text layer): found only if OCR works in worker-files' image.
    "what colour does the copper lantern show when the ferry is late": "harbour-notice-scanned.pdf",
}
END_STATES = ("ready", "failed", "dead_lettered")
WORDS = ("queue worker lease message retry shutdown vector chunk embed store extract page "
         "tomato garden soup lentil compost harbour river mountain signal budget ledger "
         "orchard lantern copper violet meadow falcon granite").split()


def search(base, token):
    for query, expected in EXPECTED_FIRST.items():
        status, found = call(base, token, "POST", "/v1/search", {"query": query, "top_k": 3})
        if status != 200:
            sys.exit(f"search {query!r} failed: {status} {found}")
        names = [hit["file_name"] for hit in found["hits"]]
        print(f"  search {query!r}: {names}")
        if not names or names[0] != expected:
            sys.exit(f"search {query!r}: expected {expected} first, got {names}")


def upload_large(base, token, folder):
    generator = random.Random(12)
    paragraphs = []
    for number in range(500):
        sentence = " ".join(generator.choice(WORDS) for _ in range(40))
        paragraphs.append(f"Paragraph {number}: {sentence}.")
    path = os.path.join(folder, "long-report.md")
    with open(path, "w") as handle:
        handle.write("# A long report\n\n" + "\n\n".join(paragraphs) + "\n")
    return upload(base, token, path)


def tools_ok(base, token, execution_id):
    results = [event for event in trace(base, token, execution_id) if event["kind"] == "tool_result"]
    if not results:
        sys.exit(f"execution {execution_id} made no tool call")
    failed = [event["data"] for event in results if not event["data"].get("ok")]
    for data in failed:
        print(f"  tool {data.get('tool')} failed: {data.get('error')}", file=sys.stderr)
    if failed:
        sys.exit(f"{len(failed)} of {len(results)} tool calls failed")
    print(f"  all {len(results)} tool calls succeeded: {', '.join(event['data'].get('tool', '?') for event in results)}")


def wait(base, token, file_id, wanted, seconds):
    wanted_states = wanted.split(",")
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        status, file = call(base, token, "GET", f"/v1/files/{file_id}")
        if status != 200:
            sys.exit(f"get file {file_id} failed: {status} {file}")
        if file["status"] in wanted_states:
            print(f"{file['status']} {file.get('stage') or '-'}")
            return
        if file["status"] in END_STATES:
            sys.exit(f"file {file_id} ended {file['status']} ({file.get('error_code')}: {file.get('error_message')})")
        time.sleep(0.1)
    sys.exit(f"file {file_id} is not {wanted} after {seconds} s")


def main():
    command, arguments = sys.argv[1], sys.argv[2:]
    if command == "search":
        search(*arguments)
    elif command == "upload-large":
        # upload() prints a progress line; keep stdout for the id alone.
        real_stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            file_id = upload_large(*arguments)
        finally:
            sys.stdout = real_stdout
        print(file_id)
    elif command == "tools-ok":
        tools_ok(*arguments)
    elif command == "wait":
        wait(*arguments)
    else:
        sys.exit(f"unknown command {command!r}: use search, upload-large, tools-ok or wait")


if __name__ == "__main__":
    main()
