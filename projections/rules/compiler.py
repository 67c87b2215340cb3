"""Compile JSON-logic rules into Python functions, once per rule.

The semantics, including segment mode's null handling, are in README.md here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from projections.rules.codegen import CodeGenerator
from projections.rules.errors import InvalidRuleError
from projections.rules.operators import BOOL_OPERATORS, VALUE_OPERATORS
from projections.rules.runtime import STANDARD_FUNCTIONS
from projections.rules.segment_mode import SEGMENT_FUNCTIONS

# Generated code needs only these builtins, so no other builtin is reachable
# from it.
_BUILTINS: Final = {"type": type, "dict": dict, "list": list, "str": str, "bool": bool}


class CompiledRule:
    """A JSON-logic rule compiled to Python functions.

    Attributes:
        rule: The JSON rule that was compiled.
        strict_nulls: True for segment mode, where null and missing operands
            make ordering comparisons false and arithmetic null.
        fields: The record fields the rule reads: every var path and every
            key that missing or missing_some checks, as written in the rule.
            Paths inside map, filter, reduce, all, some and none bodies read
            array items, not the record, so they are not listed.
            ``ANY_FIELD`` ("*") is listed when the rule reads a path
            computed at run time or the whole record.
        source: The generated Python source, for debugging.
        evaluate: Return the rule's value for a record (normally a mapping,
            but any JSON value is accepted).
        matches: Return whether the rule's value is truthy for a record,
            with JSON-logic truthiness ([] and "" are false, {} is true).
    """

    __slots__ = ("rule", "strict_nulls", "fields", "source", "evaluate", "matches")

    rule: Any
    strict_nulls: bool
    fields: frozenset[str]
    source: str
    evaluate: Callable[[Any], Any]
    matches: Callable[[Any], bool]

    def __init__(
        self,
        rule: Any,
        *,
        strict_nulls: bool,
        fields: frozenset[str],
        source: str,
        evaluate: Callable[[Any], Any],
        matches: Callable[[Any], bool],
    ) -> None:
        self.rule = rule
        self.strict_nulls = strict_nulls
        self.fields = fields
        self.source = source
        # Plain attributes rather than methods save a bound-method call on
        # every evaluation.
        self.evaluate = evaluate
        self.matches = matches

    def __repr__(self) -> str:
        mode = "segment" if self.strict_nulls else "standard"
        return f"CompiledRule({self.rule!r}, mode={mode})"


def compile_rule(rule: Any, *, strict_nulls: bool = False) -> CompiledRule:
    """Compile a JSON-logic rule into a CompiledRule.

    With ``strict_nulls=False`` (standard mode) the rule behaves as in
    json-logic-js. With ``strict_nulls=True`` (segment mode) null and
    missing operands follow the segment semantics instead.

    Raises:
        InvalidRuleError: the rule uses an unknown operator, contains a value
            that is not JSON, or is nested too deeply to compile.
    """
    namespace: dict[str, Any] = dict(
        SEGMENT_FUNCTIONS if strict_nulls else STANDARD_FUNCTIONS
    )
    namespace["__builtins__"] = _BUILTINS
    generator = CodeGenerator(
        strict_nulls=strict_nulls,
        namespace=namespace,
        value_operators=VALUE_OPERATORS,
        bool_operators=BOOL_OPERATORS,
    )
    try:
        # Records are almost always dicts, so each function has a variant
        # that reads them with dict.get and a general one for anything else.
        bodies = {
            name: generator.generate(rule, data_is_dict=is_dict, as_bool=as_bool)
            for name, is_dict, as_bool in (
                ("evaluate_dict", True, False),
                ("evaluate_any", False, False),
                ("matches_dict", True, True),
                ("matches_any", False, True),
            )
        }
        source = _combine(bodies)
        functions = _build_functions(source, namespace)
    except RecursionError as error:
        raise InvalidRuleError("rule is nested too deeply to compile") from error
    except (SyntaxError, MemoryError) as error:
        raise InvalidRuleError(f"rule is too large to compile: {error}") from error

    return CompiledRule(
        rule,
        strict_nulls=strict_nulls,
        fields=frozenset(generator.fields),
        source=source,
        evaluate=functions["evaluate"],
        matches=functions["matches"],
    )


def compile_segment_rule(rule: Any) -> CompiledRule:
    """Compile a segment rule: compile_rule with segment-mode null handling."""
    return compile_rule(rule, strict_nulls=True)


def _combine(bodies: Mapping[str, str]) -> str:
    lines = []
    for kind in ("evaluate", "matches"):
        dict_body = bodies[f"{kind}_dict"]
        any_body = bodies[f"{kind}_any"]
        if dict_body == any_body:
            lines.append(f"{kind} = lambda data: {any_body}")
        else:
            lines.append(f"{kind}_any = lambda data: {any_body}")
            lines.append(
                f"{kind} = lambda data: ({dict_body}) if type(data) is dict"
                f" else {kind}_any(data)"
            )
    return "\n".join(lines) + "\n"


def _build_functions(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    # The source contains only operators from the operator tables, generated
    # names and literals built by repr() of exact JSON types.
    exec(compile(source, "<rule>", "exec"), namespace)
    return {"evaluate": namespace["evaluate"], "matches": namespace["matches"]}
