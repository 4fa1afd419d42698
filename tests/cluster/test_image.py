"""The operator image, built from the Dockerfile by hack/build-image.sh, run the way the chart runs its
pod: `helm install` with the locally built image, then the Deployment's container (image, args, env,
user, read-only root, capabilities, volumes, limits) turned into `podman run` flags. KWOK nodes run no
containers, so the container runs on this machine with the host's network (the API server is on
loopback) and the chart ServiceAccount's token as its credentials.

kopf's service-account login always dials https://kubernetes.default.svc:443, a name only cluster DNS
resolves; so the token is mounted as a kubeconfig (read-only) instead of the in-cluster token files.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster.builders import PrivatePools, falapp
from tests.cluster.helpers import events_for, wait_condition, wait_placement
from tests.cluster.test_chart import CHART, helm, token_kubeconfig, tools  # noqa: F401  (tools: fixture)
from tests.conftest import REPO
from tests.kube import Kubectl, wait_until

BUILD_IMAGE = REPO / "hack" / "build-image.sh"
MANAGER = "falapp-operator-image-proof"
KUBECONFIG_DIR = "/var/run/secrets/falapp-kubeconfig"


def _engine() -> str | None:
    """The container engine hack/build-image.sh picks: podman, else a running Docker."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return None


ENGINE = _engine()
pytestmark = pytest.mark.skipif(ENGINE is None, reason="neither podman nor a running Docker engine: "
                                                       "no image to build or run (CI installs podman)")


@pytest.fixture(scope="module")
def image() -> str:
    """The image reference hack/build-image.sh built (a cached build when nothing changed)."""
    result = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    print("\n".join(line for line in result.stderr.splitlines() if line.startswith("[build-image]")))
    return result.stdout.strip().splitlines()[-1]


def _bytes(quantity: str) -> int:
    units = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * units[unit]


def run_flags(deployment: dict, kubeconfig_dir: Path) -> list[str]:
    """`podman run` flags that run the Deployment's container as its pod spec says. A field this does
    not know how to honour fails the test instead of being skipped, so chart and test cannot drift."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert not pod.get("initContainers"), "init containers not carried over"
    # command, envFrom, workingDir, probes other than liveness... would be run differently here
    carried = {"name", "image", "imagePullPolicy", "args", "env", "ports", "livenessProbe", "startupProbe",
               "securityContext",
               "resources", "volumeMounts", "terminationMessagePath", "terminationMessagePolicy"}
    assert set(container) <= carried, f"container fields not carried over: {set(container) - carried}"
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    known = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "readOnlyRootFilesystem",
             "allowPrivilegeEscalation", "capabilities"}
    assert set(security) <= known, f"securityContext fields not carried over: {set(security) - known}"
    flags = ["--network", "host", "--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("runAsNonRoot"):
        assert security["runAsUser"] != 0
    assert security.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}  # the engine's
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only"] + (["--read-only-tmpfs=false"] if ENGINE == "podman" else [])
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in security.get("capabilities", {}).get("add", []):
        flags += ["--cap-add", cap]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        assert set(mount) <= {"name", "mountPath"}, f"volumeMount not carried over: {mount}"
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "emptyDir"}, f"volume not carried over: {volume}"
        size = volume["emptyDir"].get("sizeLimit")
        flags += ["--tmpfs", mount["mountPath"] + (f":size={_bytes(size)}" if size else "")]
    for var in container.get("env", []):
        if "value" in var:
            flags += ["--env", f"{var['name']}={var['value']}"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}, var
            flags += ["--env", f"{var['name']}={deployment['metadata']['namespace']}"]
    limits = container.get("resources", {}).get("limits", {})
    assert set(limits) <= {"memory", "cpu"}, limits
    if "memory" in limits:
        flags += ["--memory", str(_bytes(limits["memory"]))]
    if "cpu" in limits:
        cpu = limits["cpu"]
        flags += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    # the ServiceAccount's token (automountServiceAccountToken), as a kubeconfig
    assert pod["automountServiceAccountToken"] is True
    flags += ["--volume", f"{kubeconfig_dir}:{KUBECONFIG_DIR}:ro", "--env", f"KUBECONFIG={KUBECONFIG_DIR}/config"]
    # the engine's default limits are above what some machines permit (raising a limit, or nproc above
    # kernel.pid_max, is refused): keep the current ones, within pid_max
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for name, limit, cap in (("nofile", resource.RLIMIT_NOFILE, None), ("nproc", resource.RLIMIT_NPROC, pid_max)):
        soft, hard = (min(v, cap or v) for v in resource.getrlimit(limit))
        if resource.RLIM_INFINITY not in (soft, hard):
            flags += ["--ulimit", f"{name}={soft}:{hard}"]
    if ENGINE == "podman" and shutil.which("runc"):
        flags += ["--runtime", "runc"]  # crun refuses hybrid cgroup layouts
    return [*flags, container["image"], *container["args"]]


def engine(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{ENGINE} {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def test_image_runs_as_the_chart_runs_the_pod(image: str, kubectl: Kubectl, kctl: Kubectl, namespace: str,
                                               crds, tools: Path, running_operator, tmp_path: Path):  # noqa: F811
    release = f"falapp-operator-{namespace}"
    repository, _, tag = image.rpartition(":")
    metrics_port, liveness_port = _free_port(), _free_port()
    # the chart's defaults but the image (its tag defaults to appVersion, the tag the build uses), JSON
    # logs, ports free on this machine (the container shares its network) and a field manager of its own
    helm(tools, "install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false",
         "--set", "catalog.install=false", "--set", f"image.repository={repository}", "--set", "logFormat=json",
         "--set", f"metrics.port={metrics_port}", "--set", f"liveness.port={liveness_port}",
         "--set-json", f'extraEnv=[{{"name":"FALAPP_FIELD_MANAGER","value":"{MANAGER}"}}]',
         kubeconfig=kubectl.kubeconfig)
    name = f"falapp-operator-{uuid.uuid4().hex[:8]}"
    pools = PrivatePools(kubectl)
    try:
        deployment = kctl.get("deployment", release)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image  # helm install used the locally built tag
        labels = json.loads(engine("image", "inspect", image).stdout)[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == tag
        assert labels["org.opencontainers.image.title"] == "falapp-operator"

        credentials = tmp_path / "kubeconfig"
        credentials.mkdir()
        token_kubeconfig(kubectl, namespace, deployment["spec"]["template"]["spec"]["serviceAccountName"],
                         credentials / "config").chmod(0o644)  # the container's user reads it
        credentials.chmod(0o755)
        running_operator.stop()  # the container is the only operator
        engine("run", "--detach", "--name", name, *run_flags(deployment, credentials))

        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probe = container["livenessProbe"]["httpGet"]
        assert container["startupProbe"]["httpGet"] == probe  # the one endpoint, answered once started
        healthz = f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}"
        wait_until(lambda: _get(healthz)[0] == 200, timeout=60, message=f"liveness {healthz}")
        wait_until(lambda: "falapp_" in _get(f"http://127.0.0.1:{ports['metrics']}/metrics")[1], timeout=30,
                   message="metrics")
        # what the process inside is allowed: its user, no capabilities, no new privileges, no writes
        inside = engine("exec", name, "sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/1/status; "
                                                  "touch /probe 2>&1; touch /tmp/probe && echo tmp-writable",
                        check=False).stdout
        assert inside.splitlines()[0] == "65532", inside
        assert re.search(r"CapEff:\s+0+\n", inside) and re.search(r"NoNewPrivs:\s+1", inside), inside
        assert "Read-only file system" in inside and "tmp-writable" in inside, inside

        # a FalApp placed, with a fallback: the preferred type's node takes no pod
        preferred, second = pools.machine_type("full"), pools.machine_type("room")
        full = pools.add_node("full", gpus=8)
        kubectl.run("patch", "node", full, "--subresource=status", "--type=merge",
                    "-p", '{"status":{"allocatable":{"pods":"0"},"capacity":{"pods":"0"}}}')
        pools.add_node("room", gpus=8)
        kctl.apply(falapp("img", [preferred, second], gpus=1, replicas=2, timeout="2s", return_to_preferred=False))
        wait_placement(kctl, "img", {second.lower(): 2}, timeout=90)
        wait_condition(kctl, "falapp", "img", "FallbackActive", "True")
        wait_condition(kctl, "falapp", "img", "Ready", "True")
        wait_until(lambda: [e for e in events_for(kctl, "img", "FellBack") if e["source"]["component"] == MANAGER],
                   timeout=30, message="FellBack event from the container")

        out = engine("logs", name)
        logs = out.stdout + out.stderr
        records = [json.loads(line) for line in logs.splitlines()]  # every line one JSON object
        assert all(isinstance(r, dict) and r.get("message") for r in records), logs[-4000:]
        # no line twice: the same message (timings aside) in the same second
        seen = Counter((r["timestamp"][:19], re.sub(r"[\d.]+s ago", "", r["message"])) for r in records)
        assert [k for k, n in seen.items() if n > 1] == [], logs[-4000:]
        assert any("FellBack" in r["message"] for r in records), logs[-4000:]
        assert not [r for r in records if r.get("severity") in ("error", "critical")], logs[-4000:]
    finally:
        if ENGINE is not None:
            log = engine("logs", name, check=False)
            print(log.stdout[-3000:], log.stderr[-3000:])
            engine("stop", "-t", "10", name, check=False)
            engine("rm", "--force", name, check=False)
        kctl.run("delete", "falapp", "img", "--ignore-not-found", "--wait=false", check=False)
        pools.cleanup()
        helm(tools, "uninstall", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig, check=False)
        if running_operator.proc is None or running_operator.proc.poll() is not None:
            running_operator.start()
