"""The short config text of the validation benchmarks and tests (``skyledger.testing.fit_config``)."""

from __future__ import annotations

import dataclasses

import pytest

from skyledger.compute.fitting import FitConfig, TemplateLibrary
from skyledger.testing.fit_config import ENV_VAR, fit_config_from_env, parse_fit_config


def test_fields_take_their_default_types() -> None:
    config, _, ignored = parse_fit_config("degree=-1, clip_sigma=2.5, fit_gas=false, sigma_grid=50:100, chunk_size=4")
    assert ignored == []
    assert config.degree == -1 and isinstance(config.degree, int)
    assert config.clip_sigma == 2.5 and config.fit_gas is False
    assert config.sigma_grid == (50.0, 100.0) and config.chunk_size == 4
    # Everything not named keeps the default.
    assert config.line_mask_kms == FitConfig().line_mask_kms


def test_unknown_keys_come_back_instead_of_failing() -> None:
    _, _, ignored = parse_fit_config("no_such_setting=3,degree=2")
    assert ignored == ["no_such_setting=3"]


def test_templates_name_a_library() -> None:
    config, templates, ignored = parse_fit_config("templates=mileshc")
    assert ignored == []
    if "templates" in {f.name for f in dataclasses.fields(FitConfig)}:
        assert config.templates == "mileshc" and templates is None
    else:
        assert isinstance(templates, TemplateLibrary) and len(templates.names) == 63


def test_malformed_items_say_how_to_write_them() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_fit_config("degree")


def test_environment_variable_unset_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    config, templates, ignored = fit_config_from_env()
    assert config == FitConfig() and templates is None and ignored == []
    monkeypatch.setenv(ENV_VAR, "degree=3")
    assert fit_config_from_env()[0].degree == 3
