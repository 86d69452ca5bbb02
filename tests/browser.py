"""The docs' posts collection, served by a real Datasette and looked at in headless Chromium.

Shared by tests/test_browser.py, tests/test_widget.py and docs/screenshots.py:

    with serve(build_posts(directory)) as url:
        page = parse(chromium("--dump-dom", url + "/embeddings/posts/1"))
"""

import base64
import contextlib
import html.parser
import json
import os
import pathlib
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from click.testing import CliRunner

from embedkit.cli import cli

# blog.csv of docs/sql-functions.md (the tour's posts).
BLOG_CSV = """\
id,title,body,tag
1,Backing up SQLite,Copy a live database safely with the .backup command or with Litestream.,sqlite
2,Full-text search,SQLite's FTS5 extension builds an index of the words in your documents.,sqlite
3,My sourdough starter,Feed the starter flour and water every day and keep it somewhere warm.,baking
4,Rye bread,A dense loaf of rye flour with caraway seeds that keeps for a week.,baking
5,Publishing with Datasette,Datasette turns a SQLite file into a website and a JSON API.,datasette
"""

CHROMIUM = "chromium"  # Debian's package and command
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in containers and CI has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-background-networking",
    "--no-first-run",
    "--virtual-time-budget=5000",  # let the page's scripts run before dumping or capturing it
]


def build_posts(directory) -> pathlib.Path:
    """embeddings.db with the posts collection in directory, made by `embedkit embed-multi`."""
    directory = pathlib.Path(directory)
    (directory / "blog.csv").write_text(BLOG_CSV, encoding="utf-8")
    db = directory / "embeddings.db"
    args = ["embed-multi", "posts", str(directory / "blog.csv"), "--metadata-column", "tag", "--store", "-d", str(db)]
    result = CliRunner().invoke(cli, args)
    if result.exit_code != 0:
        raise RuntimeError(f"embedkit {' '.join(args)} failed:\n{result.output}") from result.exception
    return db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(db, timeout=120):
    """Run `datasette serve db` on a free port of 127.0.0.1; yield its base URL once it answers."""
    db = pathlib.Path(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = db.with_name("datasette.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            # A generous time limit for the model (embedkit's pages wait at most this long): the
            # machine running the tests may be busy.
            [sys.executable, "-m", "datasette", "serve", str(db), "--port", str(port), "--host", "127.0.0.1",
             "--setting", "sql_time_limit_ms", "60000"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout  # startup loads the model before serving
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"datasette exited ({server.returncode}):\n{log_path.read_text()}")
                try:
                    with urllib.request.urlopen(url + "/-/versions.json", timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"datasette did not answer at {url} in {timeout} s:\n{log_path.read_text()}") from None
                    time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def chromium(*args, timeout=60) -> str:
    """Run headless Chromium with a throwaway profile; its stdout (the DOM for --dump-dom)."""
    executable = shutil.which(CHROMIUM)
    if executable is None:
        raise FileNotFoundError(
            f"{CHROMIUM} is not installed: install Debian's chromium package "
            "(apt-get install chromium), as .ci/run does"
        )
    with tempfile.TemporaryDirectory(prefix="embedkit-chromium-") as profile:
        result = subprocess.run(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag, class_=None):
        return [e for e in self.iter() if e.tag == tag and (class_ is None or class_ in e.attrs.get("class", "").split())]

    def text(self):
        """The text a person reads (not that of scripts and styles)."""
        if self.tag in ("script", "style"):
            return ""
        return "".join(c.text() if isinstance(c, Element) else c for c in self.children).strip()


class TreeBuilder(html.parser.HTMLParser):
    """The DOM Chromium dumped (which closes every element) as a tree of Elements."""

    def __init__(self):
        super().__init__()
        self.root = self.current = Element("#document", {})

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_endtag(self, tag):
        element = self.current
        while element.parent is not None and element.tag != tag:
            element = element.parent
        if element.parent is not None:
            self.current = element.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(markup) -> Element:
    """The HTML Chromium dumped as a tree of Elements; the root is "#document"."""
    builder = TreeBuilder()
    builder.feed(markup)
    builder.close()
    return builder.root


class Page:
    """A page in headless Chromium driven through the DevTools protocol over a pipe
    (--remote-debugging-pipe: JSON messages ended by NUL on the child's fds 3 and 4), for what
    --dump-dom cannot do: move the mouse, click, and read what scripts did.

        with Page(url) as page:
            page.mouse("mouseMoved", 100, 200)
            text = page.evaluate("document.querySelector('.tip').textContent")
    """

    def __init__(self, url, width=1000, height=700, timeout=60):
        executable = shutil.which(CHROMIUM)
        if executable is None:
            raise FileNotFoundError(f"{CHROMIUM} is not installed: install Debian's chromium package")
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="embedkit-chromium-")
        commands_read, self.commands = os.pipe()  # we write, Chromium reads its fd 3
        self.replies, replies_write = os.pipe()  # Chromium writes its fd 4, we read

        def fds():  # in the child, before exec: the pipes as the fds Chromium expects
            high_read, high_write = os.dup(commands_read), os.dup(replies_write)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
        self.process = subprocess.Popen(
            [executable, *flags, f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4),
        )
        os.close(commands_read)
        os.close(replies_write)
        self.buffer, self.next_id, self.session = b"", 0, None
        self.poller = select.poll()
        self.poller.register(self.replies, select.POLLIN)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)
        self.profile.cleanup()

    def send(self, method, **params):
        """The result of one DevTools command (events arriving meanwhile are skipped)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                # poll, not select: a long test session has fds past select's 1024
                if left <= 0 or not self.poller.poll(left * 1000):
                    raise TimeoutError(f"chromium did not answer {method} in {self.timeout} s")
                chunk = os.read(self.replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited ({self.process.poll()}) during {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} still false after {timeout} s")
            time.sleep(0.1)

    def mouse(self, kind, x, y, **extra):
        """A real mouse event at (x, y) of the viewport: mouseMoved, mousePressed, mouseReleased, mouseWheel."""
        if kind in ("mousePressed", "mouseReleased"):
            extra = {"button": "left", "clickCount": 1, **extra}
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        pathlib.Path(path).write_bytes(base64.b64decode(data))
