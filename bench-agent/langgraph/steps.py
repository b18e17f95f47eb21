"""LangGraph + PostgresSaver peer of bench-agent: the same runs with a zero-latency model.

A run of N steps is N-1 steps whose model answer calls `get_node_context` (a tool that
reads the task node from Postgres, as worker-agent's does), then a final text answer.
A step is one model answer with its tool call, as in worker-agent: two LangGraph
super-steps (the agent node, then the tools node), each checkpointed by
AsyncPostgresSaver into the same database. `--concurrency` runs go at once on one
asyncio loop, like one worker process.

Prints one JSON object: runs, steps, window start/end (epoch seconds), ms per step in a
run, and the checkpoint tables' growth in bytes.

    python steps.py --database-url URL --node-id UUID --runs 320 --steps 10 --concurrency 16
"""

import argparse
import asyncio
import json
import time
import uuid

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def build_graph(pool, node_id, steps_per_run):
    async def agent(state: MessagesState):
        answered = sum(1 for message in state["messages"] if isinstance(message, AIMessage))
        if answered < steps_per_run - 1:
            call = {"name": "get_node_context", "args": {}, "id": f"call_{answered}"}
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [AIMessage(content="Done.")]}

    async def tools(state: MessagesState):
        last = state["messages"][-1]
        results = []
        for call in last.tool_calls:
            async with pool.connection() as connection:
                row = await (
                    await connection.execute(
                        "SELECT jsonb_build_object('id', id, 'title', title, 'instructions', instructions, "
                        "'inputs', inputs, 'outputs', outputs, 'parent_id', parent_id)::text AS context "
                        "FROM nodes WHERE id = %s",
                        (node_id,),
                    )
                ).fetchone()
            results.append(ToolMessage(content=row["context"], tool_call_id=call["id"]))
        return {"messages": results}

    def route(state: MessagesState):
        return "tools" if state["messages"][-1].tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


async def table_bytes(pool):
    async with pool.connection() as connection:
        total = 0
        for table in CHECKPOINT_TABLES:
            row = await (
                await connection.execute("SELECT pg_total_relation_size(%s::regclass) AS size", (table,))
            ).fetchone()
            total += row["size"]
        return total


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--setup-only", action="store_true")
    args = parser.parse_args()

    async with AsyncConnectionPool(
        args.database_url,
        min_size=args.concurrency + 2,
        max_size=args.concurrency + 2,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    ) as pool:
        saver = AsyncPostgresSaver(pool)
        if args.setup_only:
            await saver.setup()
            return
        app = build_graph(pool, args.node_id, args.steps).compile(checkpointer=saver)
        limit = asyncio.Semaphore(args.concurrency)
        spans = []

        async def one_run():
            async with limit:
                config = {
                    "configurable": {"thread_id": str(uuid.uuid4())},
                    "recursion_limit": 2 * args.steps + 10,
                }
                started = time.time()
                await app.ainvoke(
                    {"messages": [HumanMessage(content="Look at the node context until done.")]}, config
                )
                spans.append((started, time.time()))

        size_before = await table_bytes(pool)
        started = time.time()
        await asyncio.gather(*(one_run() for _ in range(args.runs)))
        finished = time.time()
        size_after = await table_bytes(pool)
        steps = args.runs * args.steps
        per_step = [(end - begin) / args.steps for begin, end in spans]
        print(
            json.dumps(
                {
                    "peer": "langgraph+postgressaver",
                    "runs": args.runs,
                    "steps": steps,
                    "window_start": started,
                    "window_end": finished,
                    "ms_per_step_in_run": 1000 * sum(per_step) / max(len(per_step), 1),
                    "checkpoint_table_growth_bytes": size_after - size_before,
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
