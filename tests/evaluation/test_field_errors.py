"""FieldError: the flag named as the user types it in each context."""

import pytest

from mer_jax.evaluation.field_errors import FieldError


def test_the_flag_follows_the_section_prefix_and_braces_in_values_survive():
    error = FieldError("davis_root", "set {flag}=PATH; {flag} was /data/{x}")
    assert str(error) == "set --config.davis_root=PATH; --config.davis_root was /data/{x}"
    nested = error.under("evals.davis.")
    assert isinstance(nested, ValueError) and nested.field == "davis_root"
    assert str(nested) == "set --config.evals.davis.davis_root=PATH; --config.evals.davis.davis_root was /data/{x}"
    with pytest.raises(ValueError, match=r"--config\.evals\.davis\.davis_root=PATH"):
        raise nested
