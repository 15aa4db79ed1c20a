"""A real TLS cluster: `dask scheduler --protocol tls` and `dask worker` processes on 127.0.0.1
with certificates from their own CA; dsketch joins it from the command line and from Python,
and a client without the cluster's certificates is refused with one clear line, quickly."""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import numpy as np
import pytest
from distributed import Security

import dsketch
from dsketch.cli import main
from dsketch.engine.client import connect
from dsketch.errors import ClusterConnectionError, DSketchError

pytest.importorskip("cryptography", reason="certificates are generated with the cryptography package")
from test_real_cluster import dask_processes

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
FIT_ARGS = ["--model", "logistic", "--sketch", "leverage", "--sketch-size", "600", "--tol", "1e-10"]
TLS_ENV = ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION")


def _load_make_certs():
    name = "dsketch_cluster_make_certs"
    if name not in sys.modules:  # a dataclass needs its module registered
        spec = importlib.util.spec_from_file_location(name, ROOT / "cluster" / "make_certs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The cluster's CA and certificates, and a second CA's client certificate (a stranger)."""
    make_certs = _load_make_certs()
    ours = make_certs.make_certificates(tmp_path_factory.mktemp("certs"))
    stranger = make_certs.make_certificates(tmp_path_factory.mktemp("stranger"), names=("client",))
    assert oct(os.stat(ours["client"].key).st_mode & 0o777) == "0o600"
    return {**ours, "stranger-ca": stranger["ca"], "stranger": stranger["client"]}


def _client_security(certs, who: str = "client", ca: str = "ca") -> Security:
    return Security(tls_ca_file=certs[ca].cert, tls_client_cert=certs[who].cert, tls_client_key=certs[who].key,
                    require_encryption=True)


@pytest.fixture(scope="module")
def tls_address(certs, tmp_path_factory):
    def role(name: str) -> list[str]:
        return ["--tls-ca-file", certs["ca"].cert, "--tls-cert", certs[name].cert, "--tls-key", certs[name].key]

    with dask_processes(protocol="tls", n_workers=2, scheduler_args=role("scheduler"), worker_args=role("worker"),
                        security=_client_security(certs), log_dir=str(tmp_path_factory.mktemp("tls-logs"))) as addr:
        assert addr.startswith("tls://127.0.0.1:")
        yield addr


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    rng = np.random.default_rng(11)
    n, d = 3000, 5
    A = rng.standard_normal((n, d))
    xt = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ xt))).astype(float)
    store = str(tmp_path_factory.mktemp("tls-problem") / "p.zarr")
    dsketch.write_problem(store, A, y)
    return store


@pytest.fixture(scope="module")
def reference(problem, client):
    """The same fit on a plain (tcp, LocalCluster) cluster."""
    return dsketch.fit(problem, "logistic", curvature=dsketch.Curvature("leverage", size=600),
                       solver=dsketch.Solver(tol=1e-10), cluster=client)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in TLS_ENV and k != "DSKETCH_SCHEDULER" and not k.startswith("DASK_DISTRIBUTED__COMM__TLS")}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *args], capture_output=True, text=True,
                          env=env, timeout=180)


@pytest.mark.parametrize("credentials", ["flags", "environment"])
def test_cli_fit_over_tls(credentials, certs, tls_address, problem, reference, tmp_path):
    out = str(tmp_path / "r.zarr")
    env = _clean_env()
    args = ["fit", *FIT_ARGS, "--data", problem, "--out", out, "--scheduler", tls_address]
    if credentials == "flags":
        args += ["--tls-ca-file", certs["ca"].cert, "--tls-cert", certs["client"].cert,
                 "--tls-key", certs["client"].key]
    else:  # dask's standard configuration, as environment variables
        env.update({"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": certs["ca"].cert,
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": certs["client"].cert,
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": certs["client"].key,
                    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"})
    proc = _cli(args, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"joined scheduler {tls_address}" in proc.stdout
    result = dsketch.load_result(out)
    assert result.success
    np.testing.assert_allclose(result.x, reference.x, rtol=0, atol=1e-10)


def test_python_api_over_tls(certs, tls_address, problem, reference):
    # an explicit distributed.Security through connect(security=...)
    with connect(tls_address, security=_client_security(certs)) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        assert all(w.startswith("tls://") for w in c.scheduler_info()["workers"])
        explicit = dsketch.fit(problem, "logistic", curvature=dsketch.Curvature("leverage", size=600),
                               solver=dsketch.Solver(tol=1e-10), cluster=c)
    # dask's configuration, read by fit(scheduler=...)
    with dask.config.set({"distributed.comm.tls.ca-file": certs["ca"].cert,
                          "distributed.comm.tls.client.cert": certs["client"].cert,
                          "distributed.comm.tls.client.key": certs["client"].key}):
        configured = dsketch.fit(problem, "logistic", curvature=dsketch.Curvature("leverage", size=600),
                                 solver=dsketch.Solver(tol=1e-10), cluster=tls_address)
    for result in (explicit, configured):
        assert result.success
        np.testing.assert_allclose(result.x, reference.x, rtol=0, atol=1e-10)


def test_missing_credentials_name_what_is_missing(certs, tls_address):
    t0 = time.perf_counter()
    with pytest.raises(ClusterConnectionError, match=r"no CA file, no client certificate.*--tls-ca-file"):
        with connect(tls_address):
            pass
    with pytest.raises(ClusterConnectionError, match=r"TLS but the client has no client key:"):
        with connect(tls_address, security=Security(tls_ca_file=certs["ca"].cert,
                                                    tls_client_cert=certs["client"].cert)):
            pass
    with pytest.raises(ClusterConnectionError, match=r"TLS CA file '.*nowhere.pem' does not exist"):
        with connect(tls_address, security=Security(tls_ca_file=str(Path(certs["ca"].cert).parent / "nowhere.pem"),
                                                    tls_client_cert=certs["client"].cert,
                                                    tls_client_key=certs["client"].key)):
            pass
    # credentials ask for encryption: a plain tcp:// address is refused before connecting
    with pytest.raises(ClusterConnectionError, match="not tls://"):
        with connect(tls_address.replace("tls://", "tcp://"), security=_client_security(certs)):
            pass
    assert time.perf_counter() - t0 < 5
    assert issubclass(ClusterConnectionError, DSketchError) and issubclass(ClusterConnectionError, ConnectionError)


def test_cli_without_credentials_is_one_line(tls_address, problem, tmp_path, capsys):
    code = main(["fit", *FIT_ARGS, "--data", problem, "--out", str(tmp_path / "r.zarr"), "--scheduler", tls_address])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"dsketch fit: error: scheduler {tls_address} uses TLS but the client has no CA file" in err
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in err
    assert not (tmp_path / "r.zarr").exists()


def test_client_with_foreign_certificate_is_refused(certs, tls_address):
    """Certificates from another CA: the handshake fails at once, not after the timeout."""
    t0 = time.perf_counter()
    for security in (_client_security(certs, who="stranger", ca="stranger-ca"),  # neither side trusts the other
                     _client_security(certs, who="stranger", ca="ca")):  # we trust it, it does not trust us
        with pytest.raises(ClusterConnectionError, match=f"cannot connect to the Dask scheduler at {tls_address}"):
            with connect(tls_address, security=security, timeout=20):
                pass
    assert time.perf_counter() - t0 < 15


def test_scheduler_refuses_a_client_without_certificate(certs, tls_address):
    """Below dask: a TLS client that trusts the CA but shows no certificate is rejected by the
    scheduler in the handshake (mutual TLS), and a plain-TCP client is cut off."""
    host, port = tls_address.removeprefix("tls://").split(":")
    ctx = ssl.create_default_context(cafile=certs["ca"].cert)
    ctx.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        with pytest.raises((ssl.SSLError, ConnectionResetError), match=r"(?i)certificate required|EOF|reset"):
            tls.sendall(b"hello")
            if not tls.recv(1):
                raise ConnectionResetError("connection reset: closed without data")
    with pytest.raises(ClusterConnectionError, match="cannot connect"):
        with connect(tls_address.replace("tls://", "tcp://"), security=Security(require_encryption=False),
                     timeout=10):
            pass
