#!/usr/bin/env python3
"""The main job in one command: a local cluster with a simulated GPU fleet, the CRDs and catalogue,
the operator and the examples. Then GPU-H100 capacity is taken away and given back, so you can watch
replicas fall back and return, with a live table of where each replica runs and why.

Writes a timeline of the run to docs/demo-timeline.png. The cluster keeps running afterwards
(`hack/cluster.sh down` stops it).
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

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "hack" / "cluster.sh"
NAMESPACE = "falapp-demo"
SHOWCASE = {
    "apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "metadata": {"name": "showcase"},
    "spec": {"image": "registry.example.com/llm-server:3.1", "machineTypes": ["GPU-H100", "GPU-H200", "GPU-A100"],
             "numGpus": 8, "replicas": 2, "fallback": {"unschedulableTimeout": "5s"}},
}
TAKEN_TYPE, TAKEN_PRODUCT = "GPU-H100", "NVIDIA-H100-80GB-HBM3"


def sh(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class Demo:
    def __init__(self, live: bool, keep: bool = False):
        self.live, self.keep = live, keep
        self.kubectl = str(Path(sh(str(CLUSTER), "bindir").strip()) / "kubectl")
        self.kubeconfig = sh(str(CLUSTER), "kubeconfig").strip()
        self.started = time.monotonic()
        self.samples: list[tuple[float, str, dict[str, int]]] = []  # (t, app, ready per type)
        self.phases: list[tuple[float, str]] = []
        self.operator: subprocess.Popen | None = None

    def k(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return sh(self.kubectl, "--kubeconfig", self.kubeconfig, *args, input=input, check=check)

    def kjson(self, *args: str) -> dict:
        return json.loads(self.k(*args, "-o", "json"))

    def phase(self, text: str) -> None:
        self.phases.append((time.monotonic() - self.started, text))
        print(f"\n== {text}", flush=True)

    # --- set-up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.phase("starting the local cluster (the first run builds it: ~13 min)")
        subprocess.run([str(CLUSTER), "up"], check=True)
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.k("wait", "--for=condition=Established", "crd/falapps.fal.ai", "crd/machinetypes.fal.ai")
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "catalog" / "default.yaml"))
        for node in self.taken_nodes():  # a previous demo may have left them cordoned
            self.k("uncordon", node)
        self.k("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s")
        self.k("create", "namespace", NAMESPACE)
        self.phase("starting the operator (logs: .state/demo-operator.log)")
        log = open(REPO / ".state" / "demo-operator.log", "w")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "FALAPP_METRICS_PORT": "0"}
        self.operator = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.phase("applying the examples and a 2 x 8-GPU showcase app")
        import yaml  # the demo runs from the project's venv

        apps = [yaml.safe_load(f.read_text()) for f in sorted((REPO / "examples").glob("*.yaml"))] + [SHOWCASE]
        for app in apps:  # short timeouts, so the story fits in a minute
            app["spec"]["fallback"] = {**app["spec"].get("fallback", {}), "unschedulableTimeout": "5s"}
        self.k("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(apps))

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
        lines += ["", f"{'REPLICA':<40} {'TYPE':<12} {'NODE':<12} {'STATE':<8} WHY"]
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            scheduled = next((c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), {})
            state = "Ready" if _ready(pod) else ("Pending" if not pod["spec"].get("nodeName") else "Starting")
            why = scheduled.get("message", "") if state == "Pending" else ""
            lines.append(f"{pod['metadata']['name']:<40} {pod['metadata']['labels']['fal.ai/machine-type']:<12} "
                         f"{pod['spec'].get('nodeName', '-'):<12} {state:<8} {why[:60]}")
        if self.live:
            print("\033[2J\033[H" + "\n".join(lines), flush=True)

    def watch_until(self, done: Callable[[list[dict], list[dict]], bool], timeout: float,
                    quiet: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            apps, pods = self.snapshot()
            self.record(apps, pods)
            self.show(apps, pods)
            if done(apps, pods):
                return True
            time.sleep(0.5)
        if not quiet:
            print(f"   (not settled after {timeout:.0f}s; continuing)")
        return False

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
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait(15)
        print("\nEvents:")
        print(self.k("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=FalApp",
                     "--sort-by=.lastTimestamp", "-o",
                     "custom-columns=TIME:.lastTimestamp,APP:.involvedObject.name,REASON:.reason,MESSAGE:.message"))
        out = plot(self.samples, self.phases, REPO / "docs" / "demo-timeline.png")
        if out:
            print(f"Timeline: {out}")
        if not self.keep:  # free the simulated GPUs for whatever runs next (e.g. make test)
            self.k("delete", "namespace", NAMESPACE, "--wait=false")
        print("The cluster is still running: hack/cluster.sh down stops it (demo --keep keeps the apps).")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-live", action="store_true", help="don't redraw the table (for logs and CI)")
    parser.add_argument("--keep", action="store_true", help=f"keep namespace {NAMESPACE} and its apps afterwards")
    args = parser.parse_args()
    demo = Demo(live=not args.no_live and sys.stdout.isatty(), keep=args.keep)
    try:
        demo.run()
    except KeyboardInterrupt:
        demo.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
