"""The deployment recipes under cluster/: the SLURM/PBS job scripts dask-jobqueue writes for
dsketch workers, the Kubernetes DaskCluster manifest and its driver, the local script."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import dsketch

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _load(relpath: str, name: str):
    """Import a script under cluster/ (not a package) as a module."""
    if name not in sys.modules:  # dataclasses need their module registered
        spec = importlib.util.spec_from_file_location(name, CLUSTER / relpath)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def jobqueue():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install dask-jobqueue)")
    return _load("jobqueue_example.py", "dsketch_cluster_jobqueue_example")


def _job_script(jobqueue, system: str, **kwargs) -> tuple[str, str]:
    cluster = jobqueue.make_cluster(
        system, cores=4, memory="16GiB", walltime="02:30:00", queue="compute", account="proj42",
        scheduler_host="127.0.0.1", dashboard_address="127.0.0.1:0", local_directory="/scratch/dsketch",
        worker_extra_args=["--lifetime", "55m"], job_script_prologue=["module load python/3.11"],
        python="/opt/env/bin/python", **kwargs,
    )
    with cluster:
        return cluster.job_script(), cluster.scheduler_address


def _opt(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def _worker_line(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(lines) == 1, script
    return shlex.split(lines[0])


EXPECTED_DIRECTIVES = {
    "slurm": ["#SBATCH -J dsketch-worker", "#SBATCH -p compute", "#SBATCH -A proj42", "#SBATCH -n 1",
              "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G", "#SBATCH -t 02:30:00"],
    "pbs": ["#PBS -N dsketch-worker", "#PBS -q compute", "#PBS -A proj42",
            "#PBS -l select=1:ncpus=4:mem=16GB", "#PBS -l walltime=02:30:00"],
}


@pytest.mark.parametrize("system", ["slurm", "pbs"])
def test_job_script_has_directives_and_worker_command(jobqueue, system):
    script, address = _job_script(jobqueue, system)
    assert script.startswith("#!/usr/bin/env bash\n")
    directives = [line for line in script.splitlines() if line.startswith(("#SBATCH", "#PBS"))]
    assert directives == EXPECTED_DIRECTIVES[system], script
    argv = _worker_line(script)
    assert argv[:4] == ["/opt/env/bin/python", "-m", "distributed.cli.dask_worker", address]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", address)
    # 4 single-threaded workers per job sharing its 16 GiB
    assert _opt(argv, "--nthreads") == "1" and _opt(argv, "--nworkers") == "4"
    assert _opt(argv, "--memory-limit") == "4.00GiB"
    assert _opt(argv, "--local-directory") == "/scratch/dsketch"
    assert argv[-2:] == ["--lifetime", "55m"]
    lines = script.splitlines()
    assert lines.index("module load python/3.11") < next(i for i, ln in enumerate(lines) if "dask_worker" in ln)
    assert "--tls" not in script


@pytest.mark.parametrize("system", ["slurm", "pbs"])
def test_job_script_with_tls(jobqueue, system, tmp_path):
    pytest.importorskip("cryptography", reason="certificates are generated with the cryptography package")
    make_certs = _load("make_certs.py", "dsketch_cluster_make_certs")
    pairs = make_certs.make_certificates(tmp_path / "certs")
    script, address = _job_script(jobqueue, system, security=jobqueue.tls_security(tmp_path / "certs"))
    assert address.startswith("tls://127.0.0.1:")
    argv = _worker_line(script)
    assert argv[3] == address
    assert _opt(argv, "--tls-ca-file") == pairs["ca"].cert
    assert _opt(argv, "--tls-cert") == pairs["worker"].cert and _opt(argv, "--tls-key") == pairs["worker"].key
    with pytest.raises(FileNotFoundError, match=r"lacks ca\.pem, scheduler\.pem"):
        jobqueue.tls_security(tmp_path)


def test_jobqueue_options_are_checked(jobqueue, capsys):
    with pytest.raises(ValueError, match=r"system must be one of \('slurm', 'pbs'\)"):
        jobqueue.make_cluster("sge")
    with pytest.raises(ValueError, match="cores must be >= 1"):
        jobqueue.make_cluster("slurm", cores=0)
    # the command line's --dry-run prints the script and submits nothing
    assert jobqueue.main(["--system", "slurm", "--cores", "2", "--memory", "8GiB", "--scheduler-host", "127.0.0.1",
                          "--dashboard-address", "127.0.0.1:0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --cpus-per-task=2" in out and "--nworkers 2" in out


@pytest.fixture(scope="module")
def manifest():
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")
    with open(CLUSTER / "kubernetes" / "daskcluster.yaml") as f:
        docs = list(yaml.safe_load_all(f))
    return {doc["kind"]: doc for doc in docs}


def _container(pod_spec: dict, name: str) -> dict:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return container


def test_daskcluster_manifest(manifest):
    cluster = manifest["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    worker, scheduler = cluster["spec"]["worker"], cluster["spec"]["scheduler"]
    assert isinstance(worker["replicas"], int) and worker["replicas"] >= 1

    w = _container(worker["spec"], "worker")
    s = _container(scheduler["spec"], "scheduler")
    assert w["args"][:2] == ["dask", "worker"] and s["args"][:2] == ["dask", "scheduler"]
    assert w["image"] == s["image"] and "dsketch" in w["image"]
    # one single-threaded worker per pod, its memory limit below the pod's
    args = w["args"]
    assert args[args.index("--nthreads") + 1] == "1"
    assert args[args.index("--memory-limit") + 1] == "3.5GiB"
    for c in (w, s):
        res = c["resources"]
        assert set(res) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(res["limits"]) and {"cpu", "memory"} <= set(res["requests"])
    assert w["resources"]["limits"]["memory"] == "4Gi"

    ports = {p["name"]: p["containerPort"] for p in s["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    assert s["args"][s["args"].index("--port") + 1] == "8786"
    assert s["readinessProbe"]["httpGet"]["path"] == "/health"

    service = scheduler["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == {
        "tcp-comm": (8786, "tcp-comm"), "http-dashboard": (8787, "http-dashboard")}


def test_manifest_volume_matches_claim(manifest):
    claim = manifest["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every worker reads the store
    pod = manifest["DaskCluster"]["spec"]["worker"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in _container(pod, "worker")["volumeMounts"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts["data"] == "/data" and set(mounts) <= set(volumes)


def test_dockerfile_installs_dsketch():
    text = (CLUSTER / "kubernetes" / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \. ", text, flags=re.MULTILINE)
    assert "COPY dsketch ./dsketch" in text and "bokeh" in text


def test_kubernetes_driver_fits_through_a_scheduler_address(client, tmp_path, capsys):
    """driver.py --scheduler ADDRESS (the port-forward route) runs the same fit as fit()."""
    driver = _load("kubernetes/driver.py", "dsketch_cluster_k8s_driver")
    rng = np.random.default_rng(8)
    A = rng.standard_normal((1500, 4))
    y = (rng.random(1500) < 1 / (1 + np.exp(-A @ rng.standard_normal(4)))).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    out = str(tmp_path / "r.zarr")
    assert driver.main(["--scheduler", client.scheduler.address, "--data", store, "--out", out,
                        "--sketch", "exact", "--tol", "1e-10"]) == 0
    reference = dsketch.fit(store, "logistic", curvature="exact", solver=dsketch.Solver(tol=1e-10), cluster=client)
    np.testing.assert_array_equal(dsketch.load_result(out).x, reference.x)
    assert driver.main(["--scheduler", "tcp://127.0.0.1:1", "--data", store, "--out", out,
                        "--connect-timeout", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("driver: error:")]
    assert len(err) == 1 and err[0].startswith("driver: error: cannot connect to the Dask scheduler at tcp://127.0.0.1:1")


def test_local_cluster_script_starts_a_cluster(tmp_path):
    """cluster/local-cluster.sh 1 PORT: a scheduler and one worker that dsketch can join."""
    import os
    import signal
    import socket
    import subprocess
    import time

    script = CLUSTER / "local-cluster.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    env = {**os.environ, "DSKETCH_DASHBOARD_PORT": str(ports[1]),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("DSKETCH_TLS_DIR", None)
    log = tmp_path / "cluster.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(script), "1", str(ports[0])], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        from distributed import Client

        address = f"tcp://127.0.0.1:{ports[0]}"
        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout=5, set_as_default=False) as c:
                    c.wait_for_workers(1, timeout=max(1, deadline - time.time()))
                    assert c.dashboard_link == f"http://127.0.0.1:{ports[1]}/status"
                break
            except OSError:
                assert time.time() < deadline, log.read_text()
                time.sleep(0.5)
        assert f"scheduler: {address}  (1 workers); dashboard: http://127.0.0.1:{ports[1]}/status" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's own process group
        proc.wait(timeout=30)
