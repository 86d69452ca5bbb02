"""Datasette for tests, the same on 0.65 and the 1.0 alphas: instances, requests, SQL, processes.

Where the versions differ: 1.0 reads permissions, canned queries and plugin settings from its
configuration (datasette.yaml), 0.65 from metadata; 1.0 answers SQL at /DB/-/query.json.
"""

import asyncio
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

from datasette.app import Datasette

import embedkit

DATASETTE_1 = hasattr(Datasette, "allowed")


def make(paths, config=None, settings=None, immutables=()):
    """A Datasette serving paths, with config (allow blocks, queries, plugins) where this
    version reads it."""
    where = "config" if DATASETTE_1 else "metadata"
    return Datasette([str(p) for p in paths], immutables=[str(p) for p in immutables],
                     settings=settings, **{where: config or {}})


def config_option(path, config) -> list:
    """The command-line option giving config (written to path) to `datasette`."""
    path.write_text(json.dumps(config))
    return ["-c" if DATASETTE_1 else "-m", str(path)]


def request(ds, path, actor=None):
    cookies = {"ds_actor": ds.sign({"a": actor}, "actor")} if actor else None
    return asyncio.run(ds.client.get(path, cookies=cookies))


def get_json(ds, path, status=200, actor=None):
    response = request(ds, path, actor)
    assert response.status_code == status, response.text
    return json.loads(response.text)  # strict: Python's json reads NaN, so check_json() too


def sql_path(database, sql, **params) -> str:
    query = urllib.parse.urlencode({"sql": sql, "_shape": "objects", **params})
    return f"/{database}/-/query.json?{query}" if DATASETTE_1 else f"/{database}.json?{query}"


def sql(ds, database, sql_text, status=200, actor=None, **params):
    return get_json(ds, sql_path(database, sql_text, **params), status, actor)


def strict_json(text):
    """text parsed as JSON the standard allows: no NaN or Infinity."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def datasette_command(*args, cwd, env=None, timeout=180, user=None):
    """Run the `datasette` command (as user, when given and this process is root)."""
    prefix, env = [], {**os.environ, **(env or {})}
    if user is not None and os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]  # numeric ids
        env["PYTHONPATH"] = _readable_embedkit()
    return subprocess.run([*prefix, sys.executable, "-m", "datasette", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _readable_embedkit() -> str:
    """A folder holding a copy of the embedkit package that any user can read: an editable
    install points into a checkout that may be in a folder only its owner can enter."""
    folder = os.path.join(tempfile.gettempdir(), f"embedkit-readable-{os.getpid()}")
    if not os.path.exists(folder):
        source = os.path.dirname(embedkit.__file__)
        shutil.copytree(source, os.path.join(folder, "embedkit"), ignore=shutil.ignore_patterns("__pycache__"))
        atexit.register(shutil.rmtree, folder, True)
        for root, _dirs, files in os.walk(folder):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
    return folder
