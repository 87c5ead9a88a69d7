"""The student's shape: one pydantic model, validated on construction."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
