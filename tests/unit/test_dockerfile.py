"""The operator image (Dockerfile) as far as it can be checked without a Docker engine: a pinned slim
base, a non-root user matching the chart, the CLI as entrypoint, and the chart pointing at it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "falapp-operator"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_images() -> list[str]:
    args = {}
    images = []
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name, value)
        if word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def test_base_is_a_pinned_slim_python_311():
    images = base_images()
    assert len(images) == 2  # build stage and runtime stage, same base
    for image in images:
        name, _, tag = image.partition("@")[0].partition(":")
        assert name in ("python", "docker.io/library/python"), image
        # a full patch version (3.11.N), a slim variant, never a floating tag
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), image
        if "@" in image:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.partition("@")[2]), image


def test_runs_as_the_non_root_user_the_chart_expects():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0, users[-1]
    assert int(user) == 65532
    template = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {user}" in template and f"runAsGroup: {group}" in template
    # the user exists in the image (numeric ids resolve to a name for tools that need one)
    run = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert f"--uid {user}" in run and f"--gid {group}" in run


def test_entrypoint_is_the_operator_cli():
    [entrypoint] = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["falapp-operator", "run"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["falapp-operator"] == "falapp_operator.__main__:main"
    # the chart passes only flags: `run` comes from the entrypoint
    template = (CHART / "templates" / "deployment.yaml").read_text()
    assert "command:" not in template and "- run" not in template


def test_chart_default_image_is_this_image_at_the_package_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == version  # the image tag defaults to appVersion
    assert values["image"]["repository"].endswith("/falapp-operator") and values["image"]["tag"] == ""
    labels = " ".join(rest for word, rest in instructions() if word == "LABEL")
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_dockerignore_keeps_the_context_small():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything is excluded but what the build copies
    copied = {source for word, rest in instructions() if word == "COPY" and "--from" not in rest
              for source in rest.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "operator"}
    for path in copied:
        assert f"!{path.rstrip('/')}" in {line.rstrip("/") for line in lines}, path
