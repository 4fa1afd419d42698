"""Test-side access to the local cluster through the real kubectl, as a user would drive it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class KubectlError(RuntimeError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]):
        super().__init__(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        self.stderr = result.stderr
        self.stdout = result.stdout


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path
    namespace: str | None = None
    user: str | None = None  # impersonated (`--as`); the admin kubeconfig may impersonate anyone

    def in_namespace(self, namespace: str) -> Kubectl:
        return replace(self, namespace=namespace)

    def as_user(self, user: str) -> Kubectl:
        """The same kubectl acting as `user`, with only that user's rights."""
        return replace(self, user=user)

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig)]
        if self.namespace:
            argv += ["--namespace", self.namespace]
        if self.user:
            argv += ["--as", self.user]
        argv += list(args)
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(list(args), result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str | None = None, *selectors: str) -> Any:
        return self.json("get", kind, *([name] if name else []), *selectors)

    def apply(self, manifest: dict | list | str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(
            manifest if isinstance(manifest, list) else [manifest])
        return self.run("apply", "-f", "-", *extra, input=text, check=check)


def wait_until(condition: Callable[[], T], timeout: float = 30, interval: float = 0.2,
               message: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
        time.sleep(interval)


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
