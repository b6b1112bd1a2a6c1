"""Errors in a benchmark's config fields that name the flag as the user types it.

The same benchmark is configured as `--config.<field>` for `python -m mer_jax.evaluate` and as
`--config.evals.<name>.<field>` during training: a benchmark raises `FieldError(field, problem)`
with `{flag}` in the problem, and the caller that knows the context re-raises it `under` its prefix.
"""


class FieldError(ValueError):
    """A config field with a bad value.

    Args:
      field: the field's name in the benchmark's config section.
      problem: the message; `{flag}` in it becomes `--config.<prefix><field>`.
      prefix: where the section sits in the config ('' for mer_jax.evaluate, 'evals.<name>.' in training).
    """

    def __init__(self, field: str, problem: str, prefix: str = ""):
        self.field, self.problem, self.prefix = field, problem, prefix
        super().__init__(problem.replace("{flag}", f"--config.{prefix}{field}"))  # Not format: paths may hold braces.

    def under(self, prefix: str) -> "FieldError":
        """The same error for a section that sits at `prefix` (e.g. 'evals.davis.')."""
        return FieldError(self.field, self.problem, prefix + self.prefix)
