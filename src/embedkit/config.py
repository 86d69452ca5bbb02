"""The user's own settings, kept outside any database: API keys, configured models, aliases.

They live in one directory, EMBEDKIT_USER_DIR or the platform's config directory, as small
JSON files a person can read and edit: keys.json (name -> key) and models.json
({"models": {id: settings}, "aliases": {alias: model id}}).
"""

import json
import os
import sys
import tempfile

from . import jsondata
from .errors import EmbedkitError


def user_dir() -> str:
    """EMBEDKIT_USER_DIR, else the platform's per-user config directory plus embedkit."""
    return os.environ.get("EMBEDKIT_USER_DIR") or _platform_dir(
        windows=("APPDATA", "embedkit"), mac="~/Library/Application Support/embedkit", xdg=("XDG_CONFIG_HOME", "~/.config")
    )


def cache_dir() -> str:
    """EMBEDKIT_CACHE_DIR, else the platform's per-user cache directory plus embedkit: files
    embedkit can make again (prepared models)."""
    return os.environ.get("EMBEDKIT_CACHE_DIR") or _platform_dir(
        windows=("LOCALAPPDATA", "embedkit/Cache"), mac="~/Library/Caches/embedkit", xdg=("XDG_CACHE_HOME", "~/.cache")
    )


def _platform_dir(windows, mac, xdg) -> str:
    if sys.platform == "win32":
        variable, below = windows
        return os.path.join(os.environ.get(variable) or os.path.expanduser("~"), *below.split("/"))
    if sys.platform == "darwin":
        return os.path.expanduser(mac)
    variable, default = xdg
    return os.path.join(os.environ.get(variable) or os.path.expanduser(default), "embedkit")


def path(name) -> str:
    return os.path.join(user_dir(), name)


def read(name) -> dict:
    """The JSON object in the user directory's file name ({} when there is none)."""
    file = path(name)
    try:
        with open(file, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as ex:
        raise EmbedkitError(f"{file}: cannot read it as JSON: {ex}") from None
    if not isinstance(value, dict):
        raise EmbedkitError(f"{file}: should hold a JSON object")
    return value


def write(name, value: dict, private=False):
    """Replace the file name with value, atomically; private files are readable by the user only."""
    os.makedirs(user_dir(), exist_ok=True)
    file = path(name)
    handle, temporary = tempfile.mkstemp(dir=user_dir(), prefix=f".{name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(jsondata.dumps(value, file, indent=2, ensure_ascii=False))
            f.write("\n")
        if not private and os.name == "posix":
            # mkstemp makes files 0600; only keys need that.
            os.chmod(temporary, 0o644)
        os.replace(temporary, file)
    except BaseException:
        os.unlink(temporary)
        raise


KEYS = "keys.json"
MODELS = "models.json"


class Secret:
    """An API key that never shows itself: its repr and str are masked, so a traceback that
    prints locals (Datasette's does, with rich) or a log line cannot leak it. reveal() gives
    the key to the one place that sends it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self):
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


def get_key(name, env_var=None) -> Secret | None:
    """The API key called name: from env_var when that is set, else from keys.json, else None.
    Blank keys count as none; the key is never held in a plain local variable."""
    if env_var and (os.environ.get(env_var) or "").strip():
        return Secret(os.environ[env_var].strip())
    return _secret(read(KEYS).get(name)) if name is not None else None


def _secret(value) -> Secret | None:
    return Secret(value.strip()) if isinstance(value, str) and value.strip() else None


def set_key(name, value):
    keys = read(KEYS)
    keys[name] = value
    write(KEYS, keys, private=True)
