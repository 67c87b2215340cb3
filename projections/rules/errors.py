"""Errors raised while validating, compiling and evaluating segment rules."""

from __future__ import annotations


class RuleError(Exception):
    """Base class of every rule error.

    No rule error is retriable, because evaluating the same rule on the same
    record fails the same way again.
    """

    retriable: bool = False


class InvalidRuleError(RuleError):
    """A rule that cannot be validated or compiled.

    ``problem`` is the description of what is wrong, for example
    ``unknown operator 'foo' at /and/1``.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class RuleEvaluationError(RuleError):
    """An error raised while a compiled rule runs.

    It is raised where json-logic-js throws (``*`` with no arguments), for
    record values that are not JSON (such as dates), for ``val`` scope access
    computed at run time, and by the ``throw`` operator. ``error_type`` is the
    error's type name, which ``try`` passes to its fallbacks as
    ``{"type": error_type}``.
    """

    def __init__(self, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type
