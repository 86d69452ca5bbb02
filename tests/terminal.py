"""Running a command as a person at a terminal does: on a pseudo-terminal."""

import os
import pty
import select
import subprocess
import time


def run_on_a_terminal(command, env, timeout=120, typed=None):
    """(exit status, what the terminal showed) for command run with a pseudo-terminal as its
    standard input, output and error; typed (text) is typed once it has shown something (a
    prompt), and is shown as typed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, env={**env, "COLUMNS": "160", "TERM": "xterm"}, stdin=terminal,
                               stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + timeout
    # poll, not select: a long test session has file descriptors past select's 1024
    waiting = select.poll()
    waiting.register(controller, select.POLLIN)
    try:
        while time.monotonic() < deadline:
            if waiting.poll(100):
                try:
                    data = os.read(controller, 65536)
                except OSError:  # the process closed the terminal
                    break
                if not data:
                    break
                shown += data
                if typed is not None:
                    os.write(controller, typed.encode())
                    typed = None
            elif process.poll() is not None:
                break
        return process.wait(timeout=10), shown.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
