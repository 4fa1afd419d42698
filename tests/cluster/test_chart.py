"""The Helm chart: lint, `helm template | kubeconform -strict`, install on the rig, and the operator doing
the placement/fallback flow with nothing but the chart's RBAC (and no access to Secrets).

helm (Helm 4) and kubeconform are built from pinned Go modules by hack/build-tools.sh. kubeconform gets
its schemas offline: built-in kinds from the rig's own OpenAPI (/openapi/v2), our kinds from crds/.

Helm 4's `--wait` takes a strategy; without the flag it waits for hooks only. The tests name it:
`--wait=watcher` (kstatus, as Flux reads objects). The last tests install a chart holding a FalApp and
check what a user sees from `helm install --wait`: success once the app is Ready, a fast failure when
it is Stalled, and a wait (not a false success) while the operator has not looked at a new app.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from falapp_operator.api.names import deployment_name
from tests.cluster.builders import PrivatePools, falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import events_for, wait_condition, wait_placement
from tests.conftest import REPO
from tests.kube import Kubectl, condition, wait_until

CHART = REPO / "charts" / "falapp-operator"
BUILD_TOOLS = REPO / "hack" / "build-tools.sh"
PROOF_MANAGER = "falapp-operator-rbac-proof"

# --- tools -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools() -> Path:
    result = subprocess.run([str(BUILD_TOOLS)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def helm(tools: Path, *args: str, kubeconfig: Path | None = None, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": str(tools / ".helm-cache"),
           "HELM_CONFIG_HOME": str(tools / ".helm-config"), "HELM_DATA_HOME": str(tools / ".helm-data")}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run([str(tools / "helm"), *args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def render(tools: Path, *args: str, namespace: str = "falapp-system") -> list[dict]:
    out = helm(tools, "template", "falapp-operator", str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


# --- offline schemas for kubeconform ---------------------------------------------------------------
def _schema_walk(node: Any, strict: bool) -> Any:
    """A JSON schema node made strict (no undeclared fields) and free of OpenAPI-only types."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in ("properties", "definitions", "patternProperties"):
        if isinstance(node.get(key), dict):
            out[key] = {name: _schema_walk(sub, strict) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = _schema_walk(node[key], strict)
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            out[key] = [_schema_walk(sub, strict) for sub in node[key]]
    if out.get("format") == "int-or-string" or out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("format", None)
        if "anyOf" not in out:
            out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if strict and "properties" in out and "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _closure(definitions: dict[str, Any], roots: set[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = definitions[name]
        todo.extend(_refs(definitions[name]) - set(seen))
    return seen


def _schema_file(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for a kind."""
    group, _, version = api_version.rpartition("/")
    return f"{kind.lower()}-{group.split('.')[0]}-{version}.json" if group else f"{kind.lower()}-{version}.json"


QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@pytest.fixture(scope="module")
def schema_dir(kubectl: Kubectl, tmp_path_factory) -> Path:
    """Strict JSON schemas in kubeconform's layout: every built-in kind the rig serves, and our CRDs."""
    out = tmp_path_factory.mktemp("schemas")
    definitions = json.loads(kubectl.run("get", "--raw", "/openapi/v2", timeout=120).stdout)["definitions"]
    definitions = {name: d for name, d in definitions.items() if not name.startswith("ai.fal.")}
    # a Quantity is written as a string or a number in manifests
    definitions[QUANTITY] = {"description": definitions[QUANTITY].get("description", ""),
                             "oneOf": [{"type": "string"}, {"type": "number"}]}
    strict = {name: _schema_walk(d, strict=True) for name, d in definitions.items()}
    for definition in strict.values():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            schema = {"$schema": "http://json-schema.org/draft-07/schema#", **definition,
                      "definitions": _closure(strict, _refs(definition))}
            (out / _schema_file(gvk["kind"], api_version)).write_text(json.dumps(schema))
    meta = _closure(strict, {OBJECT_META})
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = _schema_walk(version["schema"]["openAPIV3Schema"], strict=True)
            schema["properties"]["metadata"] = {"$ref": f"#/definitions/{OBJECT_META}"}
            schema = {"$schema": "http://json-schema.org/draft-07/schema#", **schema, "definitions": meta}
            api_version = f"{crd['spec']['group']}/{version['name']}"
            (out / _schema_file(crd["spec"]["names"]["kind"], api_version)).write_text(json.dumps(schema))
    return out


def kubeconform(tools: Path, schema_dir: Path, manifests: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "kubeconform"), "-strict", "-summary", "-kubernetes-version", "1.35.4",
         "-schema-location", str(schema_dir) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json", *extra, "-"],
        input=manifests, capture_output=True, text=True, timeout=120)


VALUE_SETS = {
    "defaults": [],
    "watch-namespaces": ["--set", "watchNamespaces={team-a,team-b}", "--set", "logFormat=json"],
    "no-crds-no-catalog": ["--set", "crds.install=false", "--set", "catalog.install=false",
                           "--set", "metrics.enabled=false", "--set", "rbac.create=false"],
    "everything-on": ["--set", "metrics.serviceMonitor.enabled=true", "--set", "verbose=true",
                      "--set", f"image.digest=sha256:{'a' * 64}", "--api-versions", "fal.ai/v1alpha1/MachineType"],
    "network-policy": ["--set", "networkPolicy.enabled=true",
                       "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":'
                                     '{"kubernetes.io/metadata.name":"monitoring"}}}]'],
    "single-no-election": ["--set", "replicaCount=1", "--set", "leaderElection.enabled=false",
                           "--set", "rbac.aggregateToDefaultRoles=false"],
}


# --- lint and offline validation ---------------------------------------------------------------------
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint(tools: Path, values: str):
    args = [a for a in VALUE_SETS[values] if a != "--api-versions" and not a.startswith("fal.ai/")]
    result = helm(tools, "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_refuses_bad_values(tools: Path):
    for bad in ("logFormat=xml", "watchNamespaces={Not_A_Namespace}", "catalog.machineTypes[0].name=GPU-H100",
                "metrics.port=0", "unknownKey=1", "leaderElection.leaseDuration=1", "networkPolicy.allowAll=true",
                "apiPriority.concurrencyShares=0"):
        result = helm(tools, "lint", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad
    # two operators without leader election would both write; timings out of order: refused, saying why
    for bad, message in ((["leaderElection.enabled=false"], "replicaCount > 1 needs leaderElection.enabled"),
                         (["leaderElection.renewDeadline=20"], "retryPeriod < renewDeadline < leaseDuration"),
                         (["serviceAccount.create=false"], "needs the operator's own ServiceAccount")):
        result = helm(tools, "template", "x", str(CHART), *[a for b in bad for a in ("--set", b)], check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_chart_refuses_a_cluster_too_old_for_it_saying_what_to_do(tools: Path):
    """Installed on a cluster too old for what it holds, the chart fails before anything is applied,
    naming the version it needs (and, for the admission policies, the value that turns them off)."""
    too_old = helm(tools, "template", "x", str(CHART), "--kube-version", "1.28.9", check=False)
    assert too_old.returncode != 0 and "requires kubeVersion: >=1.29.0-0" in too_old.stderr, too_old.stderr
    for version in ("1.31.4", "v1.31.9-eks-5e0fdde", "v1.32", "1.32.5", "v1.32.0+k3s1"):
        no_policies = helm(tools, "template", "x", str(CHART), "--kube-version", version, check=False)
        assert no_policies.returncode != 0, version
        assert "tenancy.admissionPolicy.enabled needs Kubernetes 1.33" in no_policies.stderr, no_policies.stderr
    docs = render(tools, "--kube-version", "1.29.0", "--set", "tenancy.admissionPolicy.enabled=false")
    assert of_kind(docs, "Deployment") and not of_kind(docs, "ValidatingAdmissionPolicy")
    policies = [d["metadata"]["name"] for d in of_kind(render(tools), "ValidatingAdmissionPolicy")]
    assert policies
    for version in ("1.33.0", "v1.33", "v1.33.1-gke.1002000", "v1.33.0+k3s1"):
        rendered = of_kind(render(tools, "--kube-version", version), "ValidatingAdmissionPolicy")
        assert [d["metadata"]["name"] for d in rendered] == policies, version


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_template_is_valid_for_kubeconform_strict(tools: Path, schema_dir: Path, values: str):
    manifests = helm(tools, "template", "falapp-operator", str(CHART), "--namespace", "falapp-system",
                     *VALUE_SETS[values]).stdout
    # the ServiceMonitor's CRD is prometheus-operator's, not on the rig: only that kind is skipped
    extra = ["-skip", "ServiceMonitor"] if "ServiceMonitor" in manifests else []
    result = kubeconform(tools, schema_dir, manifests, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    checked = sum(1 for d in docs if d["kind"] != "ServiceMonitor")
    assert f"Valid: {checked}, Invalid: 0, Errors: 0" in result.stdout, result.stdout
    assert {"Deployment", "ServiceAccount"} <= {d["kind"] for d in docs}


def test_kubeconform_schemas_catch_mistakes(tools: Path, schema_dir: Path):
    """The offline schemas are strict: an unknown field and a wrong type fail, for ours and built-ins."""
    docs = render(tools)
    deployment = of_kind(docs, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    wrong_type = of_kind(docs, "MachineType")[0]
    wrong_type["spec"]["gpu"]["maxGpusPerReplica"] = "eight"
    unknown_field = of_kind(docs, "MachineType")[1]
    unknown_field["spec"]["gpuCount"] = 8
    for doc in (deployment, wrong_type, unknown_field):
        result = kubeconform(tools, schema_dir, yaml.safe_dump(doc))
        assert result.returncode != 0 and "Invalid: 1" in result.stdout, result.stdout


# --- what the chart renders --------------------------------------------------------------------------
def test_chart_crds_are_the_generated_ones(tools: Path):
    docs = render(tools)
    for crd in of_kind(docs, "CustomResourceDefinition"):
        meta = crd["metadata"]
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert meta["labels"]["app.kubernetes.io/name"] == "falapp-operator"
        generated = yaml.safe_load((REPO / "crds" / f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml")
                                   .read_text())
        assert {**crd, "metadata": {"name": meta["name"]}} == generated
    assert len(of_kind(docs, "CustomResourceDefinition")) == 2
    unkept = of_kind(render(tools, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert len(unkept) == 2 and all("annotations" not in c["metadata"] for c in unkept)
    assert not of_kind(render(tools, "--set", "crds.install=false"), "CustomResourceDefinition")


def test_catalog_from_values(tools: Path, tmp_path: Path):
    default = [d for d in yaml.safe_load_all((REPO / "catalog" / "default.yaml").read_text()) if d]
    rendered = of_kind(render(tools), "MachineType")
    assert [(m["metadata"]["name"], m["spec"]) for m in rendered] == [
        (m["metadata"]["name"], m["spec"]) for m in default]
    # a first install (MachineType not served yet) creates the catalogue after the CRDs, as a hook
    # carrying the release's ownership so the next upgrade adopts it
    assert rendered[0]["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install", "meta.helm.sh/release-name": "falapp-operator",
        "meta.helm.sh/release-namespace": "falapp-system"}
    served = of_kind(render(tools, "--api-versions", "fal.ai/v1alpha1/MachineType"), "MachineType")
    assert len(served) == len(default) and all("annotations" not in m["metadata"] for m in served)
    assert not of_kind(render(tools, "--set", "catalog.install=false"), "MachineType")

    custom = {"name": "gpu-a100-80gb", "labels": {"team": "ml"}, "spec": {
        "displayName": "GPU-A100-80GB", "gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"},
        "resources": {"cpu": "12", "memory": "112Gi"},
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"catalog": {"machineTypes": [custom]}}))
    [only] = of_kind(render(tools, "-f", str(values)), "MachineType")
    assert only["metadata"]["name"] == "gpu-a100-80gb" and only["spec"] == custom["spec"]
    assert only["metadata"]["labels"]["team"] == "ml"
    values.write_text(yaml.safe_dump({"catalog": {"extraMachineTypes": [custom]}}))
    extended = of_kind(render(tools, "-f", str(values)), "MachineType")
    assert [m["metadata"]["name"] for m in extended] == [m["metadata"]["name"] for m in default] + ["gpu-a100-80gb"]


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def _aggregated(doc: dict) -> bool:
    """A ClusterRole that adds FalApp rights to the built-in admin/edit/view roles (for users, not the operator)."""
    return any(k.startswith(AGGREGATE) for k in (doc["metadata"].get("labels") or {}))


def _rules(docs: list[dict]) -> list[tuple[str, str, dict]]:
    """The operator's rules (the aggregated user roles left out)."""
    return [(d["kind"], d["metadata"].get("namespace", ""), rule) for d in docs
            if d["kind"] in ("ClusterRole", "Role") and not _aggregated(d) for rule in d["rules"]]


def _verbs(docs: list[dict], kind: str, group: str, resource: str, namespace: str | None = None) -> set[str]:
    return {verb for k, ns, rule in _rules(docs) if k == kind and (namespace is None or ns == namespace)
            and group in rule["apiGroups"] and resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize("values", ["defaults", "watch-namespaces"])
def test_rbac_is_least_privilege(tools: Path, values: str):
    docs = render(tools, *VALUE_SETS[values])
    rules = _rules(docs)
    assert rules
    for _, _, rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "secrets" not in rule["resources"] and "configmaps" not in rule["resources"], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "nonResourceURLs" not in rule
        # only the leader Lease (create cannot be limited by name) and Karpenter's NodePool CRD are named
        assert "resourceNames" not in rule or rule in (
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["falapp-operator"],
             "verbs": ["get", "update"]},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "resourceNames": ["nodepools.karpenter.sh"], "verbs": ["list", "watch"]}), rule
    # the leader Lease: in the release namespace only
    assert _verbs(docs, "Role", "coordination.k8s.io", "leases", "falapp-system") == {"get", "create", "update"}
    assert not _verbs(docs, "ClusterRole", "coordination.k8s.io", "leases")
    assert [r.get("resourceNames") for _, _, r in rules if "customresourcedefinitions" in r["resources"]] == [
        ["nodepools.karpenter.sh"]]
    [lease_binding] = [b for b in of_kind(docs, "RoleBinding") if b["metadata"]["namespace"] == "falapp-system"]
    assert lease_binding["subjects"] == [{"kind": "ServiceAccount", "name": "falapp-operator",
                                          "namespace": "falapp-system"}]
    # children carry blockOwnerDeletion: OwnerReferencesPermissionEnforcement checks update on finalizers
    assert _verbs(docs, "ClusterRole" if values == "defaults" else "Role", "fal.ai", "falapps/finalizers") == {
        "update"}
    # nodes read-only; pods read-only except patching the pod-deletion-cost annotation and deleting a
    # deleted Deployment's pods no node runs, with their ReplicaSets (the operator-pod-writes and
    # operator-replicaset-deletes policies hold it to that)
    assert _verbs(docs, "ClusterRole", "", "nodes") == {"get", "list", "watch"}
    assert _verbs(docs, "ClusterRole", "", "pods") | _verbs(docs, "Role", "", "pods") == {
        "get", "list", "watch", "patch", "delete"}
    assert _verbs(docs, "ClusterRole", "apps", "replicasets") | _verbs(docs, "Role", "apps", "replicasets") == {
        "delete"}
    assert _verbs(docs, "ClusterRole", "fal.ai", "machinetypes") == {"get", "list", "watch"}
    assert _verbs(docs, "ClusterRole", "fal.ai", "machinetypes/status") == {"patch"}
    # namespace labels decide MachineType entitlements (kopf also lists namespaces when it serves some)
    assert _verbs(docs, "ClusterRole", "", "namespaces") == {"get", "list", "watch"}
    if values == "defaults":
        assert {r["metadata"]["name"] for r in of_kind(docs, "Role")} == {"falapp-operator-leader-election"}
        assert _verbs(docs, "ClusterRole", "fal.ai", "falapps") == {"get", "list", "watch"}
    else:
        assert {r["metadata"]["namespace"] for r in of_kind(docs, "Role")} == {"team-a", "team-b", "falapp-system"}
        assert {r["metadata"]["namespace"] for r in of_kind(docs, "RoleBinding")} == {
            "team-a", "team-b", "falapp-system"}
        # FalApps, Deployments, Services and events only where FalApps are watched
        for resource in ("falapps", "deployments", "replicasets", "services", "events"):
            group = {"falapps": "fal.ai", "deployments": "apps", "replicasets": "apps"}.get(resource, "")
            assert not _verbs(docs, "ClusterRole", group, resource), resource
            assert _verbs(docs, "Role", group, resource, "team-a"), resource
        [binding] = of_kind(docs, "ClusterRoleBinding")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "falapp-operator",
                                        "namespace": "falapp-system"}]


def test_falapp_rights_aggregate_into_admin_edit_view(tools: Path):
    aggregated = {d["metadata"]["name"]: d for d in of_kind(render(tools), "ClusterRole") if _aggregated(d)}
    edit, view = aggregated["falapp-operator-edit"], aggregated["falapp-operator-view"]
    assert {k for k in edit["metadata"]["labels"] if k.startswith(AGGREGATE)} == {
        AGGREGATE + "admin", AGGREGATE + "edit"}
    assert {k for k in view["metadata"]["labels"] if k.startswith(AGGREGATE)} == {AGGREGATE + "view"}
    def verbs(role: dict, resource: str) -> set[str]:
        return {v for rule in role["rules"] if resource in rule["resources"] for v in rule["verbs"]}
    assert verbs(edit, "falapps") == {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    assert verbs(edit, "falapps/scale") == {"get", "update", "patch"}
    assert not verbs(edit, "machinetypes")
    for resource in ("falapps", "machinetypes"):
        assert verbs(view, resource) == {"get", "list", "watch"}
    assert all(k != "ClusterRoleBinding" or not _aggregated(d) for d in render(tools) for k in [d["kind"]])
    off = render(tools, "--set", "rbac.aggregateToDefaultRoles=false")
    assert not [d for d in of_kind(off, "ClusterRole") if _aggregated(d)]


def test_high_availability_objects(tools: Path):
    docs = render(tools)
    [deployment] = of_kind(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    [pdb] = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    pod = deployment["spec"]["template"]["spec"]
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == selector
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["FALAPP_LEADER_ELECT"]["value"] == "true"
    assert env["FALAPP_LEADER_ELECTION_NAME"]["value"] == "falapp-operator"  # the Lease the Role names
    assert env["FALAPP_LEADER_ELECTION_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert [env[f"FALAPP_{k}"]["value"] for k in ("LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD")] == [
        "15", "10", "2"]
    # no NetworkPolicy unless asked; asked: ingress to the metrics port only, from the given peers
    assert not of_kind(docs, "NetworkPolicy")
    [policy] = of_kind(render(tools, *VALUE_SETS["network-policy"]), "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{
        "ports": [{"port": "metrics", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
    [closed] = of_kind(render(tools, "--set", "networkPolicy.enabled=true", "--set", "metrics.enabled=false"),
                       "NetworkPolicy")
    assert closed["spec"]["ingress"] == []
    # a single operator without election: no Lease rights, no PDB (it would block every drain)
    single = render(tools, *VALUE_SETS["single-no-election"])
    [one] = of_kind(single, "Deployment")
    assert one["spec"]["replicas"] == 1 and one["spec"]["strategy"] == {"type": "Recreate"}
    assert {"name": "FALAPP_LEADER_ELECT", "value": "false"} in one["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not of_kind(single, "PodDisruptionBudget") and not of_kind(single, "Role")


def test_operator_deployment_is_restricted_and_wired(tools: Path):
    docs = render(tools, *VALUE_SETS["watch-namespaces"])
    [deployment] = of_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"] == {"type": "RollingUpdate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "falapp-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/falapp/falapp-operator:0.1.0"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert container["args"] == ["--log-format=json", "--liveness=http://0.0.0.0:8081/healthz",
                                 "--namespace=team-a", "--namespace=team-b"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # kopf answers /healthz only once the start is done: ten minutes for it before liveness counts
    # (was: killed after 70 s, a start on a large cluster or one retried after a refusal never finished)
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    assert {"name": "FALAPP_METRICS_PORT", "value": "8080"} in container["env"]
    assert {"name": "FALAPP_LEADER_ELECT", "value": "true"} in container["env"]
    assert container["resources"]["limits"]["memory"]
    labels = deployment["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "helm.sh/chart"):
        assert key in labels, key
    [service] = of_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    monitor_docs = render(tools, *VALUE_SETS["everything-on"])
    [monitor] = of_kind(monitor_docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    [pinned] = of_kind(monitor_docs, "Deployment")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@sha256:" + "a" * 64)
    assert of_kind(render(tools, "--set", "metrics.enabled=false"), "Deployment")[0]["spec"]["template"]["spec"][
        "containers"][0]["env"][0] == {"name": "FALAPP_METRICS_PORT", "value": "0"}


# --- on the rig --------------------------------------------------------------------------------------
def test_helm_install_upgrade_uninstall_on_the_rig(kubectl: Kubectl, kctl: Kubectl, namespace: str, crds,
                                                    tools: Path, tmp_path: Path):
    """CRDs taken over and kept, a catalogue from values, the operator pod admitted as 'restricted'."""
    kctl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
             "pod-security.kubernetes.io/enforce-version=latest")
    release = f"falapp-operator-{namespace}"
    prefix = f"t{uuid.uuid4().hex[:6]}"
    custom = {"name": f"{prefix}-chart", "spec": {"displayName": f"{prefix.upper()}-CHART",
                                                   "resources": {"cpu": "1", "memory": "1Gi"}}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"catalog": {"machineTypes": [custom]}}))
    admin = kubectl.kubeconfig
    helm(tools, "install", release, str(CHART), "--namespace", namespace, "-f", str(values),
         "--take-ownership", "--wait=watcher", "--timeout", "120s", kubeconfig=admin)
    try:
        fullname = release
        for kind in ("deployment", "serviceaccount", "service"):
            kctl.get(kind, fullname if kind != "service" else f"{fullname}-metrics")
        kubectl.get("clusterrole", fullname)
        kubectl.get("clusterrolebinding", fullname)
        assert kctl.get("pdb", fullname)["spec"]["minAvailable"] == 1
        # what the authorizer says: the operator's Lease, the finalizers right; FalApps in the built-in roles
        sa = f"system:serviceaccount:{namespace}:{fullname}"
        for verb, resource in (("create", "leases"), ("get", f"leases/{fullname}"), ("update", f"leases/{fullname}")):
            assert _can(kctl, verb, resource, sa), (verb, resource)
        assert _can(kctl, "update", "falapps.fal.ai", sa, "--subresource=finalizers")
        assert not _can(kctl, "update", "leases/someone-elses", sa)
        assert not _can(kubectl.in_namespace("default"), "create", "leases", sa)
        for role, user in (("edit", "falapp-editor"), ("view", "falapp-viewer")):
            kctl.run("create", "rolebinding", f"{role}-{user}", f"--clusterrole={role}", f"--user={user}")
        wait_until(lambda: _can(kctl, "create", "falapps.fal.ai", "falapp-editor"), timeout=30,
                   message="FalApp rights aggregated into edit")
        assert _can(kctl, "patch", "falapps.fal.ai", "falapp-editor", "--subresource=scale")
        wait_until(lambda: _can(kctl, "list", "falapps.fal.ai", "falapp-viewer"), timeout=30,
                   message="FalApp rights aggregated into view")
        assert not _can(kctl, "create", "falapps.fal.ai", "falapp-viewer")
        machine_type = kubectl.get("machinetype", custom["name"])
        assert machine_type["spec"]["displayName"] == custom["spec"]["displayName"]
        assert machine_type["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        for crd in ("falapps.fal.ai", "machinetypes.fal.ai"):
            meta = kubectl.get("crd", crd)["metadata"]
            assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
            assert meta["annotations"]["meta.helm.sh/release-name"] == release
        # admitted under Pod Security "restricted" (the namespace enforces it) and running
        pods = wait_until(lambda: kctl.get("pods", None, "-l", f"app.kubernetes.io/instance={release}")["items"],
                          timeout=60, message="operator pod created")
        assert pods[0]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        helm(tools, "upgrade", release, str(CHART), "--namespace", namespace, "-f", str(values),
             "--set", "logFormat=json", "--wait=watcher", "--timeout", "120s", kubeconfig=admin)
        args = kctl.get("deployment", fullname)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--log-format=json" in args
    finally:
        helm(tools, "uninstall", release, "--namespace", namespace, "--wait=watcher", kubeconfig=admin,
             check=False)
    # the CRDs (and every FalApp) stay; what the release owned goes
    for crd in ("falapps.fal.ai", "machinetypes.fal.ai"):
        kubectl.get("crd", crd)
    assert kubectl.run("get", "machinetype", custom["name"], check=False).returncode != 0
    assert kubectl.run("get", "clusterrole", release, check=False).returncode != 0


def _can(kctl: Kubectl, verb: str, resource: str, user: str, *extra: str) -> bool:
    """`kubectl auth can-i` as a user or ServiceAccount: the authorizer's own answer."""
    return kctl.run("auth", "can-i", verb, resource, f"--as={user}", *extra, check=False).stdout.strip() == "yes"


class TokenOperator(OperatorProcess):
    """`falapp-operator run` with a ServiceAccount's kubeconfig, its own field manager and flags."""

    def __init__(self, kubeconfig: Path, log_dir: Path, args: list[str], env: dict[str, str] | None = None):
        super().__init__(kubeconfig, log_dir)
        self.args = args
        self.env = env or {}

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "FALAPP_METRICS_PORT": str(self.metrics_port),
               "FALAPP_MACHINE_TYPE_STATUS_DELAY": "0.2", "FALAPP_FIELD_MANAGER": PROOF_MANAGER, **self.env}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run", *self.args], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._serving_metrics, timeout=60, message="operator metrics endpoint")


def token_kubeconfig(kubectl: Kubectl, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig for the rig that authenticates as the ServiceAccount (a bound token, 1 h)."""
    token = kubectl.run("create", "token", service_account, "--namespace", namespace, "--duration=1h").stdout.strip()
    admin = json.loads(kubectl.run("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "rig", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "rig", "user": service_account,
                                                "namespace": namespace}}],
    }))
    path.chmod(0o600)
    return path


def _managers(kubectl: Kubectl, kind: str, name: str, subresource: str | None = None) -> set[str]:
    """Field managers that wrote the object (or its subresource)."""
    obj = kubectl.json("get", kind, name, "--show-managed-fields")
    return {f["manager"] for f in obj["metadata"].get("managedFields", [])
            if (subresource is None or f.get("subresource") == subresource)}


def filed_under(kubectl: Kubectl, path: str) -> tuple[str, str]:
    """The uids of the FlowSchema and the priority level the API server filed one request under (its
    response headers); `get --raw` sends that request alone, with no discovery before it."""
    answer = kubectl.run("get", "--raw", path, "-v=8", check=False)
    found = {name.lower(): set(re.findall(rf"X-Kubernetes-Pf-{name}-Uid:\s*([0-9a-f-]+)", answer.stderr, re.I))
             for name in ("Flowschema", "Prioritylevel")}
    assert all(len(uids) == 1 for uids in found.values()), answer.stderr[-2000:]
    return found["flowschema"].pop(), found["prioritylevel"].pop()


@pytest.mark.parametrize("scope", ["cluster-wide", "watch-namespace"])
def test_operator_runs_with_only_the_chart_rbac(scope: str, kubectl: Kubectl, kctl: Kubectl, namespace: str,
                                                crds, tools: Path, running_operator, tmp_path: Path):
    release = f"falapp-operator-{namespace}"
    values = ["--set", "crds.install=false", "--set", "catalog.install=false"]
    # with leader election, as the chart runs it: the Lease its Role names, in the release namespace
    operator_args = ["--leader-elect"]
    lease_env = {"FALAPP_LEADER_ELECTION_NAMESPACE": namespace, "FALAPP_LEADER_ELECTION_NAME": release}
    if scope == "watch-namespace":
        values += ["--set", f"watchNamespaces={{{namespace}}}"]
        operator_args += ["--namespace", namespace]
    helm(tools, "install", release, str(CHART), "--namespace", namespace, *values, kubeconfig=kubectl.kubeconfig)
    sa = f"system:serviceaccount:{namespace}:{release}"
    pools = PrivatePools(kubectl)
    proof: TokenOperator | None = None
    try:
        sa_kubeconfig = token_kubeconfig(kubectl, namespace, release, tmp_path / "sa.kubeconfig")
        # no Secrets, anywhere: by the authorizer's word and by a real request with the token
        for where in (["--namespace", namespace], ["--all-namespaces"]):
            for verb in ("get", "list", "watch"):
                can = kubectl.run("auth", "can-i", verb, "secrets", f"--as={sa}", *where, check=False)
                assert can.returncode != 0 and can.stdout.strip() == "no", (verb, where, can.stdout)
        refused = Kubectl(kubectl.binary, sa_kubeconfig, namespace).run("get", "secrets", check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
        assert kubectl.run("auth", "can-i", "delete", "nodes", f"--as={sa}", check=False).stdout.strip() == "no"
        # a tenant's app is the tenant's: the operator writes its status, never the app itself
        assert kubectl.run("auth", "can-i", "patch", "falapps", f"--as={sa}", "--namespace", namespace,
                           check=False).stdout.strip() == "no"
        # API Priority and Fairness: the API server files its requests under the chart's FlowSchemas, in
        # the chart's priority level; its Lease's in the control plane's leader-election level
        as_operator = Kubectl(kubectl.binary, sa_kubeconfig, namespace)
        assert filed_under(as_operator, f"/apis/fal.ai/v1alpha1/namespaces/{namespace}/falapps") == (
            kubectl.get("flowschema", release)["metadata"]["uid"],
            kubectl.get("prioritylevelconfiguration", release)["metadata"]["uid"])
        assert filed_under(as_operator, f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{release}") == (
            kubectl.get("flowschema", f"{release}-leader-election")["metadata"]["uid"],
            kubectl.get("prioritylevelconfiguration", "leader-election")["metadata"]["uid"])

        running_operator.stop()
        proof = TokenOperator(sa_kubeconfig, tmp_path, operator_args, lease_env)
        proof.start()
        preferred, second = pools.machine_type("full"), pools.machine_type("room")
        # the preferred type's node shows free GPUs but takes no pod: the scheduler really says
        # Unschedulable, so the replica falls back after its 2 s timeout
        full = pools.add_node("full", gpus=8)
        kubectl.run("patch", "node", full, "--subresource=status", "--type=merge",
                    "-p", '{"status":{"allocatable":{"pods":"0"},"capacity":{"pods":"0"}}}')
        pools.add_node("room", gpus=8)
        kctl.apply(falapp("proof", [preferred, second], gpus=1, replicas=1, timeout="2s",
                          return_to_preferred=False, ports=[{"name": "http", "containerPort": 8000}]))
        wait_placement(kctl, "proof", {second.lower(): 1}, timeout=60)
        assert kctl.get("lease", release)["spec"]["holderIdentity"]
        wait_condition(kctl, "falapp", "proof", "FallbackActive", "True")
        wait_condition(kctl, "falapp", "proof", "Ready", "True")
        fell = wait_until(lambda: [e for e in events_for(kctl, "proof", "FellBack")
                                   if e["source"]["component"] == PROOF_MANAGER], timeout=30, message="FellBack event")
        assert "Too many pods" in fell[0]["message"]
        app = kctl.get("falapp", "proof")
        assert PROOF_MANAGER in _managers(kctl, "falapp", "proof", "status")
        assert app["status"]["machines"] == f"{second}x1"
        assert any(a["outcome"] == "FellBack" for a in app["status"]["attempts"])
        assert PROOF_MANAGER in _managers(kctl, "deployment", deployment_name("proof", second.lower()))
        assert PROOF_MANAGER in _managers(kctl, "service", "proof")
        # MachineType status (the capacity view) is written too
        wait_until(lambda: (kubectl.get("machinetype", second.lower()).get("status") or {}).get("placedReplicas") == 1,
                   timeout=30, message="MachineType status")
        assert PROOF_MANAGER in _managers(kubectl, "machinetype", second.lower(), "status")
        # room returns on the preferred type: back make-before-break, the fallback Deployment drained
        pools.remove_node(full)
        pools.add_node("full", gpus=8)
        kctl.run("patch", "falapp", "proof", "--type=merge", "-p", '{"spec":{"fallback":{"returnToPreferred":true}}}')
        wait_placement(kctl, "proof", {preferred.lower(): 1}, timeout=90)
        wait_until(lambda: [e for e in events_for(kctl, "proof", "ReturnedToPreferred")
                            if e["source"]["component"] == PROOF_MANAGER],
                   timeout=30, message="ReturnedToPreferred event")

        def fallback_drained() -> bool:  # scaled to zero, or already deleted
            got = kctl.run("get", "deployment", deployment_name("proof", second.lower()), "-o", "json", check=False)
            return got.returncode != 0 or json.loads(got.stdout)["spec"]["replicas"] == 0
        wait_until(fallback_drained, timeout=30, message="fallback Deployment drained")
        log = proof.log()
        assert "Not enough permissions" not in log, log[-4000:]  # kopf's word for a refused watch
        # kopf's refusals, and the operator's own client's (its watches and LISTs of the cluster too)
        refusals = log.count("(403)") + log.count("APIForbiddenError") + log.count(": 403 Forbidden")
        assert refusals == 0, f"the operator was refused {refusals} time(s):\n{log[-4000:]}"
    finally:
        if proof is not None:
            proof.stop()
        kctl.run("delete", "falapp", "proof", "--ignore-not-found", "--wait=false", check=False)
        pools.cleanup()
        helm(tools, "uninstall", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig, check=False)
        if running_operator.proc is None or running_operator.proc.poll() is not None:
            running_operator.start()


# --- Helm 4 --wait on a FalApp (kstatus) ---------------------------------------------------------------
WAIT_TIMEOUT = 120  # seconds: helm's --timeout for the FalApp charts


def falapp_chart(directory: Path, app: dict) -> Path:
    """A minimal chart whose only template is one FalApp, as a team would ship its app."""
    directory.mkdir(parents=True)
    (directory / "Chart.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v2", "name": "gpu-app", "version": "0.1.0", "type": "application"}))
    (directory / "templates").mkdir()
    (directory / "templates" / "falapp.yaml").write_text(yaml.safe_dump(app))
    return directory


def install_waiting(tools: Path, kubectl: Kubectl, release: str, chart: Path, namespace: str,
                    timeout: float = WAIT_TIMEOUT) -> tuple[subprocess.CompletedProcess[str], float]:
    """`helm install --wait=watcher --timeout`: the result and how long it took (seconds)."""
    started = time.monotonic()
    result = helm(tools, "install", release, str(chart), "--namespace", namespace, "--wait=watcher",
                  "--timeout", f"{timeout:g}s", kubeconfig=kubectl.kubeconfig, check=False,
                  timeout=timeout + 60)
    return result, time.monotonic() - started


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_helm_wait_succeeds_once_the_falapp_is_ready(kubectl: Kubectl, kctl: Kubectl, namespace: str, crds,
                                                     tools: Path, running_operator, tmp_path: Path):
    pools = PrivatePools(kubectl)
    release = "gpu-app-ready"
    try:
        machine_type = pools.machine_type("room")
        pools.add_node("room", gpus=8)
        chart = falapp_chart(tmp_path / "chart", falapp("waited", [machine_type], gpus=1, replicas=2))
        started = datetime.now(UTC).replace(microsecond=0)
        result, elapsed = install_waiting(tools, kubectl, release, chart, namespace)
        app = kctl.get("falapp", "waited")  # read the moment helm returns
        print(f"helm install --wait=watcher: exit {result.returncode} after {elapsed:.1f}s")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "STATUS: deployed" in result.stdout
        ready = condition(app, "Ready")
        assert ready is not None and ready["status"] == "True", app.get("status")
        assert app["status"]["observedGeneration"] == app["metadata"]["generation"]
        assert app["status"]["readyReplicas"] == 2 and app["status"]["machines"] == f"{machine_type}x2"
        # it turned Ready while helm was waiting, not before
        assert _time(ready["lastTransitionTime"]) >= started
        assert elapsed < WAIT_TIMEOUT
    finally:
        helm(tools, "uninstall", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig, check=False)
        pools.cleanup()


def test_helm_wait_fails_fast_on_a_stalled_falapp(kubectl: Kubectl, kctl: Kubectl, namespace: str, crds,
                                                  tools: Path, running_operator, tmp_path: Path):
    unknown = f"GPU-NOPE-{uuid.uuid4().hex[:6].upper()}"
    release = "gpu-app-stalled"
    chart = falapp_chart(tmp_path / "chart", falapp("stalled", [unknown], gpus=1))
    try:
        result, elapsed = install_waiting(tools, kubectl, release, chart, namespace)
        output = result.stdout + result.stderr
        print(f"helm install --wait=watcher: exit {result.returncode} after {elapsed:.1f}s\n{output}")
        assert result.returncode != 0, output
        assert elapsed < WAIT_TIMEOUT / 4, f"helm took {elapsed:.1f}s of its {WAIT_TIMEOUT}s timeout"
        # the user is told which object failed and why
        assert f"FalApp/{namespace}/stalled" in output and "status: Failed" in output, output
        assert unknown in output, output
        stalled = condition(kctl.get("falapp", "stalled"), "Stalled")
        assert stalled is not None and stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
        status = helm(tools, "status", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig)
        assert "STATUS: failed" in status.stdout, status.stdout
    finally:
        helm(tools, "uninstall", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig, check=False)


def test_helm_wait_waits_for_the_operator_to_see_a_new_falapp(kubectl: Kubectl, kctl: Kubectl, namespace: str,
                                                              crds, tools: Path, running_operator,
                                                              tmp_path: Path):
    """With no operator running, a new FalApp is not Current: the CRD defaults its status to
    observedGeneration 0, so `helm install --wait` waits (here: times out) instead of passing at once."""
    release = "gpu-app-unseen"
    chart = falapp_chart(tmp_path / "chart", falapp("unseen", ["GPU-H100"], gpus=1))
    running_operator.stop()
    try:
        created = kctl.run("create", "-o", "json", "-f", "-", input=yaml.safe_dump(
            falapp("created", ["GPU-H100"], gpus=1)))
        assert json.loads(created.stdout)["status"] == {"observedGeneration": 0}
        result, elapsed = install_waiting(tools, kubectl, release, chart, namespace, timeout=8)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and elapsed >= 8, output
        assert f"FalApp/{namespace}/unseen" in output and "status: InProgress" in output, output
        assert "generation is 1, but latest observed generation is 0" in output, output
        assert kctl.get("falapp", "unseen")["status"] == {"observedGeneration": 0}
    finally:
        helm(tools, "uninstall", release, "--namespace", namespace, kubeconfig=kubectl.kubeconfig, check=False)
        running_operator.start()
    # the operator's first status write (a merge patch on /status) replaces the default
    wait_until(lambda: kctl.get("falapp", "created")["status"].get("observedGeneration") == 1, timeout=60,
               message="operator observed the created FalApp")
