"""falapp-operator: machine-type placement with per-replica fallback for GPU apps."""
