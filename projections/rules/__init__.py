"""Customer segment rules: JSON-logic compiled to Python, plus validation."""

from projections.rules.codegen import ANY_FIELD
from projections.rules.compiler import CompiledRule, compile_rule, compile_segment_rule
from projections.rules.errors import InvalidRuleError, RuleError, RuleEvaluationError
from projections.rules.validate import FieldSpec, FieldType, validate_rule

__all__ = [
    "ANY_FIELD",
    "CompiledRule",
    "FieldSpec",
    "FieldType",
    "InvalidRuleError",
    "RuleError",
    "RuleEvaluationError",
    "compile_rule",
    "compile_segment_rule",
    "validate_rule",
]
