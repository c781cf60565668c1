"""Running the app with uvicorn, with a graceful shutdown that goes through the engine loop first.

On SIGTERM/SIGINT: stop listening, let in-flight requests finish for `shutdown_timeout` s, then cancel what is
left; those clients get a proper answer (503 body, or an error event and `data: [DONE]` on a stream) instead of a
cut connection. Only then does uvicorn close connections and run the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, shutdown_timeout: float):
        super().__init__(config)
        self.engine_loop = app.state.server.loop
        self.shutdown_timeout = shutdown_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await asyncio.to_thread(self.engine_loop.drain, self.shutdown_timeout)
        await super().shutdown(sockets)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               shutdown_timeout: float = 10.0) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=shutdown_timeout + 15.0)
    GracefulServer(config, app, shutdown_timeout).run()
