"""LangGraph's durable step, for baton_bench: a 4-node graph (plan -> implement -> review
-> test, looping back to plan) checkpointed by SqliteSaver with durability="sync" and
PRAGMA synchronous=FULL, in this process. Each stdin line "N" runs N steps on one thread
and answers one line: the N step latencies in seconds, as JSON. A step is one node run and
its checkpoint made durable (the time between two updates of a synchronous stream)."""

import json
import sqlite3
import sys
import time
import uuid
from typing import TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    step: int
    limit: int
    report: str


def node(name):
    def run(state: State) -> dict:
        return {"step": state["step"] + 1, "report": f"{name}: Implemented the change in src/lib.rs; 12 tests pass."}

    return run


def build(path):
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    saver = SqliteSaver(conn)
    saver.setup()
    # setup() leaves the connection in WAL mode; FULL makes every commit fsync the WAL.
    conn.execute("PRAGMA synchronous=FULL")
    graph = StateGraph(State)
    names = ["plan", "implement", "review", "test"]
    for name in names:
        graph.add_node(name, node(name))
    graph.add_edge(START, "plan")
    for a, b in zip(names, names[1:]):
        graph.add_edge(a, b)
    graph.add_conditional_edges("test", lambda s: END if s["step"] >= s["limit"] else "plan")
    return graph.compile(checkpointer=saver)


def main():
    app = build(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        steps = int(line)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        samples = []
        last = time.perf_counter()
        for _ in app.stream({"step": 0, "limit": steps, "report": ""}, config, durability="sync", stream_mode="updates"):
            now = time.perf_counter()
            samples.append(now - last)
            last = now
        print(json.dumps(samples), flush=True)


if __name__ == "__main__":
    main()
