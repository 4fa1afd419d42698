"""Kubernetes objects as they travel to and from the API server: parsed JSON, read by key.

FalApps and MachineTypes have typed models (`FalApp.from_body`, `MachineType.from_body`); the other
objects (Deployments, Services, pods, nodes, Events, Leases) are read a few fields at a time where they
are used. Their values are Any: JSON holds whatever the server sent.
"""

from collections.abc import Mapping
from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]  # an object as parsed from an answer, or built to be sent
JsonMapping: TypeAlias = Mapping[str, Any]  # read-only: any such object, kopf's bodies included
