"""The student's shape: one pydantic model, validated on construction; and the shapes the
lightweight-student frontier trains (`distill/studies/frontier.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StudentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["two_tower", "sequential"] = "sequential"
    dim: int = Field(64, ge=4)  # vector width; 64 is plenty for ML-100K
    history_len: int = Field(50, ge=1)  # most recent items the user vector reads
    n_layers: int = Field(2, ge=1)  # sequential: transformer blocks
    n_heads: int = Field(2, ge=1)  # sequential: attention heads
    dropout: float = Field(0.5, ge=0, lt=1)  # sequential: embeddings, attention and blocks
    text_projection: bool = False  # add a learned projection of the teacher's item embeddings
    # training only (DropoutNet): each step zeroes every item's ID embedding with this
    # probability, so the text projection alone must score; needs text_projection
    id_dropout: float = Field(0.0, ge=0, lt=1)
    # L_c over all items (0) or a sampled softmax: the batch's positives + this many uniform
    # negatives, for catalogs where (batch x items) logits are too large
    sampled_negatives: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> StudentConfig:
        if self.kind == "sequential" and self.dim % self.n_heads:
            raise ValueError(f"student.dim ({self.dim}) must be divisible by n_heads")
        if self.id_dropout and not self.text_projection:
            raise ValueError("student.id_dropout needs student.text_projection: true")
        return self


Shape = tuple[int, int]  # (width, transformer blocks)


def shape(text: str) -> Shape:
    """'16x2' -> (16, 2)."""
    try:
        dim, layers = text.lower().split("x")
        return int(dim), int(layers)
    except ValueError:
        raise ValueError(f"a shape is <width>x<blocks>, e.g. 16x2; got {text!r}") from None


class FrontierConfig(BaseModel):
    """Which student shapes the frontier trains, and how many seeds each."""

    model_config = ConfigDict(extra="forbid")

    shapes: list[str] = Field(
        default_factory=lambda: ["8x2", "16x2", "32x2", "64x2"], min_length=1
    )  # "<width>x<blocks>" of the sequential student (SASRec); two models per shape and seed
    seeds: int = Field(2, ge=1)
    latency_users: int = Field(300, ge=20)  # history requests timed per point

    @field_validator("shapes")
    @classmethod
    def _shapes(cls, shapes: list[str]) -> list[str]:
        for text in shapes:
            dim, layers = shape(text)
            if dim < 2 or dim % 2 or layers < 1:
                raise ValueError(f"shape {text}: width must be even and >= 2, blocks >= 1")
        return shapes

    def parsed(self) -> list[Shape]:
        return [shape(s) for s in self.shapes]
