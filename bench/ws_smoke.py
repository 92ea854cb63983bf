"""Websockets through a production ASGI server: one chat over ws /ws/v1/chat.

    python bench/ws_smoke.py --port 8100 --key ep-... [--persona bench]
Exit status 0 when the stream ends with `done`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(port: int, key: str, persona: str) -> int:
    async with connect(f"ws://127.0.0.1:{port}/ws/v1/chat", additional_headers={"Authorization": f"Bearer {key}"},
                       open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "chat", "id": "smoke", "persona": persona,
                                  "messages": [{"role": "user", "content": "hi"}]}))
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] in ("done", "error"):
                    print(frame)
                    return 0 if frame["type"] == "done" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--key", required=True)
    parser.add_argument("--persona", default="bench")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.port, args.key, args.persona)))
