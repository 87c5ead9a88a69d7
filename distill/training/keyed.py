"""Configs whose JSON keys caches: fields added later are left out of every dump while they hold
their default, so a cache keyed before the field existed keeps its key (a checkpoint, a teacher
fingerprint) and a config that sets the field gets a new one."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer


class Keyed(BaseModel):
    """A pydantic model whose `added_fields` are omitted from dumps at their defaults."""

    added_fields: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_added_at_default(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.added_fields:
                if getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name, None)
        return data
