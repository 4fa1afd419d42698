"""Operator settings: environment variables `FALAPP_*` (or CLI flags), with documented defaults."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FALAPP_")

    field_manager: str = Field("falapp-operator", description="Server-side apply field manager of children.")
    workers: int = Field(256, ge=1, description="Apps reconciled concurrently (a reconcile waits on API writes, not "
                         "on CPU: in a burst of fallbacks more of them overlap).")
    requests_in_flight: int = Field(
        48, ge=1, description="App requests (writes of Deployments, pods, FalApp status and events; reads of an "
        "app afresh) sent to the API server at once. More wait, those that start replacements (a Deployment that "
        "grows, a move's history) first, so that when many apps move at once each replacement is asked for before "
        "the others' tidying up; one that has waited a second behind more urgent ones gets every fourth slot.")
    api_request_timeout: float = Field(
        90.0, gt=0, description="Seconds an API request (not a watch) may go without a byte of its answer before "
        "the operator gives up on it and retries, as for any transient error: a connection that went silent (an "
        "API server gone without closing it) never answers. Keep it above the API server's --request-timeout "
        "(60 s by default), so that the server's own answer comes first.")
    status_counts_rate: float = Field(
        10.0, ge=1, description="FalApp status writes per second, across all apps, that only update counts and "
        "messages (each app's at most once a second besides); the apps waiting take turns, namespaces in turn "
        "and each namespace's apps oldest first. "
        "So does a new app's first status while it only says the replicas are starting on the app's first "
        "choice (until then the app shows observedGeneration 0: InProgress to kstatus). Conditions that turn, "
        "moves and new generations of an app already written are written at once.")
    status_first_wait: float = Field(
        10.0, ge=0, description="Seconds at most a new app's first status waits for a turn (see "
        "status_counts_rate), from its first wait until it is written; then it goes without one, still after "
        "other apps' placement requests. Until then `kubectl get` shows no columns and an HPA aimed at the app "
        "has no status.selector; 0 writes every first status at once.")
    status_counts_latency: float = Field(
        0.05, gt=0, description="Seconds a FalApp status write may take (a moving average of the API server's "
        "answers) with counts-only writes at status_counts_rate; beyond it their rate falls in proportion, down "
        "to 1 a second: when the API server is slow, its time goes to placement, and counts wait.")
    event_batch_window: float = Field(
        0.2, ge=0, description="Seconds an event of an app's pods or children (Deployments, Service) waits for "
        "others about the same app before the app is reconciled: one reconcile for a burst (a rollout's pods are "
        "created, bound and become Ready within moments of each other), and so does a node lost (a pool's nodes "
        "go one after another) unless it was a fixed-size type's last. Spec changes, that last node lost and "
        "decisions falling due are not delayed; 0 reconciles at every event.")
    progress_batch_window: float = Field(
        1.0, ge=0, description="Seconds a pod's mere progress waits for other events about the same app before "
        "the app is reconciled (event_batch_window if that is longer): a replica made, bound or Ready while the app is "
        "only starting or running replicas where it prefers changes its counts alone, so a slower pass saves "
        "reconciles when thousands of replicas start at once. News waits event_batch_window and brings the "
        "pass forward: unschedulable, failing, deleted, no longer Ready, the replica that makes the app Ready, "
        "and any event of an app moving a replica, off its preferred type with a move up to make, with a "
        "replica waiting on its unschedulable timeout, rolling out, or whose Ready condition says more than "
        "starting or running. A pod none of the app's Deployments made is no replica: never news (but its deletion "
        "a resync finds, known by uid alone).")
    metrics_port: int = Field(8080, ge=0, description="Prometheus /metrics port; 0 turns it off.")
    machine_type_status_delay: float = Field(
        2.0, ge=0, description="Seconds to batch capacity changes before writing MachineType status.")
    error_backoff_max: float = Field(
        60.0, gt=0, description="Longest retry delay after a failed reconcile; also the retry period of a "
        "FalApp whose writes the API refuses (quota, RBAC, invalid object).")
    requests_failing_after: float = Field(
        120.0, ge=0, description="Seconds an app's reconciles may keep failing on errors worth retrying (a "
        "webhook down answers 500 to every write, the API server overloaded 429) before a Warning event "
        "RequestsFailing on the app says so with the API's message; retrying goes on either way.")
    resync_period: float = Field(
        36000.0, ge=0, description="Seconds between full LISTs of machine types, Karpenter NodePools, namespaces, "
        "nodes and pods that correct the catalogue and the capacity view (and the namespaces known) for anything "
        "the watches missed; 0 turns it off. A safety net for what no known path loses (10 hours, as "
        "controller-runtime's SyncPeriod): each of those watches lists its resource again (and finds what was "
        "deleted meanwhile) whenever its version expires. At 2000 nodes and 5000 pods one resync is 18 LIST pages.")
    scale_signal_linger: float = Field(
        300.0, ge=0, description="Seconds the autoscalers' Events (TriggeredScaleUp, NotTriggerScaleUp, Karpenter's "
        "Nominated and FailedScheduling) are still watched after the last of the apps' replicas waiting "
        "unschedulable was placed or went. They are watched only while one waits (in its namespace, where FalApps "
        "are watched in given namespaces): the API server reads Events from etcd (every Event, filtered after), "
        "so an idle cluster's are never listed. A replica found "
        "unschedulable starts the watches again, each with a LIST: what an autoscaler said meanwhile is taken.")
    scheduler_names: str = Field(
        "default-scheduler", description="Comma-separated spec.schedulerName values whose pending pods claim room "
        "in the operator's view (so freed room is promised to one app at a time): the default scheduler's, which "
        "the operator's replicas ask for, and any a mutating webhook gives them instead (e.g. HAMi's or "
        "Volcano's; the operator warns when it sees one). A pending pod for another scheduler claims nothing: one "
        "labelled as a replica that no scheduler ever looks at would hide its room from every app.")
    watch_namespaces: str = Field(
        "", description="Comma-separated namespaces whose FalApps are managed; empty: all (set by --namespace).")
    # Leader election (the chart turns it on; a single local process, as in the demo, runs without it).
    # Timing as in Kubernetes' own controllers: the leader stops writing renew_deadline after its last
    # successful renewal began, before any other candidate may take the Lease (lease_duration after it
    # last saw the Lease change).
    leader_elect: bool = Field(
        False, description="Reconcile only while holding a coordination.k8s.io Lease (set by --leader-elect).")
    leader_election_name: str = Field("falapp-operator", min_length=1, description="Name of the Lease.")
    leader_election_namespace: str = Field(
        "", description="Namespace of the Lease; empty: the pod's own namespace in a cluster, else 'default'.")
    leader_election_identity: str = Field(
        "", description="This candidate's identity in the Lease; empty: host name plus a random suffix.")
    lease_duration: float = Field(15.0, ge=2, description="Seconds a Lease not renewed keeps other candidates out.")
    renew_deadline: float = Field(10.0, ge=1, description="Seconds the leader keeps trying to renew before it "
                                  "stops writing and exits (to be restarted as a candidate).")
    retry_period: float = Field(2.0, ge=0.2, description="Seconds between renewals, and between a candidate's tries.")

    @model_validator(mode="after")
    def _some_scheduler(self) -> OperatorSettings:
        if not self.claiming_schedulers():
            raise ValueError("scheduler_names must name at least one scheduler (default-scheduler: the operator's "
                             "replicas ask for it unless a webhook gives them another)")
        return self

    @model_validator(mode="after")
    def _lease_timing(self) -> OperatorSettings:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration "
                             f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})")
        return self

    def manages(self, namespace: str) -> bool:
        return not self.watch_namespaces or namespace in self.watch_namespaces.split(",")

    def claiming_schedulers(self) -> frozenset[str]:
        """scheduler_names as a set."""
        return frozenset(n.strip() for n in self.scheduler_names.split(",") if n.strip())
