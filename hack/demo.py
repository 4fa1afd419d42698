#!/usr/bin/env python3
"""The main job in one command: a local cluster with a simulated GPU fleet, the CRDs and catalogue,
the operator and the examples. Then GPU-H100 capacity is taken away and given back, so you can watch
replicas fall back and return, with a live table of where each replica runs and why.

A second phase shows a scalable pool: a second local cluster (hack/fleets/autoscaled.yaml, with
Karpenter) whose H100 nodes come from a NodePool that starts empty. An app preferring GPU-H100 waits
for Karpenter's new nodes instead of falling back; scaled past the pool's limit, it falls back at once.

Writes a timeline of the first phase to docs/demo-timeline.png. The first cluster keeps running
afterwards (`hack/cluster.sh down` stops it); the second one is stopped at the end (kept with --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rigs import autoscaled_env  # hack/ is this script's directory

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "hack" / "cluster.sh"
NAMESPACE = "falapp-demo"
SHOWCASE = {
    "apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "metadata": {"name": "showcase"},
    "spec": {"image": "registry.example.com/llm-server:3.1", "machineTypes": ["GPU-H100", "GPU-H200", "GPU-A100"],
             "numGpus": 8, "replicas": 2, "fallback": {"unschedulableTimeout": "5s"}},
}
TAKEN_TYPE, TAKEN_PRODUCT = "GPU-H100", "NVIDIA-H100-80GB-HBM3"
# the scalable-pool phase: the autoscaled fleet's H100 NodePool (no node at start, at most 2 nodes of 8 GPUs)
AUTOSCALED_FLEET = REPO / "hack" / "fleets" / "autoscaled.yaml"
POOL, POOL_LIMIT, POOL_LABEL = "h100", 2, "karpenter.sh/nodepool"
FALLBACK_TYPE = "GPU-A100"
SCALER = {
    "apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "metadata": {"name": "scaler"},
    # unschedulableTimeout (5s) is shorter than a new node takes: only Karpenter's Nominated keeps it waiting
    "spec": {"image": "registry.example.com/llm-server:3.1", "machineTypes": [TAKEN_TYPE, FALLBACK_TYPE],
             "numGpus": 8, "replicas": POOL_LIMIT,
             "fallback": {"unschedulableTimeout": "5s", "scaleUpTimeout": "3m"}},
}


def env_prefix(env: dict[str, str]) -> str:
    """The cluster variables a command needs to reach the cluster of `env` (empty for the default one)."""
    names = ("FALAPP_STATE", "FALAPP_API_PORT", "FALAPP_ETCD_PORT")
    if all(env.get(n) == os.environ.get(n) for n in names):
        return ""
    return "".join(f"{n}={env[n]} " for n in names if env.get(n))


def sh(*args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, input=input, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class Demo:
    def __init__(self, live: bool, keep: bool = False, env: dict[str, str] | None = None,
                 started: float | None = None):
        self.live, self.keep = live, keep
        self.env = env if env is not None else dict(os.environ)
        self.state = Path(self.env.get("FALAPP_STATE") or REPO / ".state" / "cluster")
        self.kubectl = str(Path(sh(str(CLUSTER), "bindir", env=self.env).strip()) / "kubectl")
        self.kubeconfig = sh(str(CLUSTER), "kubeconfig", env=self.env).strip()
        self.started = started if started is not None else time.monotonic()
        self.samples: list[tuple[float, str, dict[str, int]]] = []  # (t, app, ready per type)
        self.phases: list[tuple[float, str]] = []
        self.operator: subprocess.Popen | None = None

    def k(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return sh(self.kubectl, "--kubeconfig", self.kubeconfig, *args, input=input, check=check)

    def kjson(self, *args: str) -> dict:
        return json.loads(self.k(*args, "-o", "json"))

    def phase(self, text: str) -> None:
        t = time.monotonic() - self.started
        self.phases.append((t, text))
        print(f"\n== {t:5.1f}s  {text}", flush=True)

    def start_operator(self) -> None:
        path = self.state / "demo-operator.log"
        self.phase(f"starting the operator (logs: {path})")
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "w")
        env = {**self.env, "KUBECONFIG": self.kubeconfig, "FALAPP_METRICS_PORT": "0"}
        self.operator = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            self.operator.wait(15)

    # --- set-up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.phase("starting the local cluster (the first run builds it: ~13 min)")
        subprocess.run([str(CLUSTER), "up"], check=True, env=self.env)
        self.install()
        for node in self.taken_nodes():  # a previous demo may have left them cordoned
            self.k("uncordon", node)
        self.fresh_namespace()
        self.start_operator()
        self.phase("applying the examples and a 2 x 8-GPU showcase app")
        import yaml  # the demo runs from the project's venv

        apps = [yaml.safe_load(f.read_text()) for f in sorted((REPO / "examples").glob("*.yaml"))] + [SHOWCASE]
        for app in apps:  # short timeouts, so the story fits in a minute
            app["spec"]["fallback"] = {**app["spec"].get("fallback", {}), "unschedulableTimeout": "5s"}
        self.k("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(apps))

    def install(self) -> None:
        """The CRDs and the default catalogue."""
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.k("wait", "--for=condition=Established", "crd/falapps.fal.ai", "crd/machinetypes.fal.ai")
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "catalog" / "default.yaml"))

    def fresh_namespace(self) -> None:
        self.k("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s")
        self.k("create", "namespace", NAMESPACE)

    def taken_nodes(self) -> list[str]:
        nodes = self.kjson("get", "nodes", "-l", f"nvidia.com/gpu.product={TAKEN_PRODUCT}")["items"]
        return [n["metadata"]["name"] for n in nodes]

    # --- watching --------------------------------------------------------------------------------
    def snapshot(self) -> tuple[list[dict], list[dict]]:
        apps = self.kjson("get", "falapps", "-n", NAMESPACE)["items"]
        pods = self.kjson("get", "pods", "-n", NAMESPACE, "-l", "fal.ai/app")["items"]
        return apps, [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def record(self, apps: list[dict], pods: list[dict]) -> None:
        t = time.monotonic() - self.started
        for app in apps:
            name = app["metadata"]["name"]
            ready: dict[str, int] = {}
            for pod in pods:
                if pod["metadata"]["labels"].get("fal.ai/app") == name and _ready(pod):
                    kind = pod["metadata"]["labels"]["fal.ai/machine-type"].upper()
                    ready[kind] = ready.get(kind, 0) + 1
            self.samples.append((t, name, ready))

    def show(self, apps: list[dict], pods: list[dict]) -> None:
        lines = [f"t={time.monotonic() - self.started:5.1f}s  {self.phases[-1][1]}", "",
                 f"{'APP':<10} {'READY':<7} {'MACHINES':<28} WHY"]
        for app in sorted(apps, key=lambda a: a["metadata"]["name"]):
            status = app.get("status") or {}
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            fallback = next((c for c in status.get("conditions", []) if c["type"] == "FallbackActive"), {})
            why = fallback.get("message") if fallback.get("status") == "True" else ready.get("reason", "")
            lines.append(f"{app['metadata']['name']:<10} {status.get('readyReplicas', 0)}/{app['spec']['replicas']:<5} "
                         f"{status.get('machines', ''):<28} {(why or '')[:70]}")
        width = max([12] + [len(p["spec"].get("nodeName", "")) for p in pods])  # Karpenter's names are long
        lines += ["", f"{'REPLICA':<40} {'TYPE':<12} {'NODE':<{width}} {'STATE':<8} WHY"]
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            scheduled = next((c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), {})
            state = "Ready" if _ready(pod) else ("Pending" if not pod["spec"].get("nodeName") else "Starting")
            why = self.pending_why(pod, scheduled.get("message", "")) if state == "Pending" else ""
            lines.append(f"{pod['metadata']['name']:<40} {pod['metadata']['labels']['fal.ai/machine-type']:<12} "
                         f"{pod['spec'].get('nodeName', '-'):<{width}} {state:<8} {why[:70]}")
        lines += self.extra_lines()
        self.last_table = "\n".join(lines)
        if self.live:
            print("\033[2J\033[H" + self.last_table, flush=True)

    def extra_lines(self) -> list[str]:
        return []

    def pending_why(self, pod: dict, scheduler_message: str) -> str:
        return scheduler_message

    def watch_until(self, done: Callable[[list[dict], list[dict]], bool], timeout: float,
                    quiet: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            apps, pods = self.snapshot()
            self.record(apps, pods)
            self.show(apps, pods)
            if done(apps, pods):
                self.print_table(quiet)
                return True
            time.sleep(0.5)
        self.print_table(quiet)
        if not quiet:
            print(f"   (not settled after {timeout:.0f}s; continuing)")
        return False

    def print_table(self, quiet: bool) -> None:
        """Without a live table (logs, CI), the state each step ended in."""
        if not self.live and not quiet:
            print("\n".join("   " + line for line in self.last_table.splitlines()), flush=True)

    # --- the story -------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        self.phase("placing replicas on their most preferred machine types with room")
        self.watch_until(all_ready, 90)
        self.phase(f"taking {TAKEN_TYPE} away: cordon and drain every H100 node")
        for node in self.taken_nodes():
            self.k("cordon", node)
            self.k("delete", "pods", "-n", NAMESPACE, "--field-selector", f"spec.nodeName={node}", "--wait=false")
        self.watch_until(lambda a, p: settled(a, p) and not on_type(p, TAKEN_TYPE), 120)
        self.phase(f"giving {TAKEN_TYPE} back: replicas return make-before-break")
        for node in self.taken_nodes():
            self.k("uncordon", node)
        self.watch_until(lambda a, p: settled(a, p) and on_type(p, TAKEN_TYPE) >= 2, 120)
        self.phase("settled")
        self.watch_until(lambda a, p: False, 3, quiet=True)  # a last stretch for the picture
        self.finish()

    def finish(self) -> None:
        self.stop_operator()
        print("\nEvents:")
        print(self.k("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=FalApp",
                     "--sort-by=.lastTimestamp", "-o",
                     "custom-columns=TIME:.lastTimestamp,APP:.involvedObject.name,REASON:.reason,MESSAGE:.message"))
        out = plot(self.samples, self.phases, REPO / "docs" / "demo-timeline.png")
        if out:
            print(f"Timeline: {out}")
        if not self.keep:  # free the simulated GPUs for whatever runs next (e.g. make test)
            self.k("delete", "namespace", NAMESPACE, "--wait=false")

    def stop(self) -> None:
        """What the demo started and must not leave behind (the first cluster stays: it is reused)."""
        self.stop_operator()


class ScalablePoolDemo(Demo):
    """The second phase, on a second cluster whose H100 nodes come from a Karpenter NodePool."""

    def __init__(self, live: bool, keep: bool, started: float):
        super().__init__(live, keep, env=autoscaled_env(), started=started)
        self.started_cluster = False
        self.types_seen: set[str] = set()  # machine types the app's replicas were ever created on
        self.nodes: list[dict] = []  # the pool's nodes at the last snapshot
        self.karpenter_says: dict[str, str] = {}  # pod -> Karpenter's latest event about it
        self.shown_waiting = False

    def run(self) -> None:
        self.phase("starting a second cluster: fixed A100 nodes, an H100 NodePool with no node (Karpenter; "
                   "hack/fleets/autoscaled.yaml; the first run builds Karpenter: ~6 min)")
        if subprocess.run([str(CLUSTER), "status"], env=self.env, capture_output=True).returncode != 0:
            self.started_cluster = True
            subprocess.run([str(CLUSTER), "up", "--fleet", str(AUTOSCALED_FLEET)], check=True, env=self.env)
        self.install()
        self.fresh_namespace()
        if self.pool_nodes():  # a kept cluster: the story needs a pool without nodes
            self.phase(f"waiting for Karpenter to remove the nodes an earlier run left in NodePool {POOL}")
            deadline = time.monotonic() + 180
            while self.pool_nodes():
                if time.monotonic() > deadline:
                    sys.exit(f"NodePool {POOL} still has nodes after 180s")
                time.sleep(1)
        self.start_operator()
        self.phase(f"{TAKEN_TYPE} is found autoscaled from the NodePool (kubectl get machinetypes)")
        mt = TAKEN_TYPE.lower()
        deadline = time.monotonic() + 60
        while (self.kjson("get", "machinetype", mt).get("status") or {}).get("autoscaled") is not True:
            if time.monotonic() > deadline:
                sys.exit(f"machinetype {mt} was not found autoscaled within 60s; see {self.state}/demo-operator.log")
            time.sleep(0.5)
        print("\n".join("   " + line for line in self.k("get", "machinetypes").splitlines()), flush=True)

        self.phase(f"an app preferring {TAKEN_TYPE} ({POOL_LIMIT} x 8 GPUs, unschedulableTimeout 5s): "
                   "no H100 node, so it waits for Karpenter's new nodes instead of falling back")
        self.k("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(SCALER))
        self.watch_until(lambda a, p: settled(a, p) and on_type(p, TAKEN_TYPE) == POOL_LIMIT, 120)
        fell_back = sorted(self.types_seen - {TAKEN_TYPE.lower()})
        print(f"   replicas ever created on: {', '.join(sorted(self.types_seen))}"
              f" ({'fell back to ' + ', '.join(fell_back) if fell_back else 'no fallback'})", flush=True)

        self.phase(f"scaling to {POOL_LIMIT + 1}: the pool is at its limit of {POOL_LIMIT} nodes, Karpenter "
                   f"refuses, the new replica falls back to {FALLBACK_TYPE} at once")
        self.k("scale", "-n", NAMESPACE, "falapp", SCALER["metadata"]["name"], f"--replicas={POOL_LIMIT + 1}")
        self.watch_until(lambda a, p: settled(a, p) and on_type(p, FALLBACK_TYPE) == 1, 60)
        self.phase("settled")
        self.finish()

    def snapshot(self) -> tuple[list[dict], list[dict]]:
        apps, pods = super().snapshot()
        self.types_seen |= {p["metadata"]["labels"]["fal.ai/machine-type"] for p in pods}
        self.nodes = self.pool_nodes()
        events = self.kjson("get", "events", "-n", NAMESPACE, "--field-selector", "source=karpenter")["items"]
        # the latest answer counts: a Nominated pod can be refused later when another took the claim
        for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
            self.karpenter_says[event["involvedObject"]["name"]] = f"karpenter {event['reason']}: {event['message']}"
        return apps, pods

    def pool_nodes(self) -> list[dict]:
        return [n for n in self.kjson("get", "nodes", "-l", f"{POOL_LABEL}={POOL}")["items"]
                if not n["metadata"].get("deletionTimestamp")]

    def pending_why(self, pod: dict, scheduler_message: str) -> str:
        return self.karpenter_says.get(pod["metadata"]["name"], scheduler_message)

    def show(self, apps: list[dict], pods: list[dict]) -> None:
        super().show(apps, pods)
        waiting = [p for p in pods if not p["spec"].get("nodeName") and p["metadata"]["name"] in self.karpenter_says]
        if not self.live and waiting and not self.shown_waiting:  # logs: the moment a replica waits for a node
            self.shown_waiting = True
            self.print_table(quiet=False)

    def extra_lines(self) -> list[str]:
        width = max([24] + [len(n["metadata"]["name"]) for n in self.nodes])
        lines = ["", f"{'NODES OF NODEPOOL ' + POOL:<{width}} {'CREATED':<22} {'INSTANCE':<14} READY"]
        for node in sorted(self.nodes, key=lambda n: n["metadata"]["creationTimestamp"]):
            ready = next((c["status"] for c in node["status"].get("conditions", []) if c["type"] == "Ready"), "-")
            lines.append(f"{node['metadata']['name']:<{width}} {node['metadata']['creationTimestamp']:<22} "
                         f"{node['metadata']['labels'].get('node.kubernetes.io/instance-type', ''):<14} {ready}")
        return lines if self.nodes else [*lines, "(none yet)"]

    def finish(self) -> None:
        self.stop_operator()
        print("\nKarpenter's events for the app's pods:")
        print(self.k("get", "events", "-n", NAMESPACE, "--field-selector", "source=karpenter",
                     "--sort-by=.lastTimestamp", "-o",
                     "custom-columns=TIME:.lastTimestamp,POD:.involvedObject.name,REASON:.reason,MESSAGE:.message"))
        print("FalApp events:")
        print(self.k("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=FalApp",
                     "--sort-by=.lastTimestamp", "-o",
                     "custom-columns=TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message"))
        if not self.keep and not self.started_cluster:  # a cluster kept running: give its pool back
            self.k("delete", "namespace", NAMESPACE, "--wait=false")

    def stop(self) -> None:
        """Karpenter and a second control plane cost CPU: stop the cluster the demo started, unless kept."""
        self.stop_operator()
        if self.started_cluster and not self.keep:
            self.phase("stopping the second cluster")
            subprocess.run([str(CLUSTER), "down"], env=self.env, check=False)
            print("The second cluster is stopped.")
        else:
            print(f"The second cluster is still running: {env_prefix(self.env)}hack/cluster.sh down stops it.")


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def all_ready(apps: list[dict], pods: list[dict]) -> bool:
    return bool(apps) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in (a.get("status") or {}).get("conditions", []))
        for a in apps)


def on_type(pods: list[dict], display: str) -> int:
    """Ready replicas on a machine type."""
    return sum(1 for p in pods if p["metadata"]["labels"].get("fal.ai/machine-type") == display.lower() and _ready(p))


def settled(apps: list[dict], pods: list[dict]) -> bool:
    """Every app Ready with exactly its replicas: no make-before-break replica still in flight."""
    return all_ready(apps, pods) and len(pods) == sum(a["spec"]["replicas"] for a in apps)


def plot(samples, phases, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no timeline picture")
        return None
    apps = sorted({name for _, name, _ in samples})
    types = sorted({t for _, _, ready in samples for t in ready})
    fig, axes = plt.subplots(len(apps), 1, figsize=(10, 1.8 * len(apps)), sharex=True, squeeze=False)
    for ax, app in zip(axes[:, 0], apps, strict=True):
        rows = [(t, ready) for t, name, ready in samples if name == app]
        times = [t for t, _ in rows]
        stacks = [[ready.get(kind, 0) for _, ready in rows] for kind in types]
        ax.stackplot(times, stacks, labels=types, step="post")
        ax.set_ylabel(app, rotation=0, ha="right")
        for t, _ in phases[3:]:
            ax.axvline(t, color="grey", linewidth=0.6, linestyle="--")
    for t, text in phases[3:-1]:
        label = text.split(":")[0].split(" on their ")[0]
        axes[0, 0].annotate(label, (t, 1.02), xycoords=("data", "axes fraction"), fontsize=7, color="dimgrey")
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("seconds (dashed lines: phase changes; stacks: ready replicas per machine type)")
    fig.suptitle("falapp-operator demo: GPU-H100 taken away and given back")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def timings(phases: list[tuple[float, str]], end: float) -> None:
    print("\nTimings:")
    for (t, text), (t_next, _) in zip(phases, [*phases[1:], (end, "")], strict=True):
        print(f"  {t_next - t:6.1f}s  {text[:100]}")
    print(f"  {end:6.1f}s  in all")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-live", action="store_true", help="don't redraw the table (for logs and CI)")
    parser.add_argument("--keep", action="store_true",
                        help=f"keep namespace {NAMESPACE} and its apps afterwards, and the second cluster running")
    parser.add_argument("--no-scalable-pool", action="store_true",
                        help="skip the second phase (a second cluster with Karpenter)")
    args = parser.parse_args()
    live = not args.no_live and sys.stdout.isatty()
    first = Demo(live=live, keep=args.keep)
    demos = [first]
    try:
        first.run()
        if not args.no_scalable_pool:
            demos.append(ScalablePoolDemo(live=live, keep=args.keep, started=first.started))
            demos[-1].run()
    except KeyboardInterrupt:
        demos[-1].finish()
    finally:  # nothing left behind on a failure either: the operators, the second cluster
        for demo in demos:
            demo.stop()
    timings([ph for demo in demos for ph in demo.phases], time.monotonic() - first.started)
    print(f"\nThe cluster is still running: {env_prefix(first.env)}hack/cluster.sh down stops it "
          "(demo --keep keeps the apps).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
