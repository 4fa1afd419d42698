"""What the benchmarks share: the local cluster (kubectl, bulk creates, raw watches), fake GPU nodes and
MachineTypes (built by tests/builders.py, as the tests build them), the operator as a child process
(metrics, RSS, CPU), and the control plane's CPU use.

Bulk creates and watches go straight to the API server with the async client and plain JSON (no
models), so a benchmark measures the operator and the control plane, not kubectl or model parsing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client, config

from falapp_operator.api import FalAppSpec, MachineType
from falapp_operator.placement.eligibility import type_option
from falapp_operator.reconcile.children import AppRef, deployment, pod_template

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py`: the objects come from the tests' builders
    sys.path.insert(0, str(REPO))

# the scripts take these from here too
from tests.builders import APP_LABEL as APP_LABEL  # noqa: E402
from tests.builders import POOL_LABEL, falapp, fallback, pool_node  # noqa: E402
from tests.builders import TYPE_LABEL as TYPE_LABEL  # noqa: E402
from tests.builders import pool_machine_type as pool_machine_type  # noqa: E402

CLUSTER = REPO / "hack" / "cluster.sh"
DOCS = REPO / "docs"
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")
PLURALS = {"Node": "nodes", "Namespace": "namespaces", "Deployment": "deployments", "ReplicaSet": "replicasets",
           "Pod": "pods", "FalApp": "falapps", "MachineType": "machinetypes"}
RETRIED = {429, 500, 502, 503, 504}


def sh(*args: str, input: str | None = None) -> str:
    done = subprocess.run(args, input=input, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def load() -> str:
    """The machine's load averages (1, 5, 15 min), as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class WallClock:
    """Whether the wall clock stepped against the monotonic one since this was made (the clock set, or a
    pause the monotonic clock did not run through): the benchmarks time events by the wall clock (the API
    server's timestamps too), so a step inflates or shrinks the times measured across it. Slewing moves
    both clocks alike and is not seen; nor is a pause the monotonic clock runs through, nor a step undone
    before `stepped` is asked."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def stepped(self) -> float:
        """Seconds the wall clock moved beyond the monotonic one (0 when it did not step)."""
        return round(time.time() - time.monotonic() - self._offset, 2)


CLOCK_STEP_LIMIT = 0.5  # seconds of step beyond which a round's times are not to be trusted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_dir() -> Path:
    """The running rig's state directory (FALAPP_STATE, as hack/cluster.sh reads it)."""
    return Path(os.environ.get("FALAPP_STATE") or REPO / ".state" / "cluster")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far, whatever the process (/proc/stat):
    with the components' own, it tells a run that had the machine to itself from one that shared it."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def machine_busy(spent: float, wall: float) -> float:
    """Percent of the machine's cores busy over `wall` seconds in which they spent `spent` CPU seconds."""
    return round(100 * spent / (wall * (os.cpu_count() or 1)), 1)


async def quiet_machine(below_percent: float = 25.0, over_s: float = 5.0, within: float = 180.0) -> str:
    """Wait until the machine's cores were less than `below_percent` busy over the last `over_s` seconds
    (the work of setting up a run, e.g. thousands of nodes made Ready, done): a run does not share the
    machine with what came before it. Gives up after `within` seconds; says which it was, to print."""
    started = time.monotonic()
    readings = [(started, machine_cpu_seconds())]
    while True:
        await asyncio.sleep(1)
        now = time.monotonic()
        readings.append((now, machine_cpu_seconds()))
        while len(readings) > 2 and now - readings[1][0] >= over_s:
            readings.pop(0)
        (t0, cpu0), (t1, cpu1) = readings[0], readings[-1]
        busy = machine_busy(cpu1 - cpu0, t1 - t0)
        if t1 - t0 >= over_s and busy < below_percent:
            return f"machine quiet after {now - started:.0f}s"
        if now - started > within:
            return f"machine NOT quiet after {now - started:.0f}s ({busy:.0f}% busy): the run shares it"


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


class ControlPlaneCPU:
    """CPU seconds the rig's components (API server, etcd, controller manager, scheduler, KWOK) spend
    between two readings: where the time of a run goes outside the operator."""

    def __init__(self):
        pids = state_dir() / "pids"
        self.pids = {c: int((pids / f"{c}.pid").read_text()) for c in COMPONENTS if (pids / f"{c}.pid").exists()}

    def read(self) -> dict[str, float]:
        return {c: cpu_seconds(pid) for c, pid in self.pids.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {c: round(after[c] - before[c], 1) for c in before if c in after}


# --- objects -------------------------------------------------------------------------------------------


def fake_node(name: str, pool: str, gpus: int = 8, pods: int = 110) -> dict:
    """A KWOK node of `pool` with `gpus` GPUs (tainted, as GPU nodes are) and room for `pods` pods, and
    CPU and memory to spare."""
    return pool_node(name, pool, gpus=gpus, pods=pods, cpu="256", memory="2Ti")


def one_gpu_app(name: str, namespace: str, types: list[str], replicas: int, timeout_s: float | None = None) -> dict:
    """A one-GPU FalApp preferring `types` in order; `timeout_s`: its unschedulableTimeout, never returning."""
    return falapp(name, namespace=namespace, machineTypes=types, numGpus=1, replicas=replicas,
                  fallback=None if timeout_s is None else fallback(f"{timeout_s:g}s", return_to_preferred=False))


BASELINE_APP_LABEL = "bench/app"  # the baseline's pods: the operator's, under a label it does not read


def plain_deployment(name: str, namespace: str, pool: str, replicas: int) -> dict:
    """What the scheduler alone places: the Deployment the operator makes for a one-GPU app on `pool`'s
    type (pool_machine_type), built by the operator's code in this checkout (with --operator-rev the
    operator run's may differ), so its pods are the same pods (requests, node selector, toleration,
    labels, security settings), but made by hand: no FalApp, no owner. The app's label becomes
    BASELINE_APP_LABEL=`name` (a running operator would take them for an app's pods; the hash
    annotations, computed before, no longer describe the object: nothing reads them). TYPE_LABEL=`pool`
    stays."""
    machine_type = MachineType.model_validate(pool_machine_type(pool))
    spec = FalAppSpec.model_validate(one_gpu_app(name, namespace, [machine_type.display_name], replicas)["spec"])
    option = type_option(spec, machine_type)
    app = AppRef(name=name, namespace=namespace, uid="")
    body = deployment(app, option, pod_template(app, spec, option, machine_type), replicas)
    del body["metadata"]["ownerReferences"]
    for labels in (body["metadata"]["labels"], body["spec"]["selector"]["matchLabels"],
                   body["spec"]["template"]["metadata"]["labels"]):
        labels[BASELINE_APP_LABEL] = labels.pop(APP_LABEL)
    return body


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def app_ready(app: dict) -> bool:
    return pod_ready(app)  # a FalApp's Ready condition has the same shape


# --- the cluster ---------------------------------------------------------------------------------------


class Cluster:
    """The rig hack/cluster.sh runs (FALAPP_STATE / FALAPP_API_PORT select it): kubectl, and an async
    client for bulk creates, deletes and watches."""

    def __init__(self):
        self.kubeconfig = sh(str(CLUSTER), "kubeconfig").strip()
        self.kubectl = [str(Path(sh(str(CLUSTER), "bindir").strip()) / "kubectl"), "--kubeconfig", self.kubeconfig]
        self.api: client.ApiClient | None = None

    def k(self, *args: str, input: str | None = None) -> str:
        return sh(*self.kubectl, *args, input=input)

    def install_crds(self) -> None:
        """The project's CRDs, as the repository has them (the operator under test expects its own)."""
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.k("wait", "--for=condition=Established", "--timeout=60s", "crd/falapps.fal.ai", "crd/machinetypes.fal.ai")

    def apply(self, objects: list[dict]) -> None:
        """One server-side `kubectl apply` of a multi-document stream (small setups)."""
        self.k("apply", "--server-side", "-f", "-", input="\n".join(json.dumps(o) for o in objects))

    async def __aenter__(self) -> Cluster:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api = client.ApiClient(cfg)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.api.close()

    @staticmethod
    def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}" if namespace else f"{prefix}/{PLURALS[kind]}"
        return f"{path}/{name}" if name else path

    async def request(self, method: str, path: str, body: dict | None = None, query: Iterable = (),
                      ok: Iterable[int] = (), content_type: str = "application/json") -> dict:
        """One API call with plain JSON (a PATCH says which kind in `content_type`); retries throttling,
        server errors and dropped connections; raises on any other refusal unless its status is in `ok`."""
        for attempt in range(8):
            try:
                response = await self.api.call_api(path, method, query_params=list(query), body=body,
                                                   header_params={"Content-Type": content_type},
                                                   _preload_content=False, _request_timeout=120)
                try:
                    data = await response.read()
                    if response.status < 300 or response.status in ok:
                        return json.loads(data) if data else {}
                    if response.status not in RETRIED:
                        raise RuntimeError(f"{method} {path}: {response.status} {data[:300].decode(errors='replace')}")
                finally:
                    response.release()
            except (aiohttp.ClientError, TimeoutError):
                if attempt == 7:
                    raise
            await asyncio.sleep(0.2 * 2 ** attempt)
        raise RuntimeError(f"{method} {path}: still refused after 8 tries")

    async def create(self, objects: list[dict], concurrency: int = 32) -> None:
        """POST every object, `concurrency` at a time (the API server takes them in parallel; kubectl
        sends one after another)."""
        limit = asyncio.Semaphore(concurrency)

        async def one(obj: dict) -> None:
            async with limit:
                meta = obj["metadata"]
                await self.request("POST", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj)

        await asyncio.gather(*(one(o) for o in objects))

    async def wait_nodes_ready(self, selector: str, count: int, within: float) -> None:
        """Until `count` nodes the selector picks are Ready: one LIST a second (`kubectl wait` watches
        the nodes one after another: minutes for thousands)."""
        started = time.monotonic()
        while True:
            nodes = (await self.request("GET", self.path("v1", "Node"), query=[("labelSelector", selector)]))["items"]
            if sum(pod_ready(n) for n in nodes) >= count:  # a node's Ready condition has a pod's shape
                return
            if time.monotonic() - started > within:
                raise TimeoutError(f"{count} nodes ({selector}) Ready: not reached in {within:.0f}s")
            await asyncio.sleep(1)

    async def delete_all(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "",
                         grace: int | None = None, concurrency: int = 32) -> None:
        """DELETE every object the selector picks, `concurrency` at a time (the API server's own
        deletecollection deletes one after another)."""
        query = [("labelSelector", selector)] if selector else []
        names = [o["metadata"]["name"] for o in (await self.request("GET", self.path(api_version, kind, namespace),
                                                                    query=query))["items"]]
        options = [("gracePeriodSeconds", str(grace))] if grace is not None else []
        limit = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with limit:
                await self.request("DELETE", self.path(api_version, kind, namespace, name), query=options, ok={404})

        await asyncio.gather(*(one(n) for n in names))

    async def remove_pools(self, namespace: str, pools: Iterable[str]) -> None:
        """Remove a run: its namespace (waiting until its pods are gone), the pools' nodes and MachineTypes."""
        pools = list(pools)
        self.k("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        await self.wait_gone("v1", "Pod", namespace)
        self.k("delete", "nodes", "-l", f"{POOL_LABEL} in ({','.join(pools)})", "--wait=false")
        self.k("delete", "machinetype", *pools, "--wait=false", "--ignore-not-found")

    async def count(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "") -> int:
        query = [("labelSelector", selector)] if selector else []
        return len((await self.request("GET", self.path(api_version, kind, namespace), query=query))["items"])

    async def wait_gone(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "",
                        within: float = 600) -> None:
        deadline = time.monotonic() + within
        while await self.count(api_version, kind, namespace, selector):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} {namespace or ''} {selector} still present after {within:.0f}s")
            await asyncio.sleep(1)

    async def watch(self, api_version: str, kind: str, namespace: str | None,
                    on_event: Callable[[str, dict, float], None], stop: asyncio.Event) -> None:
        """LIST then WATCH, plain JSON: on_event(type, object, time.time()) for every listed object
        ("LISTED") and every event, until `stop` is set. A watch the server ends continues from its last
        version; an expired version (410) lists again."""
        path = self.path(api_version, kind, namespace)
        version = ""
        while not stop.is_set():
            if not version:
                listed = await self.request("GET", path)
                now = time.time()
                for item in listed["items"]:
                    on_event("LISTED", item, now)
                version = listed["metadata"]["resourceVersion"]
            query = [("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                     ("timeoutSeconds", "60")]
            response = await self.api.call_api(path, "GET", query_params=query, _preload_content=False,
                                               _request_timeout=aiohttp.ClientTimeout(sock_read=90))
            try:
                if response.status >= 300:
                    raise RuntimeError(f"watch {path}: {response.status} {(await response.read())[:300]}")
                buffer = b""
                async for chunk in response.content.iter_any():
                    now = time.time()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            if obj.get("code") != 410:
                                raise RuntimeError(f"watch {path}: {obj.get('message')}")
                            version = ""
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], obj, now)
                    if stop.is_set() or not version:
                        break
            finally:
                response.release()


async def until(condition: Callable[[], bool], within: float, what: str, tasks: Iterable[asyncio.Task] = ()) -> float:
    """Wait until `condition()` holds (checked every 0.1 s); the time it took. Surfaces a failed watch task
    at once; raises TimeoutError naming `what` after `within` seconds."""
    started = time.monotonic()
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError(f"a watch ended while waiting for {what}")
        if time.monotonic() - started > within:
            raise TimeoutError(f"{what}: not reached in {within:.0f}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# --- the operator --------------------------------------------------------------------------------------


def operator_source(rev: str | None) -> tuple[Path | None, str]:
    """Where the operator's package comes from: None (this checkout's working tree) or a copy of
    operator/ at git revision `rev`, so a benchmark measures a commit whatever the working tree holds;
    and a description of it."""
    if not rev:
        dirty = sh("git", "-C", str(REPO), "status", "--porcelain", "--", "operator").strip()
        head = sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD").strip()
        return None, f"working tree at {head}" + (" with uncommitted changes in operator/" if dirty else "")
    commit = sh("git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}").strip()
    target = state_dir() / "bench-src" / commit
    if not (target / "operator").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "operator"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    subject = sh("git", "-C", str(REPO), "log", "-1", "--format=%s", commit).strip()
    return target / "operator", f"{commit} ({subject[:70]})"


def metric_samples(text: str, name: str) -> dict[str, float]:
    """A metric's samples in Prometheus text `text`, by their label set as written ("" without labels)."""
    return {labels: float(value)
            for labels, value in re.findall(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.M)}


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of a metric's samples carrying `labels` in Prometheus text `text`; None when it has none."""
    total, found = 0.0, False
    for sample_labels, value in metric_samples(text, name).items():
        have = dict(re.findall(r'(\w+)="([^"]*)"', sample_labels))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + value, True
    return total if found else None


class Operator:
    """`falapp-operator run` as a child process against the rig, with its metrics on a free loopback port;
    `rev`: run operator/ as of that git revision (see operator_source)."""

    def __init__(self, kubeconfig: str, name: str, rev: str | None = None):
        self.kubeconfig, self.port = kubeconfig, free_port()
        self.source, self.revision = operator_source(rev)
        self.log_path = state_dir() / "logs" / f"{name}-operator.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "FALAPP_METRICS_PORT": str(self.port)}
        if self.source:  # ahead of the checkout the venv's editable install points at
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source), env.get("PYTHONPATH")]))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            # BENCH_PROFILE=FILE: the operator runs under cProfile, its stats written to FILE when it stops
            profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
            self.proc = subprocess.Popen([sys.executable, *profile, "-m", "falapp_operator", "run"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.metric("falapp_leader") != 1:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.proc.returncode}); see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not start in {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.3)
        time.sleep(1)  # its watches list what there is

    def metrics(self) -> str:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        except OSError:
            return ""

    def metric(self, name: str, **labels: str) -> float | None:
        return metric_value(self.metrics(), name, **labels)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class ReadyPods:
    """Ready pods (not being deleted) by the value of one of their labels, kept from a pod watch (`observe`
    is its on_event), with the count of each value, and of all, over time: [(time, count), ...]."""

    def __init__(self, label: str):
        self.label = label
        self.ready: dict[str, str] = {}  # pod name -> its label's value, Ready pods only
        self.counts: Counter[str] = Counter()
        self.series: dict[str, list[tuple[float, int]]] = {}
        self.total_series: list[tuple[float, int]] = []

    def observe(self, event: str, pod: dict, now: float) -> None:
        meta = pod["metadata"]
        before = self.ready.pop(meta["name"], None)
        if event != "DELETED" and not meta.get("deletionTimestamp") and pod_ready(pod):
            self.ready[meta["name"]] = (meta.get("labels") or {}).get(self.label, "")
        after = self.ready.get(meta["name"])
        if before == after:
            return
        for value, change in ((before, -1), (after, 1)):
            if value is not None:
                self.counts[value] += change
                self.series.setdefault(value, []).append((now, self.counts[value]))
        if (before is None) != (after is None):
            self.total_series.append((now, len(self.ready)))

    def total(self) -> int:
        return len(self.ready)


def pyplot():
    """matplotlib's pyplot drawing to files, or None (with a word) where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[demo]'): no picture")
        return None
    return plt


def save_plot(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str, **legend) -> None:
    """Label the axes, grid and legend (`legend`: where, default lower right), write the PNG, and say so."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(**{"loc": "lower right", "fontsize": 8, **legend})
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
