"""Access: Redis AUTH with ACL users, TLS (rediss://) through a real TLS terminator, no pickle anywhere,
and every listening socket on loopback only."""

from __future__ import annotations

import ast
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

import enroll
from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryStore
from pipeline.redis.connect import connect
from pipeline.video.metrics import MetricsServer, StageMetrics

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr@t/pw:%x"  # URL-special characters: must be quoted in the URL and never shown


# -- ACL users ------------------------------------------------------------------------------------------------
@pytest.fixture
def acl_users(redis_server, redis_client):
    """alice: full access; bob: may only PING. Both removed afterwards (the server is the session's)."""
    redis_client.acl_setuser("alice", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"],
                             commands=["+@all"])
    redis_client.acl_setuser("bob", enabled=True, passwords=["+bobpw"], commands=["+ping", "+hello", "+auth"])
    yield
    redis_client.acl_deluser("alice", "bob")


def user_url(port: int, user: str, password: str) -> str:
    return f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{port}/0"


def test_acl_user_connects_and_enrolls_through_the_cli(acl_users, redis_server, redis_client, tmp_path, capsys):
    url = user_url(redis_server.port, "alice", PASSWORD)
    client = connect(url, tmp_path)
    assert client.acl_whoami() == "alice"
    GalleryStore(client).add("Ada", _unit(), ["a"], "m")
    assert enroll.main(["--redis-url", url, "--json", "list"]) == 0
    assert '"name": "Ada"' in capsys.readouterr().out
    assert not (tmp_path / "redis").exists()  # the URL was used, no embedded server started


@pytest.mark.parametrize("user, password", [("alice", "wrong-pw"), ("mallory", PASSWORD), ("default", "wrong-pw")])
def test_wrong_user_or_password_is_an_authentication_error_without_the_password(acl_users, redis_server, tmp_path,
                                                                               capsys, user, password):
    url = user_url(redis_server.port, user, password)
    shown = f"redis://{user}:***@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(GalleryError) as err:
        connect(url, tmp_path)
    assert str(err.value) == f"authentication failed for {shown}"
    assert enroll.main(["--redis-url", url, "list"]) == enroll.EXIT_ERROR
    out, text = capsys.readouterr()
    assert text.strip() == f"error: authentication failed for {shown}" and out == ""
    for secret in (password, quote(password, safe="")):
        assert secret not in text
    assert not (tmp_path / "redis").exists()


def test_user_without_permission_gets_one_line_naming_the_refusal(acl_users, redis_server, capsys):
    url = user_url(redis_server.port, "bob", "bobpw")
    assert enroll.main(["--redis-url", url, "list"]) == enroll.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "bobpw" not in err
    assert "User bob has no permissions to run the 'hgetall' command" in err


def _unit():
    import numpy as np

    row = np.zeros((1, 128), np.float32)
    row[0, 0] = 1
    return row


# -- TLS --------------------------------------------------------------------------------------------------------
def make_cert(folder: Path, name: str, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for `host`, and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"], check=True, capture_output=True, timeout=30)
    return cert, key


class TLSProxy:
    """A TLS terminator in front of a plain TCP port, as stunnel or a cloud Redis front end would be.

    The pip-installed redis-server is built without TLS, so this is how `rediss://` gets a real handshake.
    """

    def __init__(self, backend_port: int, cert: Path, key: str | Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes_failed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            conn.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        threading.Thread(target=self._pump, args=(backend, tls), daemon=True).start()
        self._pump(tls, backend)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    server_cert, server_key = make_cert(folder, "server")
    other_cert, _ = make_cert(folder, "other")  # a CA that did not sign the server's certificate
    return {"cert": server_cert, "key": server_key, "other": other_cert}


@pytest.fixture(scope="module")
def tls_proxy(redis_server, certs):
    proxy = TLSProxy(redis_server.port, certs["cert"], certs["key"])
    yield proxy
    proxy.close()


def tls_url(redis_server, port: int, query: str = "") -> str:
    return f"rediss://:{quote(redis_server.password, safe='')}@127.0.0.1:{port}/0" + (f"?{query}" if query else "")


def test_the_bundled_redis_server_has_no_tls(tmp_path):
    """Why the TLS tests use a proxy; if a future binary has TLS, test it directly instead of skipping."""
    from pipeline.redis.server import default_binary

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    try:
        proc = subprocess.run([str(default_binary()), "--port", "0", "--tls-port", str(port), "--save", ""],
                              cwd=tmp_path, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.skip("this redis-server starts with a TLS port: it supports TLS")
    assert proc.returncode != 0 and "Failed finding TLS support" in proc.stdout + proc.stderr


def test_rediss_with_the_ca_file_connects_through_tls(redis_server, redis_client, tls_proxy, certs, tmp_path,
                                                      capsys):
    url = tls_url(redis_server, tls_proxy.port, f"ssl_ca_certs={certs['cert']}")
    client = connect(url, tmp_path)
    client.set("tls-probe", b"over tls")
    assert redis_client.get("tls-probe") == b"over tls"  # the same server, reached through the terminator
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    client.close()
    assert enroll.main(["--redis-url", url, "list"]) == 0
    assert "0 identities" in capsys.readouterr().out
    assert not (tmp_path / "redis").exists()


@pytest.mark.parametrize("case, message", [
    ("no-ca", "the server's certificate was not accepted (self-signed certificate); give the CA that signed it "
              "with ?ssl_ca_certs=FILE in the URL"),
    ("wrong-ca", "the server's certificate was not accepted"),
    ("missing-ca", "ssl_ca_certs file {missing} not found"),
    ("plain-port", "no answer to the TLS handshake; is the server speaking TLS on that port?"),
])
def test_tls_that_does_not_verify_is_refused_clearly(redis_server, tls_proxy, certs, tmp_path, capsys, case,
                                                     message):
    missing = tmp_path / "no-such-ca.pem"
    port = redis_server.port if case == "plain-port" else tls_proxy.port
    query = {"no-ca": "", "wrong-ca": f"ssl_ca_certs={certs['other']}", "missing-ca": f"ssl_ca_certs={missing}",
             "plain-port": f"ssl_ca_certs={certs['cert']}&socket_timeout=1"}[case]  # plain Redis waits
    url = tls_url(redis_server, port, query)
    with pytest.raises(GalleryError) as err:
        connect(url, tmp_path)
    text = str(err.value)
    assert message.format(missing=missing) in text and "rediss://:***@127.0.0.1" in text
    assert redis_server.password not in text and "\n" not in text
    # Something answered, so this is not "nothing listening": the embedded server must not stand in.
    assert not (tmp_path / "redis").exists()
    assert enroll.main(["--redis-url", url, "list"]) == enroll.EXIT_ERROR
    err_text = capsys.readouterr().err
    assert err_text.strip() == f"error: {text}" and redis_server.password not in err_text


# -- no pickle --------------------------------------------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SCANNED = ["pipeline", "engines", "trainer", "bench", "run.py", "enroll.py"]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return None


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every way `source` could unpickle (or run) data from a file: what a model or gallery file must never do."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func.endswith("torch.load"):
                if _keyword(node, "weights_only") is not True:
                    found.append(f"{where}: {func}( without weights_only=True")
            elif func in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
                found.append(f"{where}: {func}( with allow_pickle")
            elif func in ("pd.read_pickle", "pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load"):
                found.append(f"{where}: {func}(")
            elif func == "yaml.load" and "SafeLoader" not in ast.unparse(node):
                found.append(f"{where}: yaml.load( without SafeLoader")
    return found


def test_the_scanner_finds_every_kind_of_offender():
    offenders = ("import pickle\nimport dill as d\nfrom joblib import load\nimport torch\n"
                 "torch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
                 "np.load('x.npy', allow_pickle=True)\nyaml.load(text, Loader=yaml.Loader)\n")
    assert len(unsafe_loads(offenders)) == 7
    safe = ("torch.load('m.pt', map_location='cpu', weights_only=True)\nnp.load('x.npy')\n"
            "np.load('x.npy', allow_pickle=False, mmap_mode='r')\nyaml.safe_load(text)\n")
    assert unsafe_loads(safe) == []


def test_no_source_file_can_unpickle():
    files = [p for item in SCANNED for p in ([REPO / item] if item.endswith(".py")
                                               else sorted((REPO / item).rglob("*.py")))]
    assert len(files) > 50
    found = [hit for path in files for hit in unsafe_loads(path.read_text(encoding="utf-8"),
                                                            str(path.relative_to(REPO)))]
    assert found == []


# -- loopback only ----------------------------------------------------------------------------------------------
def non_loopback_ipv4() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def refused_from_outside(port: int) -> None:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=2).close()


def test_metrics_endpoint_is_not_reachable_from_other_hosts():
    server = MetricsServer(StageMetrics(), port=0)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()  # reachable here
        refused_from_outside(server.port)
    finally:
        server.close()


def test_embedded_redis_is_not_reachable_from_other_hosts(redis_server, redis_client):
    assert redis_client.config_get("bind")["bind"] == "127.0.0.1"
    assert redis_client.config_get("protected-mode")["protected-mode"] == "yes"
    refused_from_outside(redis_server.port)
