"""A deterministic simulator that drives the operator's real planner through a model of a cluster.

- `world`: the cluster model (nodes, pods, Deployments, scheduler, kubelet, Deployment controller,
  autoscaler announcements), on a simulated clock. It knows nothing of the operator.
- `operator`: one reconcile of one app exactly as `k8s.controller.Controller.reconcile_app` assembles
  it (ClusterCache, children_state, pod_view, plan, child_writes, status last), against the world's
  objects, optionally crashing after k writes.
- `scenario`: what a test generates (apps, nodes, steps of events) and the loop that runs it, with a
  quiet phase at the end in which the cluster must settle.
- `invariants`: the properties checked after every step and at the end.
- `strategies`: hypothesis strategies generating scenarios.
"""
