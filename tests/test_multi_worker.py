"""vizoo.distribute.train under MultiWorkerMirroredStrategy, with real worker processes on 127.0.0.1.

One 2-worker job (tests/multi_worker_job.py: a tiny VAE on the digits, 3 epochs) is started once
per module and checked for several properties: worker 1 is killed with SIGKILL in the middle of
epoch 2, the chief then fails within the peer timeout naming worker 1's address, both are
restarted (as the two tasks of a simulated Slurm step: the SLURM_* variables srun sets, read by
SlurmClusterResolver) and the job completes from the backup of epoch 1. A third process, whose
peer's port nobody listens on, waits beside them and must fail within the timeout. The finished
job's weights are compared with the reference: the same loop, uninterrupted, in one process with
two logical CPUs (MirroredStrategy: two replicas that split every global batch as the two workers
do and draw the same noise). Every process is started here and killed in a `finally`, with
bounded waits, so no worker outlives the module, whatever fails.

The workers run in a network namespace of their own whose one interface is the loopback:
TensorFlow's gRPC server listens on every interface (0.0.0.0 is hard-coded in its
grpc_server_lib.cc) whatever address TF_CONFIG gives it, so 127.0.0.1 in TF_CONFIG alone would
not keep the job's ports off the network. Where a namespace cannot be made (it needs
CAP_SYS_ADMIN), the module is skipped rather than open ports.
"""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.multi_worker_job import EPOCHS, TIMEOUT_SECONDS

WAIT_SECONDS = 240  # bound on any one phase of the job (the machine may be loaded)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent():
    # In the child, before exec: SIGKILL it if the test process dies (even killed itself), so that no
    # worker is left behind (Linux prctl PR_SET_PDEATHSIG).
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


CLONE_NEWNET = 0x40000000
# The namespace's holder: a new network namespace, its loopback brought up (SIOCGIFFLAGS / SIOCSIFFLAGS,
# IFF_UP), then it waits until the test closes its stdin.
HOLDER = """
import ctypes, fcntl, socket, struct, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
if libc.unshare(0x40000000) != 0:
    print("unshare failed: errno", ctypes.get_errno(), flush=True)
    sys.exit(1)
with socket.socket() as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))
print("ready", flush=True)
sys.stdin.read()
"""


class LoopbackNamespace:
    """A network namespace whose only interface is lo, held by a process; children join it before exec."""

    def __init__(self):
        self.holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, preexec_fn=_die_with_parent)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            self.close()
            pytest.skip(f"no network namespace for the workers ({line or 'no answer'}; it needs CAP_SYS_ADMIN): "
                        "TensorFlow's gRPC server would listen on every interface")
        self.path = f"/proc/{self.holder.pid}/ns/net"

    def enter(self):
        # In a child, before exec (one thread: setns of a network namespace is allowed).
        import ctypes

        fd = os.open(self.path, os.O_RDONLY)
        try:
            if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                os._exit(97)  # never run a worker outside the namespace
        finally:
            os.close(fd)

    def close(self):
        with contextlib.suppress(OSError):
            self.holder.stdin.close()
        try:
            self.holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait()


class Processes:
    """The processes a test starts; `stop_all` kills those still running (SIGKILL, by pid)."""

    def __init__(self, log_dir, namespace):
        self.log_dir = log_dir
        self.namespace = namespace
        self.running = []

    def _prepare_child(self):
        _die_with_parent()
        self.namespace.enter()

    def start(self, name, role, out_dir, tf_config=None, extra=(), env_vars=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO_ROOT)
        env.pop("TF_CONFIG", None)
        # A non-chief's temporary copies (vizoo.distribute.worker_path) under the test's directory: the
        # killed worker cannot remove its own.
        env["TMPDIR"] = self.log_dir
        env.update(env_vars or {})
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
        log = open(os.path.join(self.log_dir, f"{name}.log"), "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.multi_worker_job", role, str(out_dir), *extra],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._prepare_child,
        )
        process.log_path, process.log = log.name, log
        self.running.append(process)
        return process

    @staticmethod
    def output(process):
        process.log.flush()
        with open(process.log_path) as f:
            return f.read()

    def wait(self, process, seconds=WAIT_SECONDS):
        try:
            return process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"process did not finish within {seconds} s; its output:\n{self.output(process)[-3000:]}")

    def stop_all(self):
        for process in self.running:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.log.close()


def wait_for_file(path, processes, seconds=WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a process ended (status {process.returncode}) before {path} appeared:\n"
                            f"{Processes.output(process)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {seconds} s")
        time.sleep(0.1)


def consecutive_free_ports():
    """A port p with p + 1 free too (Slurm's resolver numbers a node's workers from a base port)."""
    for _ in range(100):
        (port,) = free_ports(1)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    pytest.fail("no two consecutive free ports")


def slurm_environment(port, index):
    # What srun sets for task `index` of a 2-task step on one node (SlurmClusterResolver reads these).
    return {"SLURM_PROCID": str(index), "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "localhost",
            "SLURM_STEP_TASKS_PER_NODE": "2"}


def tf_config(ports, index):
    return {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Run the killed-and-restarted 2-worker job and the reference; return what the tests check."""
    root = tmp_path_factory.mktemp("multi_worker")
    job_dir, reference_dir = root / "job", root / "reference"
    job_dir.mkdir()
    reference_dir.mkdir()
    namespace = LoopbackNamespace()
    processes = Processes(str(root), namespace)
    try:
        reference = processes.start("reference", "reference", reference_dir)
        # A worker whose peer (worker 0, the coordination leader) is at a port nobody listens on; it waits
        # for it idle, beside the job.
        lonely_ports = free_ports(2)
        lonely = processes.start("unreachable", "unreachable", root, tf_config(lonely_ports, 1))
        ports = free_ports(2)
        chief = processes.start("chief", "worker", job_dir, tf_config(ports, 0))
        worker = processes.start("worker", "worker", job_dir, tf_config(ports, 1), ["--stall-at", "1:8"])
        wait_for_file(str(job_dir / "stalled-1"), [chief, worker])
        # Both workers listen now, in their namespace: from this machine's network their ports are closed.
        reachable = []
        for port in ports:
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.settimeout(2)
                probe.connect(("127.0.0.1", port))
                reachable.append(port)
        worker.send_signal(signal.SIGKILL)  # mid-epoch 2 (0-based 1), after the backup of epoch 1
        worker.wait()
        lost_at = time.monotonic()
        chief_status = processes.wait(chief)
        chief_seconds = time.monotonic() - lost_at
        chief_output = processes.output(chief)
        history_before = (job_dir / "run" / "history.csv").read_text()
        # Restarted as Slurm tasks (SlurmClusterResolver instead of TF_CONFIG): the backup does not depend on
        # how the workers found each other.
        slurm_port = consecutive_free_ports()
        restarted = [
            processes.start(f"restarted-{i}", "worker", job_dir, extra=["--slurm-port", str(slurm_port)],
                            env_vars=slurm_environment(slurm_port, i))
            for i in range(2)
        ]
        statuses = [processes.wait(process) for process in restarted]
        assert statuses == [0, 0], "\n".join(processes.output(p)[-3000:] for p in restarted)
        assert processes.wait(reference) == 0, processes.output(reference)[-3000:]
        assert processes.wait(lonely) == 0, processes.output(lonely)[-3000:]
        return {
            "chief_status": chief_status,
            "chief_seconds": chief_seconds,
            "chief_output": chief_output,
            "lost_address": f"127.0.0.1:{ports[1]}",
            "history_before": history_before,
            "job_dir": job_dir,
            "results": [json.loads((job_dir / f"result-{i}.json").read_text()) for i in range(2)],
            "reference": json.loads((reference_dir / "result-reference.json").read_text()),
            "reference_history": (reference_dir / "run" / "history.csv").read_text(),
            "unreachable": json.loads(processes.output(lonely).strip().splitlines()[-1]),
            "unreachable_address": f"127.0.0.1:{lonely_ports[0]}",
            "reachable_from_outside": reachable,
        }
    finally:
        processes.stop_all()
        namespace.close()


def history_rows(text):
    return list(csv.DictReader(text.splitlines()))


@pytest.mark.slow  # three worker processes and a reference process
def test_the_workers_ports_are_not_reachable_from_outside_their_namespace(job):
    assert job["reachable_from_outside"] == []


@pytest.mark.slow
def test_a_lost_worker_stops_its_peer_within_the_timeout_naming_its_address(job):
    assert job["chief_status"] != 0
    assert "ConnectionError" in job["chief_output"] and "a worker was lost or unreachable" in job["chief_output"]
    assert job["lost_address"] in job["chief_output"]
    # heartbeat / collective timeout, plus the shutdown barrier's; generous for a loaded machine
    assert job["chief_seconds"] < 6 * TIMEOUT_SECONDS + 30


@pytest.mark.slow
def test_the_restarted_job_completes_with_the_uninterrupted_history(job):
    before = history_rows(job["history_before"])
    assert [row["epoch"] for row in before] == ["0"]  # the chief had finished epoch 1 of 3 when the peer died
    rows = history_rows((job["job_dir"] / "run" / "history.csv").read_text())
    reference = history_rows(job["reference_history"])
    assert [row["epoch"] for row in rows] == [str(e) for e in range(EPOCHS)]
    assert [row["kl_weight"] for row in rows] == ["0.0", "0.5", "1.0"]  # the KL warm-up continued
    for row, expected in zip(rows, reference):
        for key in ("loss", "val_loss"):  # the reported bound: the single-process value
            assert abs(float(row[key]) - float(expected[key])) < 1e-4 * abs(float(expected[key])), key
    # only the chief wrote the run's files (the other's went to its temporary directories); the backup
    # stays until finish_run
    run_dir = job["job_dir"] / "run"
    assert sorted(os.listdir(run_dir)) == ["backup", "best.keras", "history.csv", "model.keras", "tensorboard"]
    assert any(name.startswith("events") for _, _, names in os.walk(run_dir / "tensorboard") for name in names)


@pytest.mark.slow
def test_workers_end_with_identical_weights_equal_to_the_single_process_run(job):
    first, second = job["results"]
    assert first["replicas"] == second["replicas"] == 2
    for a, b in zip(first["weights"], second["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))  # mirrored: the same update on both
    for a, b in zip(first["weights"], job["reference"]["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)
    assert first["seed_states"] == job["reference"]["seed_states"]  # the noise continued from the backup


@pytest.mark.slow
def test_the_bound_under_two_workers_is_the_one_device_number(job):
    # pPCA with q = the exact posterior: the bound is -log p(x) whatever the noise; 63 examples in
    # batches of 32 make the last global batch split 15 / 16 between the workers.
    for result in job["results"] + [job["reference"]]:
        assert abs(result["ppca_bound"] - result["ppca_exact"]) < 1e-5


@pytest.mark.slow
def test_a_worker_that_cannot_reach_its_peers_fails_within_the_timeout_naming_them(job):
    result = job["unreachable"]
    assert f"worker 0 at {job['unreachable_address']}" in result["error"]
    assert "could not reach the other workers within 4 s" in result["error"]
    assert result["seconds"] < 3 * TIMEOUT_SECONDS + 10  # registration timeout; generous for a loaded machine


@pytest.mark.slow
def test_two_replicas_refuse_xla_and_batches_smaller_than_the_replicas(job):
    refusals = job["reference"]["refusals"]
    assert "Received: jit_compile=True, replicas=2" in refusals["jit"]
    # Training data is not read ahead (that would move a random pipeline on by an epoch): a batch size fixed in its
    # spec is checked before training, any other in the step that meets it.
    assert "every batch of train_data needs at least one example per replica (2 replicas), but one has 1: batch it " \
        "with drop_remainder=True" in refusals["tiny_static"]
    assert "every batch of train_data needs at least one example per replica (2 replicas), but one has fewer than 2 " \
        "(epoch 1, batches 2-2; the last finished epoch's backup stays): batch it with drop_remainder=True" \
        in refusals["tiny_batch"]
    assert "every batch of validation_data needs at least one example per replica" in refusals["tiny_validation"]
