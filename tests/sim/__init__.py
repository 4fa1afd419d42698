"""A deterministic simulator that drives the operator's real planner through a model of a cluster.

- `objects`: nodes, pods and Deployments of the model, rendered as Kubernetes API dicts.
- `world`: the cluster model's controllers (scheduler, kubelet, Deployment controller, autoscaler
  announcements, node loss and arrival) on a simulated clock. It knows nothing of the operator.
- `driver`: one reconcile of one app exactly as `k8s.controller.Controller.reconcile_app` assembles
  it (ClusterCache, children_state, pod_view, plan, child_writes, status last), against the world's
  objects, optionally crashing after k writes.
- `scenario`: what a test generates (apps, nodes, steps of events) and the loop that runs it, with a
  quiet phase at the end in which the cluster must settle.
- `invariants`: the properties checked after every step and at the end.
- `strategies`: hypothesis strategies generating scenarios.
- `known_bugs`: operator bugs found and not fixed yet, recognised in generated runs (each has a
  strict-xfail regression test in tests/unit/test_simulator.py).
"""
