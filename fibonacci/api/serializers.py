"""What comes in (n, offset, index, numbers) and its messages; what goes out, for the schema.

The rules for reading a number (digits only, given once, bounded) are
fibonacci.params's; these fields apply them and say what is allowed.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from fibonacci import params
from fibonacci.sequence import NumberStyle


class SingleValueMixin:
    """Reads a query parameter as given: once, and blank is a value, not an absence.

    DRF's form handling would take the last of repeated values and treat a blank
    optional value as missing; an API should say that both are mistakes.
    """

    def get_value(self, dictionary: Any) -> Any:
        getlist = getattr(dictionary, "getlist", None)
        if getlist is None:
            return super().get_value(dictionary)  # type: ignore[misc]
        value = params.single(getlist(self.field_name))  # type: ignore[attr-defined]
        return serializers.empty if value is None else value


class DecimalIntegerField(SingleValueMixin, serializers.Field):
    """A non-negative integer written in ASCII digits; the bound comes from a setting."""

    default_error_messages = {
        "range": "{name} must be an integer from 0 to {maximum}.",
        "required": "{name} is required: an integer from 0 to {maximum}.",
        "repeated": "{name} must be given once.",
    }

    def __init__(self, *, maximum_setting: str, **kwargs: Any) -> None:
        self.maximum_setting = maximum_setting
        super().__init__(**kwargs)

    @property
    def maximum(self) -> int:
        """The largest accepted value, read per request so tests can lower it."""
        return int(getattr(settings, self.maximum_setting))

    def fail_range(self) -> NoReturn:
        """Reject with the message that says what is allowed."""
        self.fail("range", name=self.field_name, maximum=self.maximum)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data is serializers.empty and self.required:
            self.fail("required", name=self.field_name, maximum=self.maximum)
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> int:
        if data is params.REPEATED:
            self.fail("repeated", name=self.field_name)
        value = params.parse_decimal(data, maximum=self.maximum) if isinstance(data, str) else None
        if value is None:
            self.fail_range()
        return value

    def to_representation(self, value: int) -> int:
        return value


class DecimalIntegerFieldSchema(OpenApiSerializerFieldExtension):
    """An integer from 0 to the field's setting, as it stands when the schema is generated."""

    target_class = DecimalIntegerField

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Direction) -> dict[str, Any]:
        return {"type": "integer", "minimum": 0, "maximum": self.target.maximum}


class NumberStyleField(SingleValueMixin, serializers.ChoiceField):
    """`numbers=number` (default) or `numbers=string`."""

    default_error_messages = {
        "invalid_choice": "numbers must be one of: number, string.",
        "repeated": "numbers must be given once.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[style.value for style in NumberStyle], **kwargs)

    def to_internal_value(self, data: Any) -> NumberStyle:
        if data is params.REPEATED:
            self.fail("repeated")
        return NumberStyle(super().to_internal_value(data))


class QuerySerializer(serializers.Serializer):
    """A serializer for query parameters, cheap to instantiate once per request.

    DRF deep-copies every declared field for each serializer instance; these
    fields keep no per-request state, so a shallow copy (bound to this
    instance) is enough. Kept because it earns its keep: 15.8% of an n=10
    request's instructions (callgrind, against DRF's own copy in the same run).
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: _shallow_copy(field) for name, field in self._declared_fields.items()}


def _shallow_copy(field: serializers.Field) -> serializers.Field:
    # What copy.copy() does for a plain object, without its generic
    # __reduce_ex__ round trip (DRF's Field.__new__ would run again).
    clone: serializers.Field = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


class SequenceQuerySerializer(QuerySerializer):
    """`n` terms starting at F(`offset`); offset + n may not pass FIB_MAX_N."""

    n = DecimalIntegerField(
        maximum_setting="FIB_MAX_N",
        help_text="How many terms; offset + n may be at most FIB_MAX_N (default 10000).",
    )
    offset = DecimalIntegerField(
        maximum_setting="FIB_MAX_N",
        required=False,
        default=params.OFFSET_DEFAULT,
        help_text=f"Index of the first term (default {params.OFFSET_DEFAULT}).",
    )
    numbers = NumberStyleField(
        required=False,
        default=NumberStyle.NUMBER,
        help_text="`string` writes every number as a decimal string (exact in JavaScript).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        maximum = settings.FIB_MAX_N
        if not params.fits(offset=attrs["offset"], count=attrs["n"], maximum=maximum):
            allowed = maximum - attrs["offset"]
            raise serializers.ValidationError(
                {
                    "n": [
                        f"n must be an integer from 0 to {allowed} when offset is "
                        f"{attrs['offset']} (offset + n may be at most {maximum})."
                    ]
                }
            )
        return attrs


class TermQuerySerializer(QuerySerializer):
    """One term, F(`index`), up to FIB_MAX_INDEX."""

    index = DecimalIntegerField(maximum_setting="FIB_MAX_INDEX")
    numbers = NumberStyleField(required=False, default=NumberStyle.NUMBER)


@extend_schema_field(
    {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}
)
class FibonacciNumberField(serializers.Field):
    """Schema only: an exact integer, or its decimal string with `numbers=string`."""


# A list action's answer, but one object, not an array of them.
@extend_schema_serializer(many=False)
class SequenceResponseSerializer(serializers.Serializer):
    """Schema only: the body of a sequence window."""

    n = serializers.IntegerField()
    offset = serializers.IntegerField()
    sequence = serializers.ListField(child=FibonacciNumberField())


class TermResponseSerializer(serializers.Serializer):
    """Schema only: the body of a single term."""

    index = serializers.IntegerField()
    value = FibonacciNumberField()


class ProblemSerializer(serializers.Serializer):
    """Schema only: RFC 9457 problem details."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
