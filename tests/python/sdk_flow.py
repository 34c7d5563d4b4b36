"""A parallel run's task flow through the official Python MCP SDK, whose ClientSession
validates every structured result against the tool's outputSchema (and raises
RuntimeError "Invalid structured content returned by tool ..." otherwise).

Usage: sdk_flow.py BATON_BINARY   (BATON_HOME and the working directory come from the caller)
Prints one JSON line: how many results were received and validated.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main(baton: str) -> None:
    # The SDK starts servers with a minimal environment: pass baton's own variables on
    # (BATON_HOME above all, or the server would use the user's default home).
    env = {k: v for k, v in os.environ.items() if k.startswith("BATON_")}
    assert "BATON_HOME" in env, "BATON_HOME must be set"
    params = StdioServerParameters(command=baton, args=["serve"], env=env, cwd=os.getcwd())
    validated = 0
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            assert all(t.output_schema for t in listed.tools), "every tool publishes an outputSchema"

            async def call(tool, args, thread="lead"):
                nonlocal validated
                # call_tool validates structuredContent against the listed outputSchema.
                result = await session.call_tool(tool, args, meta={"threadId": thread})
                if result.is_error:
                    raise AssertionError(f"{tool} {args} failed: {result.structured_content}")
                validated += 1
                return result.structured_content

            brief = await call("start_workflow", {"goal": "Two parts through the Python SDK", "template": "parallel"})
            run_id = brief["run_id"]
            plan = {"tasks": [{"id": "a", "title": "a", "description": "build a"}, {"id": "b", "title": "b", "description": "build b"}]}
            fanned = await call("advance", {"run_id": run_id, "expected_version": brief["version"], "outcome": "planned", "output": "two tasks", "plan": plan})
            assert fanned["tasks"]["total"] == 2, fanned
            steps = [("implementer", "implemented"), ("reviewer", "approved"), ("implementer", "passed")]
            for task in ["a", "b"]:
                for thread, outcome in steps:
                    claimed = await call("resume", {"run_id": run_id, "claim": task}, thread)
                    assert claimed["status"] == "claimed", claimed
                    await call("resume", {"run_id": run_id, "task": task, "lease_token": claimed["lease_token"]}, thread)
                    after = await call("advance", {"run_id": run_id, "task": task, "lease_token": claimed["lease_token"], "outcome": outcome, "output": f"{task} {outcome}"}, thread)
                    assert after["task"] == task, after
            briefing = await call("resume", {"run_id": run_id})
            assert briefing["brief"]["step"] == "integrate", briefing
            await call("resume", {})
            await call("inspect", {"run_id": run_id})
            await call("inspect", {"templates": True})
            done = await call("advance", {"run_id": run_id, "expected_version": briefing["brief"]["version"], "outcome": "passed", "output": "integrated"})
            assert done["status"] == "completed", done
            # A tool error: isError with the structured error (the SDK does not validate those).
            stale = await session.call_tool("advance", {"run_id": run_id, "expected_version": 1, "outcome": "passed", "output": "late"})
            assert stale.is_error and stale.structured_content["error"]["code"] == "conflict", stale
    print(json.dumps({"validated": validated}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
