"""JSON responses built from pydantic models, for the routes every job passes through.

FastAPI validates what a route returns against its `response_model` again before it
serialises it, and for a synchronous route it does so in one more worker-thread hop. A route
that built its response model itself has nothing left to validate: returning a `Response`
skips both, while the route's `response_model` still documents the body in the OpenAPI.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response
from pydantic import BaseModel


def model_response(
    model: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`model` as the JSON body FastAPI would have sent for it (the same serialiser)."""
    return Response(
        model.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
