"""The demo's client, in two parts.

- `files BASE TOKEN FOLDER`: upload the samples through the API, show progress, search.
- `agent BASE TOKEN APPROVER_TOKEN MODEL LABEL`: create a node, execute it, answer the
  agent's questions and approve its outputs through the API (approving needs the token
  with the approver role), then print the trace with tokens and cost.

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


def call(base, token, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    for header, value in (headers or {}).items():
        request.add_header(header, value)
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


def files_part(base, token, folder):
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


NODE = {
    "title": "Dead-letter runbook entry",
    "instructions": (
        "Search the uploaded files for what happens to a message after its fifth receive. "
        "Then ask a person which team owns the dead-letter queue. "
        "Finally record a runbook entry with write_output under the key dlq_runbook "
        "(the rule, the owner and the source file), and finish with a one-sentence summary."
    ),
    "inputs": {"audience": "on-call operators"},
}
HUMAN_ANSWER = "The platform team (#platform-oncall)"
TERMINAL = ("completed", "failed", "cancelled")


def describe(event):
    data = event["data"]
    kind = event["kind"]
    if kind == "model_call":
        return (f"{data.get('model')}  in={data.get('tokens_in')} out={data.get('tokens_out')} "
                f"cost=${data.get('cost_usd', 0):.6f}  {data.get('latency_ms')} ms  tool calls={data.get('tool_calls')}")
    if kind == "tool_call":
        return f"{data.get('tool')}({clip(data.get('arguments', ''), 80)})"
    if kind == "tool_result":
        outcome = "ok" if data.get("ok") else f"error: {data.get('error')}"
        return f"{data.get('tool')}: {outcome}{' (replayed)' if data.get('replayed') else ''}"
    if kind == "question":
        return clip(data.get("question", ""), 100)
    return clip(json.dumps(data), 100) if data else ""


def clip(text, limit):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trace(base, token, execution_id):
    events, after = [], 0
    while True:
        status, page = call(base, token, "GET", f"/v1/executions/{execution_id}/trace?after={after}&limit=100")
        if status != 200:
            sys.exit(f"trace failed: {status} {page}")
        events.extend(page["events"])
        if page.get("next_cursor") is None:
            return events
        after = page["next_cursor"]


def agent_part(base, token, approver_token, model, label):
    print(f"==> agent run (model: {label})")
    status, node = call(base, token, "POST", "/v1/nodes", NODE)
    if status != 201:
        sys.exit(f"create node failed: {status} {node}")
    print(f"  node {node['id']}: {node['title']}")
    status, execution = call(base, token, "POST", f"/v1/nodes/{node['id']}/execute",
                             {"model": model, "budget": {"max_steps": 12}},
                             headers={"Idempotency-Key": f"demo-{node['id']}"})
    if status != 202:
        sys.exit(f"execute failed: {status} {execution}")
    execution_id = execution["id"]
    print(f"  execution {execution_id} queued")

    handled, last_status = set(), None
    deadline = time.time() + 300
    while time.time() < deadline:
        _, execution = call(base, token, "GET", f"/v1/executions/{execution_id}")
        if execution["status"] != last_status:
            last_status = execution["status"]
            print(f"  status: {last_status} (step {execution['step']})")
        for pending in execution.get("pending_inputs", []):
            if pending["id"] in handled:
                continue
            handled.add(pending["id"])
            if pending["kind"] == "question":
                print(f"  agent asks: {pending['question']}")
                status, answered = call(base, token, "POST", f"/v1/executions/{execution_id}/input",
                                        {"input_id": pending["id"], "answer": HUMAN_ANSWER})
                print(f"  answered through the API: {HUMAN_ANSWER!r} -> {status}")
                if status != 202:
                    print(f"    {answered}")
            else:
                print(f"  agent wants to run {pending['tool']}({clip(json.dumps(pending['arguments']), 100)})")
                status, approved = call(base, approver_token, "POST",
                                        f"/v1/executions/{execution_id}/approvals/{pending['id']}/approve", {})
                print(f"  approved through the API (approver token) -> {status}")
                if status != 202:
                    print(f"    {approved}")
        if execution["status"] in TERMINAL:
            break
        time.sleep(0.3)

    print("==> trace")
    print(f"  {'id':>5} {'step':>4}  {'kind':<18} detail")
    for event in trace(base, token, execution_id):
        step = "-" if event["step"] is None else event["step"]
        print(f"  {event['id']:>5} {step:>4}  {event['kind']:<18} {describe(event)}")

    _, node = call(base, token, "GET", f"/v1/nodes/{node['id']}")
    print("==> node outputs")
    for key, value in (node.get("outputs") or {}).items():
        print(f"  {key}: {json.dumps(value)}")
    print("==> execution")
    print(f"  model        {execution['model']}  ({label})")
    print(f"  status       {execution['status']}")
    print(f"  steps        {execution['step']}")
    print(f"  tokens       in {execution['tokens_in']}, out {execution['tokens_out']}")
    print(f"  cost         ${execution['cost_usd']:.6f}")
    if execution.get("result"):
        print(f"  result       {clip(execution['result'], 160)}")
    if execution.get("error_code"):
        print(f"  error        {execution['error_code']}: {execution['error_message']}")
    if execution["status"] != "completed":
        sys.exit(f"the agent run ended {execution['status']}")


def main():
    part, args = sys.argv[1], sys.argv[2:]
    if part == "files":
        files_part(*args)
    elif part == "agent":
        agent_part(*args)
    else:
        sys.exit(f"unknown part {part!r}: use files or agent")


if __name__ == "__main__":
    main()
