"""`make run`'s server: daphne, with an access log that keeps no query string.

    python -m config.devserver -b 127.0.0.1 -p 8000 -v 1 config.asgi:application

The same command line as `python -m daphne`. Daphne writes its access log
itself (not through `logging`), with each request's full URL; a key a client
put in the URL is refused by the API (`key_in_query_string`) but would stay in
that log. Here the URL is logged without its query string
(gateway.observability.logs.url_scrubbed). Production runs config/serve.py
(uvicorn, access log off; scrubbed too when turned on: config/asgi.py).
"""

from __future__ import annotations

from daphne.cli import CommandLineInterface
from daphne.server import Server

from gateway.observability.logs import url_scrubbed


class ScrubbedServer(Server):
    def log_action(self, protocol: str, action: str, details: dict) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": url_scrubbed(details["path"])}
        super().log_action(protocol, action, details)


class DevServer(CommandLineInterface):
    server_class = ScrubbedServer


if __name__ == "__main__":
    DevServer.entrypoint()
