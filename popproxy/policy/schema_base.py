"""Building blocks of the policy schema shared by its sections (schema.py, schema_scan.py,
schema_lockout.py, schema_redis.py, schema_warm.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class Model(BaseModel):
    """Every policy model: frozen once loaded, and an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_url(value: str | None) -> str | None:
    """redis-py's URL forms: a typo'd scheme would otherwise surface only at the first login."""
    if value is not None and not value.startswith(REDIS_SCHEMES):
        raise ValueError("must be a Redis URL starting with redis:// (plain), rediss:// (TLS) "
                         "or unix:// (socket), e.g. redis://:PASSWORD@10.0.7.30:6379/0")
    return value


TlsVersion = Literal["TLSv1.2", "TLSv1.3"]


