"""The floor for read/vread: bare Starlette + a psycopg pool serving the stored JSON as it is.

Same database, same pool size, same uvicorn settings as ``healthmesh serve`` (cli.py
``_serve``). Run: ``python -m bench.reference_app --port P --database-url URL``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

READ = "SELECT content FROM resource WHERE res_type = %s AND id = %s"
VREAD = (
    "SELECT content FROM resource WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
    " UNION ALL SELECT content FROM resource_history"
    " WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
)
pool = AsyncConnectionPool(
    os.environ.get("BENCH_DATABASE_URL", ""),
    min_size=2,
    max_size=16,
    open=False,
    kwargs={"autocommit": True},
)


async def _answer(query: str, params: Sequence[object] | Mapping[str, object]) -> Response:
    async with pool.connection() as conn:
        row = await (await conn.execute(query, params)).fetchone()
    if row is None or row[0] is None:
        return Response(status_code=404)
    return Response(row[0].encode(), media_type="application/fhir+json")


async def read(request: Request) -> Response:
    return await _answer(READ, (request.path_params["type"], request.path_params["id"]))


async def vread(request: Request) -> Response:
    p = request.path_params
    return await _answer(VREAD, {"t": p["type"], "id": p["id"], "v": int(p["vid"])})


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await pool.open(wait=True)
    yield
    await pool.close()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/fhir/{type}/{id}", read),
        Route("/fhir/{type}/{id}/_history/{vid}", vread),
    ],
    lifespan=lifespan,
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference_app")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    pool.conninfo = args.database_url
    # As cli.py _serve runs the server: one process, no access log.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
