"""The plugin's settings: Datasette's plugin configuration for "embedkit", at the instance,
database or table level (a table's settings override its database's, which override the
instance's, key by key)."""

import dataclasses

from ..errors import EmbedkitError

PLUGIN = "embedkit"


@dataclasses.dataclass(frozen=True)
class Settings:
    # Models visitors may make work beyond the local models of the collections served: a model
    # that calls a service (and may charge for it) only works for visitors when listed here.
    models: tuple = ()
    # Calls to such models that visitors may cause, per minute: all visitors together, and each
    # visitor (by IP address). Searches past them are answered 429.
    calls_per_minute: int = 60
    calls_per_minute_per_ip: int = 10
    # Model calls one SQL statement may make (a text already embedded is free).
    sql_model_calls: int = 10
    # How long the similar pages wait for a model; None: Datasette's sql_time_limit_ms.
    # SQL never waits longer than sql_time_limit_ms.
    model_time_limit_ms: int | None = None
    max_text_chars: int = 2000
    default_n: int = 10
    max_n: int = 100  # and never more than Datasette's max_returned_rows
    max_filters: int = 20
    # Longest vector the SQL functions read or write.
    max_dimensions: int = 8192
    # Load the local models of the collections served when Datasette starts, so that the first
    # search does not wait for one. Models that call a service are never called at startup.
    load_models_at_startup: bool = True


FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def check(config, where="") -> dict:
    """config (one level's plugin configuration) checked: unknown keys and wrong types are errors."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise EmbedkitError(f"plugins.{PLUGIN}{where} should be an object")
    checked = {}
    for key, value in config.items():
        if key not in FIELDS:
            raise EmbedkitError(f"plugins.{PLUGIN}{where}: unknown setting {key!r} (known: {', '.join(FIELDS)})")
        if key == "models":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise EmbedkitError(f"plugins.{PLUGIN}{where}.models should be a list of model ids")
            value = tuple(value)
        elif key == "load_models_at_startup":
            if not isinstance(value, bool):
                raise EmbedkitError(f"plugins.{PLUGIN}{where}.{key} should be true or false")
        elif not (value is None and key == "model_time_limit_ms"):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if "calls" in key else 1):
                raise EmbedkitError(f"plugins.{PLUGIN}{where}.{key} should be a whole number, not {value!r}")
        checked[key] = value
    return checked


def settings(datasette, database=None, table=None) -> Settings:
    merged = check(datasette.plugin_config(PLUGIN))
    if database is not None:
        merged.update(check(datasette.plugin_config(PLUGIN, database=database, fallback=False), f" of {database}"))
        if table is not None:
            merged.update(check(datasette.plugin_config(PLUGIN, database=database, table=table, fallback=False),
                                f" of {database}/{table}"))
    return Settings(**merged)
