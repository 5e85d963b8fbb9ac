"""A fit configuration from a short text, for benchmarks and tests that must run with any config.

``"degree=-1,mdegree=10,templates=emiles"`` becomes a :class:`FitConfig` with those fields
and the :class:`TemplateLibrary` called ``emiles``. Validation benchmarks take such a
string on the command line (``--config``), and the reference tests read it from the
environment variable ``SKYLEDGER_FIT_CONFIG``, so the same checks run on the defaults of
the branch they are in or on an explicit configuration. Keys that the installed
:class:`FitConfig` does not have are reported back instead of failing, because the
scripts outlive individual settings (a key from a newer branch is ignored on an older
one, and the caller says so).
"""

from __future__ import annotations

import dataclasses
import os

from skyledger.compute.fitting import FitConfig, TemplateLibrary

__all__ = ["ENV_VAR", "parse_fit_config", "fit_config_from_env"]

#: environment variable read by the reference tests
ENV_VAR = "SKYLEDGER_FIT_CONFIG"


def _convert(key: str, text: str, default: object) -> object:
    """``text`` as the type of the field's default value."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={text!r}: give true or false")
    if default is None:
        if text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        return tuple(type(default[0])(v) if default else v for v in text.split(":"))
    if isinstance(default, str):
        return text
    raise ValueError(f"{key}: fields of type {type(default).__name__} cannot be set from text")


def parse_fit_config(text: str | None) -> tuple[FitConfig, TemplateLibrary | None, list[str]]:
    """``(config, templates, ignored)`` from ``"key=value,key=value"``.

    ``templates=NAME`` sets ``FitConfig.templates`` where that field exists (the fit then
    loads the library itself, and ``templates`` comes back ``None``); on an older
    FitConfig it returns ``TemplateLibrary.NAME()`` (e.g. ``mileshc``) to pass to
    ``fit_spectra``. ``None`` means the fit's default library. Tuple fields take values
    separated by ``:`` (``sigma_grid=60:150:300``). ``ignored`` lists the keys this
    installation does not know (``FitConfig`` field or template library missing).
    """
    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    defaults = FitConfig()
    values: dict[str, object] = {}
    templates: TemplateLibrary | None = None
    ignored: list[str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"config item {item!r}: write key=value (e.g. degree=-1)")
        if key == "templates" and key not in fields:
            # Before FitConfig named its library: pass the library to fit_spectra.
            factory = getattr(TemplateLibrary, value, None)
            if factory is None or not callable(factory):
                ignored.append(item)
            else:
                templates = factory()
            continue
        if key not in fields:
            ignored.append(item)
            continue
        values[key] = _convert(key, value, getattr(defaults, key))
    return FitConfig(**values), templates, ignored


def fit_config_from_env() -> tuple[FitConfig, TemplateLibrary | None, list[str]]:
    """:func:`parse_fit_config` of ``$SKYLEDGER_FIT_CONFIG`` (unset: the defaults)."""
    return parse_fit_config(os.environ.get(ENV_VAR))
