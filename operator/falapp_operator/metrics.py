"""Prometheus metrics `falapp_*`. Labels stay coarse: namespace and machine type, never object names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FALLBACKS = Counter("falapp_fallbacks_total", "Replicas moved to a less preferred machine type.",
                    ["namespace", "from_type", "to_type"])
RETURNS = Counter("falapp_returns_total", "Replicas returned to a more preferred machine type.",
                  ["namespace", "from_type", "to_type"])
PROBE_FAILURES = Counter("falapp_return_probe_failures_total",
                         "Return-to-preferred replicas that could not be scheduled.", ["namespace", "machine_type"])
REPLICAS = Gauge("falapp_replicas", "FalApp replicas by machine type and state (ready, not_ready).",
                 ["namespace", "machine_type", "state"])
PENDING_SECONDS = Histogram("falapp_unschedulable_seconds",
                            "How long a replica was unschedulable on a type before it fell back.",
                            ["machine_type"], buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600))
INSUFFICIENT = Gauge("falapp_insufficient_capacity_apps", "FalApps with replicas no listed type can take.",
                     ["namespace"])
APPS_LEFT_BEHIND = Gauge("falapp_apps_left_behind", "FalApps stored in a namespace that is gone (its deletion "
                         "left them behind): nothing can be written for them; delete them or create the namespace.")
RECONCILES = Counter("falapp_reconciles_total", "App reconciles by result (ok, error).", ["result"])
RECONCILE_SECONDS = Histogram("falapp_reconcile_duration_seconds", "Time spent in one app reconcile.",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
API_WRITES = Counter("falapp_api_writes_total", "Write requests the operator sent to the API server, by what "
                     "they write: apply, resize, delete, mark (pod-deletion-cost), status, machinetype_status, event.",
                     ["write"])
API_READS = Counter("falapp_api_reads_total", "Read requests the operator sent to the API server, by what they "
                    "read: get_<kind> (one object by name), list_<resource> (a page of a LIST), list_app_<resource> "
                    "(one app's children, read fresh), watch_<resource> (a watch started).", ["read"])
LISTED_SKIPPED = Counter("falapp_listed_objects_skipped_total", "Objects of a LIST (a watch's relist or the "
                         "periodic resync) left out because handling them failed, by resource; each is in the log "
                         "with its error. Anything above zero is a fault of the operator's to report.", ["resource"])
API_WAIT = Histogram("falapp_api_request_wait_seconds", "Seconds an app request waited for one of "
                     "FALAPP_REQUESTS_IN_FLIGHT slots, by priority: grow (the Deployment a replacement waits on), "
                     "history (a move's history), normal (shrinks, marks, deletions, full status, fresh reads), "
                     "low (status writes that take turns: counts only, a new app's first; events).", ["priority"],
                     buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
STATUS_COUNTS_RATE = Gauge("falapp_status_counts_rate", "FalApp status writes that take turns (counts only, a new "
                           "app's first) allowed a second now: "
                           "FALAPP_STATUS_COUNTS_RATE, lower while status writes take longer than "
                           "FALAPP_STATUS_COUNTS_LATENCY.")
STATUS_WRITES_WAITING = Gauge("falapp_status_writes_waiting", "FalApp status writes waiting for a turn: "
                              "counts-only ones, and new apps' first statuses while they only say the replicas "
                              "are starting.")
LEADER = Gauge("falapp_leader", "1 while this process reconciles: it holds the leader Lease, or runs without "
               "leader election.")
