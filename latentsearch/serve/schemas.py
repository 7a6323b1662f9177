"""The bodies the HTTP API takes and gives, as pydantic models (they also make /openapi.json).

Requests are validated here (422 when malformed: a wrong type, two queries at once, k or a
batch over its cap); what the library checks (dimensions, finiteness, labels per item) it
checks itself and answers 400. Answers are built as plain lists and dicts by the app; the
answer models below only document them.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_K",
    "MAX_BATCH",
    "MAX_ITEMS",
    "SearchRequest",
    "AddRequest",
    "RemoveRequest",
    "HitOut",
    "SearchResponse",
    "BatchResponse",
    "AddResponse",
    "RemoveResponse",
    "ItemOut",
    "CollectionRow",
    "CollectionsResponse",
    "HealthResponse",
    "ErrorResponse",
]

#: largest k a search may ask for
MAX_K = 1000
#: most queries in one batch search (`vectors` or `texts`)
MAX_BATCH = 10_000
#: most items one request may add or remove
MAX_ITEMS = 10_000

#: a label as given; stored as text
Label = Union[str, int, float, None]


def _exactly_one(model: BaseModel, fields: tuple[str, ...]) -> str:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        names = ", ".join(f"`{f}`" for f in fields)
        found = ", ".join(given) if given else "none"
        raise ValueError(f"give exactly one of {names} (got {found})")
    return given[0]


class SearchRequest(BaseModel):
    """One query (`vector`, `text`, `image`, `id`) or a batch (`vectors`, `texts`)."""

    model_config = ConfigDict(extra="forbid")

    vector: Optional[list[float]] = Field(None, description="one vector of the collection's "
                                                             "dimension")
    vectors: Optional[list[list[float]]] = Field(
        None, min_length=1, max_length=MAX_BATCH, description="a batch of vectors")
    text: Optional[str] = Field(None, description="a sentence (text collections)")
    texts: Optional[list[str]] = Field(
        None, min_length=1, max_length=MAX_BATCH, description="a batch of sentences")
    image: Optional[str] = Field(
        None, description="a PNG/JPEG/WebP file in base64, or as a data: URL (image collections)")
    id: Optional[int] = Field(None, description="neighbours of a stored item, itself excluded")
    k: int = Field(10, ge=1, le=MAX_K, description="how many neighbours per query")
    where: Optional[dict[str, Any]] = Field(
        None, description="only items whose record matches: the Python API's filter (e.g. "
                          '{"label": 3}), checked by the library (400 when it refuses one)')
    recall: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="recall@10 wanted: a point of the tuned curve")
    exact: bool = Field(False, description="brute force over the stored vectors")

    @model_validator(mode="after")
    def one_query(self) -> "SearchRequest":
        _exactly_one(self, ("vector", "vectors", "text", "texts", "image", "id"))
        return self


class AddRequest(BaseModel):
    """New items: `vectors` (vector collections), `texts` or `images` (base64)."""

    model_config = ConfigDict(extra="forbid")

    vectors: Optional[list[list[float]]] = Field(None, min_length=1, max_length=MAX_ITEMS)
    texts: Optional[list[str]] = Field(None, min_length=1, max_length=MAX_ITEMS)
    images: Optional[list[str]] = Field(
        None, min_length=1, max_length=MAX_ITEMS, description="PNG/JPEG/WebP files in base64")
    labels: Optional[list[Label]] = Field(None, max_length=MAX_ITEMS, description="one per item")
    extra: Optional[list[Optional[dict[str, Any]]]] = Field(
        None, max_length=MAX_ITEMS,
        description="with `vectors`: one object per item, stored as JSON")

    @model_validator(mode="after")
    def one_kind(self) -> "AddRequest":
        kind = _exactly_one(self, ("vectors", "texts", "images"))
        if self.extra is not None and kind != "vectors":
            raise ValueError("`extra` goes with `vectors` only")
        return self


class RemoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] = Field(..., max_length=MAX_ITEMS)


class HitOut(BaseModel):
    id: int
    distance: float
    label: Optional[str] = None
    source: Optional[str] = None
    text: Optional[str] = None


class SearchResponse(BaseModel):
    hits: list[HitOut]


class BatchResponse(BaseModel):
    batches: list[list[HitOut]]


class AddResponse(BaseModel):
    ids: list[int]


class RemoveResponse(BaseModel):
    removed: int


class ItemOut(BaseModel):
    id: int
    label: Optional[str] = None
    source: Optional[str] = None
    text: Optional[str] = None
    extra: Optional[dict[str, Any]] = Field(None, description="the item's other fields, if the "
                                                               "library keeps any")


class CollectionRow(BaseModel):
    name: str
    modality: Optional[str] = None
    count: Optional[int] = None
    dim: Optional[int] = None
    metric: Optional[str] = None
    index: Optional[str] = None
    error: Optional[str] = Field(None, description="why the collection cannot be read")


class CollectionsResponse(BaseModel):
    collections: list[CollectionRow]


class HealthResponse(BaseModel):
    status: str
    version: str
    collections: int


class ErrorResponse(BaseModel):
    error: str = Field(..., description="one line")
    type: str = Field(..., description="the exception's name, e.g. DimensionMismatch")
