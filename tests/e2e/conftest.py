"""End-to-end fixtures: real `hearth serve` processes on free loopback ports, driven by the official SDKs.

Environment:
  HEARTH_BIN         the hearth binary (default: target/release/hearth)
  HEARTH_MODELS_DIR  the folder scripts/fetch_models.sh fills (default: models/)

Servers started (each start is cheap: discovery only reads GGUF headers, models load on first use):
  server         (session) both models, a generous budget, a claude-* alias; the one most tests share;
                 its teardown sends SIGTERM and asserts a clean exit.
  auth_server    (test_auth.py) --api-key secret and a "*" alias.
  limits_server  (test_limits.py) --body-limit 1K, --queue-depth 1, --max-seqs 1 and a budget that fits SmolLM2 but not
                 Gemma 3 (507).
  budget_server  (test_registry.py) a budget that fits either model alone but not both (eviction).
  test_shutdown.py starts and stops its own.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEARTH_BIN = Path(os.environ.get("HEARTH_BIN", ROOT / "target" / "release" / "hearth"))
if not HEARTH_BIN.is_absolute():
    HEARTH_BIN = ROOT / HEARTH_BIN
MODELS_DIR = Path(os.environ.get("HEARTH_MODELS_DIR", ROOT / "models"))
# The suite checks API behaviour against answers transformers gives (SmolLM2 answers "The capital of France is
# Paris."), so hearth runs with exact f32 activations. The default 8-bit activations (like llama.cpp's) put
# SmolLM2's first token at a near tie: "L" beats "The" by 0.09 in llama.cpp's logits and in hearth's q8 mode.
EXACT = ["--activations", "f32"]
if not MODELS_DIR.is_absolute():
    MODELS_DIR = ROOT / MODELS_DIR
SMOL_PATH = MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PATH = MODELS_DIR / "gemma-3-270m-q4_k_m.gguf"

SMOL = "smollm2"
GEMMA = "gemma3"
CLAUDE_ALIAS = "claude-test"
SMOL_CONTEXT = 8192

HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Generous per-request timeout for SDK clients: a request never legitimately takes this long here.
REQUEST_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `hearth serve` process. Output goes to a log file that failures print."""

    def __init__(self, name: str, args: list[str]):
        self.name = name
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""
        fd, path = tempfile.mkstemp(prefix=f"hearth-e2e-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.hf_home = tempfile.mkdtemp(prefix="hearth-e2e-hf-")

    def command(self) -> list[str]:
        return [str(HEARTH_BIN), *EXACT, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-hf-cache",
                *self.args]

    def start(self) -> "Server":
        if not HEARTH_BIN.exists():
            pytest.fail(f"{HEARTH_BIN} does not exist: run `cargo build --release -p hearth` (or scripts/e2e.sh)")
        for p in (SMOL_PATH, GEMMA_PATH):
            if not p.exists():
                pytest.fail(f"{p} does not exist: run scripts/fetch_models.sh (or scripts/e2e.sh)")
        # A port found free can be taken before the server binds it; try a few.
        for _attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            # HEARTH_* variables configure `hearth serve` too (HEARTH_MODELS_DIR would add models): only the flags
            # here count.
            env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
            env.update(HF_HOME=self.hf_home, NO_COLOR="1")
            env.setdefault("RUST_LOG", "info")
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_healthy():
                return self
            if self.proc.poll() is not None and "cannot listen" in self.log():
                continue
            break
        self.kill()
        pytest.fail(f"{self.name}: `hearth serve` did not become healthy in {HEALTH_TIMEOUT_S:.0f}s\n"
                    f"command: {' '.join(self.command())}\n{self.log_tail()}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = httpx.get(self.url + "/health", timeout=2.0)
                if r.status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        lines = self.log().splitlines()[-n:]
        return f"--- last {len(lines)} lines of {self.log_path} ---\n" + "\n".join(lines)

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after STOP_TIMEOUT_S: reported as None)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop_and_check(self) -> None:
        alive_before = self.proc is not None and self.proc.poll() is None
        code = self.stop()
        assert alive_before, f"{self.name}: the server died during the tests (exit {code})\n{self.log_tail()}"
        assert code == 0, (f"{self.name}: no clean exit after SIGTERM (exit status {code}; None = still running "
                           f"after {STOP_TIMEOUT_S:.0f}s)\n{self.log_tail()}")
        assert "panicked" not in self.log(), f"{self.name}: a panic was logged\n{self.log_tail(200)}"


def both_models(*extra: str) -> list[str]:
    return ["--model", f"{SMOL_PATH}={SMOL}", "--model", f"{GEMMA_PATH}={GEMMA}", *extra]


@pytest.fixture(scope="session")
def main_server() -> Server:
    s = Server("main", both_models("--memory-budget", "8G", "--alias", f"{CLAUDE_ALIAS}={SMOL}")).start()
    yield s
    s.stop_and_check()


@pytest.fixture(scope="session")
def server(main_server) -> str:
    """The main server's base URL (no /v1)."""
    return main_server.url


@pytest.fixture(scope="session")
def oai(server):
    import openai
    return openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def anth(server):
    import anthropic
    return anthropic.Anthropic(base_url=server, api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def http(server):
    with httpx.Client(base_url=server, timeout=REQUEST_TIMEOUT_S) as c:
        yield c


@pytest.fixture(scope="session")
def model_sizes(server) -> dict[str, int]:
    """Each model's estimated loaded size in bytes, as the registry reports it."""
    sizes = {m["id"]: int(m["bytes"]) for m in hearth_models(server)}
    assert sizes.get(SMOL, 0) > 0 and sizes.get(GEMMA, 0) > 0, f"no size estimates in /hearth/models: {sizes}"
    return sizes


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the test modules.


def hearth_models(url: str, **headers) -> list[dict]:
    r = httpx.get(url + "/hearth/models", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["data"] if isinstance(body, dict) else body


def states(url: str, **headers) -> dict[str, str]:
    return {m["id"]: m["state"] for m in hearth_models(url, **headers)}


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05):
    """Polls pred() until it returns something truthy; returns that, or the last value after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def hearth_run(model: Path, prompt: str, max_tokens: int, raw: bool = False) -> str:
    """`hearth run` at temperature 0: stdout is the generated text plus one newline."""
    cmd = [str(HEARTH_BIN), *EXACT, "run", "--model", str(model), "--temperature", "0", "--max-tokens",
           str(max_tokens)]
    if raw:
        cmd.append("--raw")
    cmd.append(prompt)
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')}"
    out = p.stdout.decode()
    assert out.endswith("\n"), repr(out)
    return out[:-1]


def sse_events(lines) -> list[tuple[str | None, str]]:
    """Parses server-sent events from an iterator of lines into (event name, data) pairs."""
    events = []
    name, data = None, []
    for line in lines:
        if line == "":
            if data or name:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:][1:] if line[5:].startswith(" ") else line[5:])
    if data or name:
        events.append((name, "\n".join(data)))
    return events


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert isinstance(body.get("error"), dict), f"not OpenAI's error envelope: {body}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert "x-request-id" in r.headers, dict(r.headers)
    return err


def assert_anthropic_error(r: httpx.Response, status: int, typ: str | None = None) -> dict:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert body.get("type") == "error" and isinstance(body.get("error"), dict), \
        f"not Anthropic's error envelope: {body}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], body
    if typ is not None:
        assert err.get("type") == typ, body
    assert "x-request-id" in r.headers, dict(r.headers)
    return err


def gguf_tokens(path: Path) -> list[str]:
    """The `tokenizer.ggml.tokens` array of a GGUF file (a minimal reader of the metadata section)."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        def u32():
            return struct.unpack("<I", f.read(4))[0]

        def u64():
            return struct.unpack("<Q", f.read(8))[0]

        def string():
            return f.read(u64()).decode("utf-8", errors="replace")

        def skip(t):
            if t in sizes:
                f.seek(sizes[t], 1)
            elif t == 8:
                f.seek(u64(), 1)
            elif t == 9:
                et, n = u32(), u64()
                if et in sizes:
                    f.seek(sizes[et] * n, 1)
                else:
                    for _ in range(n):
                        skip(et)
            else:
                raise ValueError(f"unknown GGUF value type {t}")

        assert f.read(4) == b"GGUF"
        u32()  # version
        u64()  # tensors
        for _ in range(u64()):
            key, t = string(), u32()
            if key == "tokenizer.ggml.tokens":
                assert t == 9
                et, n = u32(), u64()
                assert et == 8
                return [string() for _ in range(n)]
            skip(t)
    raise KeyError(f"{path} has no tokenizer.ggml.tokens")


def pytest_report_header(config):
    return [f"hearth binary: {HEARTH_BIN}", f"models: {MODELS_DIR}", f"python: {sys.version.split()[0]}"]
