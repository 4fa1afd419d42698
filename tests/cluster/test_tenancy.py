"""Tenant attacks on a shared cluster, refused at `kubectl apply`.

The attacker holds FalApp rights in its own namespace and nothing else (impersonated with `--as`): no
Secrets, ConfigMaps, PVCs or Pods. Each attack is a FalApp that would make the operator's pods read or
run as something the attacker may not, or land where it is not entitled; each must be refused with a
message naming the field. Each has a counterpart that is accepted: the same FalApp once the attacker
holds the right it lacked, or a harmless variant, so neither the policy nor the schema refuses
everything.

The admission policy is the chart's, rendered by `helm template` (tenancy.allowedPriorityClasses set)
and applied as rendered; the schema rules are the CRD's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.builders import falapp
from tests.cluster.test_chart import of_kind, render, tools  # noqa: F401  (tools: fixture)
from tests.kube import Kubectl, wait_until

TENANT = "tenant-alice"
ALLOWED_PRIORITY = "falapp-batch"  # rendered into the policy's allowlist
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
FALAPP_VERBS = "get,list,watch,create,update,patch,delete"


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy(kubectl: Kubectl, crds, tools: Path) -> None:  # noqa: F811
    """The chart's FalApp policies (tenancy, entitlements) and their bindings on the rig, in force;
    removed afterwards."""
    docs = [d for d in render(tools, "--set", f"tenancy.allowedPriorityClasses={{{ALLOWED_PRIORITY}}}",
                              "--set", "tenancy.podMetadataKeys={example.com/,app.kubernetes.io/part-of}")
            if d["kind"] in POLICY_KINDS]
    names = sorted(d["metadata"]["name"] for d in of_kind(docs, "ValidatingAdmissionPolicy"))
    assert names == ["falapp-operator-falapp-entitlements", "falapp-operator-falapp-tenancy",
                     "falapp-operator-operator-pod-writes", "falapp-operator-operator-replicaset-deletes"], names
    assert sorted(d["spec"]["policyName"] for d in of_kind(docs, "ValidatingAdmissionPolicyBinding")) == names
    kubectl.apply(docs)
    kubectl.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": ALLOWED_PRIORITY}, "value": 1000})
    try:
        for name in names:
            # the apiserver type-checks every expression against the FalApp and MachineType schemas
            def type_checked(name: str = name) -> dict | None:
                obj = kubectl.get("validatingadmissionpolicy", name)
                status = obj.get("status", {})
                return status if status.get("observedGeneration") == obj["metadata"]["generation"] else None
            status = wait_until(type_checked, timeout=30, message=f"{name} type-checked")
            assert not status.get("typeChecking", {}).get("expressionWarnings"), status
        # policies are loaded asynchronously: wait until it refuses what it must
        probe = falapp("policy-probe", ["XS"], gpus=0, priorityClassName="system-node-critical")
        wait_until(lambda: "spec.priorityClassName" in kubectl.in_namespace("default").apply(
            probe, "--dry-run=server", check=False).stderr, timeout=30, message="policy in force")
        yield
    finally:
        for name in names:
            for kind in POLICY_KINDS:
                kubectl.run("delete", kind, name, "--ignore-not-found")
        kubectl.run("delete", "priorityclass", ALLOWED_PRIORITY, "--ignore-not-found")


@pytest.fixture
def tenant(kctl: Kubectl, namespace: str, policy) -> Kubectl:
    """kubectl as a user holding FalApp rights only, in the test's namespace (which also holds the
    objects the attacks point at)."""
    kctl.run("create", "role", "falapp-author", f"--verb={FALAPP_VERBS}", "--resource=falapps.fal.ai",
             "--resource=falapps.fal.ai/scale")
    kctl.run("create", "rolebinding", "falapp-author", "--role=falapp-author", f"--user={TENANT}")
    kctl.run("create", "secret", "generic", "db-creds", "--from-literal=password=hunter2")
    kctl.run("create", "secret", "generic", "public", "--from-literal=motd=hello")
    kctl.run("create", "secret", "docker-registry", "regcred", "--docker-server=localhost:5000",
             "--docker-username=u", "--docker-password=p")
    kctl.run("create", "configmap", "settings", "--from-literal=mode=prod")
    kctl.run("create", "serviceaccount", "builder")
    kctl.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    user = kctl.as_user(TENANT)
    # RBAC is cached by the apiserver: wait until the tenant's role is in force
    wait_until(lambda: user.run("auth", "can-i", "create", "falapps.fal.ai", check=False).returncode == 0,
               timeout=30, message="tenant role in force")
    return user


def grant(kctl: Kubectl, user: Kubectl, verb: str, resource: str, name: str | None) -> None:
    """Give the tenant one more right and wait until the apiserver applies it."""
    role = f"grant-{uuid.uuid4().hex[:6]}"
    kctl.run("create", "role", role, f"--verb={verb}", f"--resource={resource}",
             *([f"--resource-name={name}"] if name else []))
    kctl.run("create", "rolebinding", role, f"--role={role}", f"--user={TENANT}")
    target = f"{resource}/{name}" if name else resource
    wait_until(lambda: user.run("auth", "can-i", verb, target, check=False).returncode == 0,
               timeout=30, message=f"{TENANT} may {verb} {target}")


def refused(user: Kubectl, app: dict) -> str:
    """Apply as the tenant; return what kubectl answered, which must be a refusal."""
    result = user.apply(app, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert user.run("get", "falapp", app["metadata"]["name"], check=False).returncode != 0
    return result.stderr


def accepted(user: Kubectl, app: dict, timeout: float = 30) -> None:
    """Apply as the tenant; it must be created (retried while a new grant settles)."""
    answers: list[str] = []

    def apply() -> bool:
        result = user.apply(app, check=False)
        answers.append(result.stderr)
        return result.returncode == 0
    try:
        wait_until(apply, timeout=timeout, interval=0.5, message=f"{app['metadata']['name']} accepted")
    except AssertionError as e:
        raise AssertionError(f"{e}; kubectl answered: {answers[-1]}") from None
    assert user.get("falapp", app["metadata"]["name"])["spec"]


# --- the policy: objects the pods would read, the identity they run as, their priority ---------------
@dataclass(frozen=True)
class Attack:
    spec: dict[str, Any]
    message: str  # what kubectl answers; {who} and {ns} are filled in
    grant: tuple[str, str, str | None] | None = None  # (verb, resource, name) that makes it legitimate
    allowed_spec: dict[str, Any] | None = None  # else: a harmless variant that is accepted
    needs: tuple[tuple[str, str, str | None], ...] = field(default_factory=tuple)  # rights held beforehand
    name: str = "attack"
    allowed_name: str | None = None  # the counterpart's name, when the name is the attack


def _mount(volume: dict) -> dict:
    return {"volumes": [volume], "volumeMounts": [{"name": volume["name"], "mountPath": "/mnt/v"}]}


SECRET_READ = ("get", "secrets", "db-creds")
POLICY_ATTACKS = {
    "envFrom-secretRef": Attack(
        {"envFrom": [{"secretRef": {"name": "db-creds"}, "prefix": "APP_"}]},
        "spec.envFrom[0].secretRef: user {who} may not get secret db-creds in namespace {ns}", SECRET_READ),
    "env-secretKeyRef": Attack(
        {"env": [{"name": "MODE", "value": "x"},
                 {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}}}]},
        "spec.env[1].valueFrom.secretKeyRef: user {who} may not get secret db-creds in namespace {ns}",
        SECRET_READ),
    "env-configMapKeyRef": Attack(
        {"env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}]},
        "spec.env[0].valueFrom.configMapKeyRef: user {who} may not get configmap settings in namespace {ns}",
        ("get", "configmaps", "settings")),
    "envFrom-configMapRef": Attack(
        {"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}]},
        "spec.envFrom[0].configMapRef: user {who} may not get configmap settings in namespace {ns}",
        ("get", "configmaps", "settings")),
    "volume-secret": Attack(
        _mount({"name": "creds", "secret": {"secretName": "db-creds"}}),
        "spec.volumes[0].secret: user {who} may not get secret db-creds in namespace {ns}", SECRET_READ),
    "volume-configMap": Attack(
        _mount({"name": "conf", "configMap": {"name": "settings"}}),
        "spec.volumes[0].configMap: user {who} may not get configmap settings in namespace {ns}",
        ("get", "configmaps", "settings")),
    "volume-pvc": Attack(
        _mount({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}),
        "spec.volumes[0].persistentVolumeClaim: user {who} may not get persistentvolumeclaim data in "
        "namespace {ns}", ("get", "persistentvolumeclaims", "data")),
    "imagePullSecrets": Attack(
        {"imagePullSecrets": [{"name": "regcred"}]},
        "spec.imagePullSecrets[0]: user {who} may not get secret regcred in namespace {ns}",
        ("get", "secrets", "regcred")),
    # the second reference is the one refused: the first (a readable Secret) passes
    "second-of-two-secrets": Attack(
        {"envFrom": [{"secretRef": {"name": "public"}, "prefix": "A_"},
                     {"secretRef": {"name": "db-creds"}, "prefix": "B_"}]},
        "spec.envFrom[1].secretRef: user {who} may not get secret db-creds in namespace {ns}", SECRET_READ,
        needs=(("get", "secrets", "public"),)),
    # many keys of one Secret: one check, named by its first reference
    "same-secret-many-keys": Attack(
        {"env": [{"name": f"K{i}", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}}}
                 for i in range(40)]},
        "spec.env[0].valueFrom.secretKeyRef: user {who} may not get secret db-creds in namespace {ns}",
        SECRET_READ),
    "serviceAccountName": Attack(
        {"serviceAccountName": "builder"},
        "spec.serviceAccountName: user {who} may not create pods in namespace {ns}, so may not run pods as "
        "serviceaccount builder", ("create", "pods", None)),
    "serviceAccount-token": Attack(
        {"automountServiceAccountToken": True},
        "spec.automountServiceAccountToken: user {who} may not create pods in namespace {ns}, so may not mount "
        "the token of serviceaccount default", ("create", "pods", None)),
    "podLabels-joining-another-service": Attack(
        {"podLabels": {"app.kubernetes.io/part-of": "search", "app": "web"}},
        "spec.podLabels[app]: user {who} may not create pods in namespace {ns}, so may only set the pod label "
        "keys allowed for FalApps", ("create", "pods", None)),
    "podAnnotations-cni-network": Attack(
        {"podAnnotations": {"k8s.v1.cni.cncf.io/networks": "kube-system/host-rdma"}},
        "spec.podAnnotations[k8s.v1.cni.cncf.io/networks]: user {who} may not create pods in namespace {ns}, "
        "so may only set the pod annotation keys allowed for FalApps", ("create", "pods", None)),
    "priorityClass-system-node-critical": Attack(
        {"priorityClassName": "system-node-critical"},
        "spec.priorityClassName: priority class system-node-critical is not allowed for FalApps "
        f"(allowed: {ALLOWED_PRIORITY})", allowed_spec={"priorityClassName": ALLOWED_PRIORITY}),
    "priorityClass-system-cluster-critical": Attack(
        {"priorityClassName": "system-cluster-critical"},
        "spec.priorityClassName: priority class system-cluster-critical is not allowed for FalApps",
        allowed_spec={}),
    "priorityClass-not-listed": Attack(
        {"priorityClassName": "team-b-urgent"},
        "spec.priorityClassName: priority class team-b-urgent is not allowed for FalApps",
        allowed_spec={"priorityClassName": ALLOWED_PRIORITY}),
}


def attempt(row: Attack, kctl: Kubectl, tenant: Kubectl, namespace: str) -> str:
    """The attack as the tenant (refused: kubectl's answer is returned), then its counterpart (accepted)."""
    for right in row.needs:
        grant(kctl, tenant, *right)
    app = falapp(row.name, ["XS"], gpus=0, **row.spec)
    answer = refused(tenant, app)
    assert row.message.format(who=TENANT, ns=namespace) in answer, answer
    if row.grant:
        grant(kctl, tenant, *row.grant)
        accepted(tenant, app)
    else:
        accepted(tenant, falapp(row.allowed_name or row.name, ["XS"], gpus=0, **(row.allowed_spec or {})))
    return answer


@pytest.mark.parametrize("attack", sorted(POLICY_ATTACKS))
def test_policy_refuses_what_the_author_may_not_do(attack: str, kctl: Kubectl, tenant: Kubectl,
                                                   namespace: str):
    answer = attempt(POLICY_ATTACKS[attack], kctl, tenant, namespace)
    assert "denied request" in answer and "forbidden" in answer, answer


# --- the schema: where pods may land, what they may claim to be -------------------------------------
TOLERATION = {"key": "example.com/dedicated", "operator": "Equal", "value": "team-a", "effect": "NoSchedule"}
RESERVED_TAINT = "is reserved: a toleration key may not be under"
SCHEMA_ATTACKS = {
    "toleration-without-key": Attack(
        {"tolerations": [{"operator": "Exists"}]}, "spec.tolerations[0].key: Required value",
        allowed_spec={"tolerations": [TOLERATION]}),
    "toleration-control-plane": Attack(
        {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                          "effect": "NoSchedule"}]},
        f"spec.tolerations[0].key: Invalid value: key node-role.kubernetes.io/control-plane {RESERVED_TAINT}",
        allowed_spec={"tolerations": [TOLERATION]}),
    "toleration-gpu-taint": Attack(
        {"tolerations": [TOLERATION, {"key": "nvidia.com/gpu", "operator": "Exists"}]},
        f"spec.tolerations[1].key: Invalid value: key nvidia.com/gpu {RESERVED_TAINT}",
        allowed_spec={"tolerations": [TOLERATION]}),
    "env-NVIDIA_VISIBLE_DEVICES": Attack(
        {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]},
        'spec.env[0].name: Invalid value: "NVIDIA_VISIBLE_DEVICES": names starting with NVIDIA_ are reserved',
        allowed_spec={"env": [{"name": "VISIBLE_DEVICES", "value": "all"}]}),
    "envFrom-prefix-NVIDIA_": Attack(
        {"envFrom": [{"prefix": "NVIDIA_", "configMapRef": {"name": "settings"}}]},
        'spec.envFrom[0].prefix: Invalid value: "NVIDIA_": prefix may not start with NVIDIA_',
        allowed_spec={"envFrom": [{"prefix": "APP_", "configMapRef": {"name": "settings"}}]},
        needs=(("get", "configmaps", "settings"),)),
    "annotation-pod-deletion-cost": Attack(
        {"podAnnotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}},
        "spec.podAnnotations: Invalid value: podAnnotations key controller.kubernetes.io/pod-deletion-cost "
        "is reserved", allowed_spec={"podAnnotations": {"example.com/owner": "team-a"}}),
    "annotation-apparmor-unconfined": Attack(
        {"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
        "spec.podAnnotations: Invalid value: podAnnotations key "
        "container.apparmor.security.beta.kubernetes.io/app is reserved",
        allowed_spec={"podAnnotations": {"example.com/owner": "team-a"}}),
    "annotation-do-not-disrupt": Attack(
        {"podAnnotations": {"karpenter.sh/do-not-disrupt": "true"}},
        "spec.podAnnotations: Invalid value: podAnnotations key karpenter.sh/do-not-disrupt is reserved",
        allowed_spec={"podAnnotations": {"example.com/owner": "team-a"}}),
    "label-invalid-key": Attack(
        {"podLabels": {"bad key!": "x"}},
        "spec.podLabels: Invalid value: podLabels key bad key! is not a qualified name",
        allowed_spec={"podLabels": {"app.kubernetes.io/part-of": "search"}}),
    "name-too-long": Attack(
        {}, "metadata.name: Too long: may not be more than 63", name="a" * 64, allowed_name="a" * 63),
    "name-with-dots-and-ports": Attack(
        {"ports": [{"containerPort": 8080}]},
        "metadata.name: Invalid value: metadata.name must be a DNS-1035 label when spec.ports is set",
        name="web.v2", allowed_name="web-v2", allowed_spec={"ports": [{"containerPort": 8080}]}),
}


@pytest.mark.parametrize("attack", sorted(SCHEMA_ATTACKS))
def test_schema_refuses_what_no_author_may_do(attack: str, kctl: Kubectl, tenant: Kubectl, namespace: str):
    answer = attempt(SCHEMA_ATTACKS[attack], kctl, tenant, namespace)
    assert "is invalid" in answer, answer


def test_editing_another_authors_app_is_checked_as_the_editor(kctl: Kubectl, tenant: Kubectl,
                                                               namespace: str):
    """An admin's app reads db-creds; the tenant may not repoint it (a new image would read the Secret
    with the tenant's code), but metadata-only updates (labels, finalizers) and scaling are not
    re-checked."""
    app = falapp("shared", ["XS"], gpus=0, envFrom=[{"secretRef": {"name": "db-creds"}}])
    kctl.apply(app)
    app["spec"]["image"] = "registry.example.com/exfiltrate:1"
    answer = tenant.apply(app, check=False)
    assert answer.returncode != 0
    assert f"spec.envFrom[0].secretRef: user {TENANT} may not get secret db-creds in namespace {namespace}" \
        in answer.stderr, answer.stderr
    assert kctl.get("falapp", "shared")["spec"]["image"] == "registry.example.com/app:1"

    tenant.run("label", "falapp", "shared", "team=a")
    assert kctl.get("falapp", "shared")["metadata"]["labels"] == {"team": "a"}
    tenant.run("scale", "falapp", "shared", "--replicas=3")
    assert kctl.get("falapp", "shared")["spec"]["replicas"] == 3


def test_distinct_objects_checked_per_app_are_bounded(kctl: Kubectl, tenant: Kubectl, namespace: str):
    """Each authorizer call costs a share of the policy's CEL budget: an app may reference at most 20
    distinct Secrets/ConfigMaps/PVCs, and one over that is refused with a message saying so (not a
    cost-budget error). At the bound, with the spec's lists at their maximum size, it is accepted."""
    grant(kctl, tenant, "get", "configmaps", None)
    grant(kctl, tenant, "create", "pods", None)
    env = [{"name": f"V{i}", "valueFrom": {"configMapKeyRef": {"name": f"c{i % 19}", "key": "k"}}}
           for i in range(256)]
    at_bound = falapp("many", ["XS"], gpus=0, env=env, envFrom=[{"configMapRef": {"name": "c0"}}] * 64,
                      volumes=[{"name": f"v{i}", "configMap": {"name": "c1"}} for i in range(64)],
                      imagePullSecrets=[{"name": "regcred"}], serviceAccountName="builder")
    answer = refused(tenant, at_bound)  # regcred: the 20th object, not readable yet
    assert f"spec.imagePullSecrets[0]: user {TENANT} may not get secret regcred" in answer, answer
    grant(kctl, tenant, "get", "secrets", "regcred")
    accepted(tenant, at_bound)

    over = falapp("over", ["XS"], gpus=0, envFrom=[{"configMapRef": {"name": f"c{i}"}} for i in range(21)])
    answer = refused(tenant, over)
    assert "spec: references 21 distinct secrets, configmaps and persistentvolumeclaims; the admission " \
        "policy checks at most 20 per FalApp" in answer, answer


# --- entitlements: which namespaces may use a machine type -------------------------------------------
@pytest.fixture
def entitled_type(kubectl: Kubectl, namespace: str, policy) -> str:
    """A MachineType only namespaces labelled `fal-test/team=<namespace>`, and not `tier=sandbox`, may
    use; returns its displayName."""
    name = f"t{uuid.uuid4().hex[:6]}-dedicated"
    kubectl.apply({"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": name},
                   "spec": {"displayName": name.upper(), "gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"},
                            "resources": {"cpu": "1", "memory": "1Gi"}, "nodeSelector": {"pool": name},
                            "namespaceSelector": {
                                "matchLabels": {"fal-test/team": namespace},
                                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["sandbox"]}]}}})
    yield name.upper()
    kubectl.run("delete", "machinetype", name, "--ignore-not-found")


def test_machine_type_entitlements_by_namespace(kubectl: Kubectl, tenant: Kubectl, namespace: str,
                                                entitled_type: str):
    """A type whose namespaceSelector does not match the app's namespace is refused at apply, naming
    the entry (any spelling of the type); the same app is accepted once the namespace is labelled, and
    refused again on its next spec change once the namespace no longer matches."""
    listed = entitled_type.lower().replace("dedicated", "DEDICATED")
    app = falapp("entitled", ["XS", listed], gpus=None)
    message = f"spec.machineTypes[1]: namespace {namespace} may not use machine type {listed}"
    # the policy reads MachineTypes from a cache (and resolves their kind up to ~30 s after the CRD is
    # created): wait until it has the new one
    wait_until(lambda: message in tenant.apply(app, check=False).stderr, timeout=90, interval=1,
               message="entitlement refused")

    kubectl.run("label", "namespace", namespace, f"fal-test/team={namespace}")
    accepted(tenant, app)

    kubectl.run("label", "namespace", namespace, "tier=sandbox")
    app["spec"]["replicas"] = 2
    wait_until(lambda: message in tenant.apply(app, check=False).stderr, timeout=30,
               message="entitlement refused after the namespace changed")
    # types without a selector stay open to every namespace
    accepted(tenant, falapp("open", ["XS", "GPU-H100"], gpus=None))


def test_tenant_app_pods_meet_restricted_pod_security(kubectl: Kubectl, kctl: Kubectl, tenant: Kubectl,
                                                      namespace: str, running_operator):
    """A namespace may enforce Pod Security "restricted": the operator's pods for a tenant's app are
    admitted there (the ReplicaSet's pod creation would fail otherwise)."""
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/enforce-version=latest")
    accepted(tenant, falapp("confined", ["XS"], gpus=0, replicas=2))
    pods = wait_until(lambda: len(items := kctl.get("pods", None, "-l", "fal.ai/app=confined")["items"]) == 2
                      and items, timeout=60, message="the app's pods created")
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    refusals = [e["message"] for e in kctl.get("events")["items"] if e["reason"] == "FailedCreate"]
    assert not refusals, refusals


def test_the_operators_account_may_only_mark_pods_for_deletion(kctl: Kubectl, namespace: str, policy):
    """The chart's third policy: the operator's ServiceAccount may set a pod's pod-deletion-cost and
    nothing else, so its credentials cannot swap an image or relabel a pod."""
    operator = "system:serviceaccount:falapp-system:falapp-operator"
    kctl.run("create", "role", "pod-patcher", "--verb=get,patch", "--resource=pods")
    kctl.run("create", "rolebinding", "pod-patcher", "--role=pod-patcher", f"--user={operator}")
    kctl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "registry.example.com/db:1"}]}})
    as_operator = kctl.as_user(operator)
    wait_until(lambda: as_operator.run("auth", "can-i", "patch", "pods", check=False).returncode == 0,
               timeout=30, message="the operator's role in force")
    mark = '{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"-1000"}}}'
    as_operator.run("patch", "pod", "victim", "--type=merge", "-p", mark)
    for kind, patch in (("strategic", '{"spec":{"containers":[{"name":"c","image":"evil.example.com/miner:1"}]}}'),
                        ("merge", '{"metadata":{"labels":{"app":"web"}}}'),
                        ("merge", '{"metadata":{"annotations":{"sidecar.istio.io/inject":"false"}}}')):
        answer = as_operator.run("patch", "pod", "victim", f"--type={kind}", "-p", patch, check=False)
        assert answer.returncode != 0, patch
        assert "may only set a pod's controller.kubernetes.io/pod-deletion-cost annotation" in answer.stderr, answer
    pod = kctl.get("pod", "victim")
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/db:1"
    assert pod["metadata"]["labels"] == {"app": "db"}



def deployment_of_pods(name: str, labels: dict, **pod_spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"d": name}},
                     "template": {"metadata": {"labels": {**labels, "d": name}},
                                  "spec": {"containers": [{"name": "c", "image": "registry.example.com/x:1"}],
                                           **pod_spec}}}}


def test_the_operators_account_may_only_delete_a_falapps_pods_no_node_runs_and_its_replicasets(
        kctl: Kubectl, namespace: str, policy):
    """The chart's third and fourth policies: a deleted Deployment's pods no node runs go at once, their
    ReplicaSets first; no other pod, and no ReplicaSet but a labelled one a Deployment controls, may be
    deleted with the operator's credentials."""
    operator = "system:serviceaccount:falapp-system:falapp-operator"
    kctl.run("create", "role", "deleter", "--verb=get,list,delete", "--resource=pods,replicasets.apps")
    kctl.run("create", "rolebinding", "deleter", "--role=deleter", f"--user={operator}")
    app = {"fal.ai/app": "llm"}
    kctl.apply([deployment_of_pods("waiting", app, nodeSelector={"example.com/no-such": "node"}),
                deployment_of_pods("bound", app, nodeName="no-such-node"),  # bound at creation
                deployment_of_pods("db", {"app": "db"}, nodeSelector={"example.com/no-such": "node"})])

    def pods_of(name: str) -> list[dict]:
        return kctl.get("pods", None, "-l", f"d={name}")["items"]

    pods = {d: wait_until(lambda d=d: pods_of(d), timeout=60, message=f"{d}'s pod")[0]
            for d in ("waiting", "bound", "db")}
    sets = {d: kctl.get("replicasets", None, "-l", f"d={d}")["items"][0] for d in ("waiting", "db")}
    as_operator = kctl.as_user(operator)
    wait_until(lambda: as_operator.run("auth", "can-i", "delete", "pods", check=False).returncode == 0,
               timeout=30, message="the operator's role in force")
    pod_refusal = "may only delete pods labelled fal.ai/app, controlled by a ReplicaSet, that no node runs"
    refusals = (("pod", pods["bound"], pod_refusal), ("pod", pods["db"], pod_refusal),
                ("replicaset", sets["db"], "may only delete ReplicaSets labelled fal.ai/app and controlled by a "
                                           "Deployment"))
    for kind, obj, message in refusals:
        answer = as_operator.run("delete", kind, obj["metadata"]["name"], "--wait=false", check=False)
        assert answer.returncode != 0 and message in answer.stderr, (kind, obj["metadata"]["name"], answer)
    as_operator.run("delete", "pod", pods["waiting"]["metadata"]["name"], "--wait=false")
    as_operator.run("delete", "replicaset", sets["waiting"]["metadata"]["name"], "--wait=false")
    for kind, obj, _ in refusals:
        assert kctl.get(kind, obj["metadata"]["name"])["metadata"]["uid"] == obj["metadata"]["uid"]
