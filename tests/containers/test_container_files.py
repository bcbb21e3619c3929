"""Fast, offline checks of the container files: Dockerfile lint, CircleCI schema, scripts.

Each check also runs on a deliberately broken input, so that a linter or validator that
silently does nothing fails the test instead of passing it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bids_harmonize

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CIRCLECI = REPO / ".circleci" / "config.yml"
CONTAINER_DIR = REPO / "workflows" / "container"
SCRIPTS = ["setup-podman.sh", "make-base.sh", "wheelhouse.sh", "build.sh", "run-demo.sh"]
# repository scripts as CI commands name them: relative to the checkout, or under /repo where
# a job mounts the checkout into the image
SCRIPT_PATH = re.compile(
    r"(?<![\w/.-])(?:\./|/repo/)?((?:workflows|\.ci|tests|benchmarks)/[\w./-]+\.(?:sh|py))")


def _tool(name: str) -> str:
    """The tool installed with the 'test' extra, next to this Python first."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("hadolint"), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)


def _check_circleci(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.circle-ci", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfile_is_hadolint_clean():
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nRUN pip install requests\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert {"DL3006", "DL3008", "DL3013"} <= set(re.findall(r"DL\d{4}", result.stdout)), result.stdout


def test_dockerfile_pins():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm@sha256:[0-9a-f]{64}", base[1]), base
    # the torch the image installs is the torch the project pins for CI (.ci/run)
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    ci_pin = re.search(r"torch==([\w.]+)", (REPO / ".ci" / "run").read_text())
    assert torch and ci_pin and torch[1] == ci_pin[1]
    assert re.search(r"^ARG TORCH_VARIANT=cuda$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["bids_harmonize"\]$', text, re.M)
    assert re.search(r"^USER 1000:1000$", text, re.M)
    assert "NIPYPE_NO_ET=1" in text
    for label in ("version", "source", "licenses", "title", "description", "revision", "created"):
        assert f"org.opencontainers.image.{label}=" in text, label


def test_circleci_config_is_valid():
    result = _check_circleci(CIRCLECI)
    assert result.returncode == 0, result.stdout + result.stderr


def test_circleci_schema_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "config.yml"
    bad.write_text("version: 2.1\njobs:\n  build:\n    machine: {image: ubuntu-2404:current}\n"
                   "    steps:\n      - run: {nme: x}\nworkflows:\n  w:\n    jobs: [build]\n")
    assert _check_circleci(bad).returncode != 0


def _run_commands(config: dict) -> list[str]:
    commands = []
    for job in config["jobs"].values():
        for step in job.get("steps", []):
            if isinstance(step, dict) and "run" in step:
                run = step["run"]
                commands.append(run if isinstance(run, str) else run["command"])
    return commands


def test_circleci_scripts_exist_and_are_executable():
    config = yaml.safe_load(CIRCLECI.read_text())
    assert {"build", "test", "demo", "docs", "deploy"} <= set(config["jobs"])
    scripts = {m for command in _run_commands(config) for m in SCRIPT_PATH.findall(command)}
    assert {"workflows/container/build.sh", "workflows/container/run-demo.sh",
            "workflows/container/check_readme.py"} <= scripts, scripts
    for script in sorted(scripts):
        path = REPO / script
        assert path.is_file(), f"{script} (called by .circleci/config.yml) does not exist"
        assert os.access(path, os.X_OK), f"{script} (called by .circleci/config.yml) is not executable"
    # what the demo job diffs against is committed
    assert (CONTAINER_DIR / "demo-manifest.txt").is_file()


def test_circleci_deploys_only_on_tags():
    config = yaml.safe_load(CIRCLECI.read_text())
    (workflow,) = [w for name, w in config["workflows"].items() if name != "version"]
    jobs = {next(iter(j)) if isinstance(j, dict) else j: (j[next(iter(j))] if isinstance(j, dict) else {})
            for j in workflow["jobs"]}
    deploy = jobs["deploy"]["filters"]
    assert deploy["branches"]["ignore"] == "/.*/"
    assert re.fullmatch(deploy["tags"]["only"].strip("/"), bids_harmonize.__version__)
    for name in ("build", "test", "demo", "docs"):  # a tag's workflow runs them before deploy
        assert jobs[name]["filters"]["tags"]["only"] == "/.*/", name


def test_circleci_deploys_what_was_tested():
    """The pushed CUDA image is the one 'build_cuda' built and tested; 'latest' never moves
    on a release candidate; the release tools next to the PyPI token are hash-pinned."""
    config = yaml.safe_load(CIRCLECI.read_text())
    (workflow,) = [w for name, w in config["workflows"].items() if name != "version"]
    jobs = {next(iter(j)): j[next(iter(j))] for j in workflow["jobs"] if isinstance(j, dict)}
    assert "build_cuda" in jobs["deploy"]["requires"]
    assert jobs["build_cuda"]["filters"]["tags"] == jobs["deploy"]["filters"]["tags"]
    tested = "\n".join(_run_commands({"jobs": {"b": config["jobs"]["build_cuda"]}}))
    assert "--torch-variant cuda" in tested and "run-demo.sh" in tested
    assert "--junitxml" in tested and "docker save" in tested
    deploy = "\n".join(_run_commands({"jobs": {"d": config["jobs"]["deploy"]}}))
    assert "build.sh" not in deploy and "docker build" not in deploy  # nothing untested
    assert "docker load" in deploy and "image-id" in deploy
    latest = deploy[deploy.index('docker tag "$DOCKER_REPO:$CIRCLE_TAG" "$DOCKER_REPO:latest"'):]
    guard = deploy[:deploy.index('docker tag "$DOCKER_REPO:$CIRCLE_TAG" "$DOCKER_REPO:latest"')]
    (pattern,) = re.findall(r'if \[\[ "\$CIRCLE_TAG" =~ (\S+) \]\]', guard)
    assert latest and re.search(pattern, "1.2.0") and not re.search(pattern, "1.2.0rc1")
    assert "--require-hashes" in deploy and "--no-isolation" in deploy
    assert "pip install -q build twine" not in deploy
    pins = (REPO / ".circleci" / "release-requirements.txt").read_text()
    entries = re.findall(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", pins,
                         flags=re.M)
    names = {name for name, _, _ in entries}
    assert {"build", "twine", "setuptools", "wheel"} <= names
    requirement_lines = [line for line in pins.splitlines()
                         if line and not line.startswith(("#", "    --hash"))]
    assert len(requirement_lines) == len(entries)  # every requirement has a version and hash


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_bash_with_usage(script):
    path = CONTAINER_DIR / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stdout + result.stderr
    wrong = subprocess.run([str(path), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "usage:" in wrong.stderr


def test_build_script_takes_the_version_from_the_package():
    result = subprocess.run([str(CONTAINER_DIR / "build.sh"), "--print-version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == bids_harmonize.__version__


def test_demo_manifest_normalises_only_the_run_stamped_config(tmp_path):
    out = tmp_path / "out"
    for rel in ("dataset_description.json", "logs/config-20261125-141355_e56e1e0c.toml",
                "logs/CITATION.md", "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
                "logs/config-manual.toml"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    result = subprocess.run([str(CONTAINER_DIR / "run-demo.sh"), "--manifest", str(out)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "dataset_description.json", "logs/CITATION.md", "logs/config-RUN.toml",
        "logs/config-manual.toml", "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"]


def _check_readme(readme: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONTAINER_DIR / "check_readme.py"), str(readme)],
                          capture_output=True, text=True, timeout=300)


def test_readme_commands_options_and_links():
    result = _check_readme(REPO / "README.md")
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_check_finds_wrong_flags_and_links(tmp_path):
    (tmp_path / "exists.md").write_text("x")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [ok](exists.md) and [gone](missing.md).\n\n"
        "    bids_harmonize /bids /out participant --sloppy --no-such-flag\n\n"
        "```bash\nTEMPLATEFLOW_HOME=/t bids_harmonize-templates /t"
        " && bids_harmonize-synth x --subjectz 2\n```\n\n"
        "| option | meaning |\n| --- | --- |\n| `--nprocs`, `--made-up` | x |\n")
    result = _check_readme(readme)
    assert result.returncode == 1
    problems = result.stdout.splitlines()
    assert len(problems) == 4, problems
    assert any("--no-such-flag" in p for p in problems)
    assert any("bids_harmonize-synth" in p and "--subjectz" in p for p in problems)
    assert any("--made-up" in p for p in problems)
    assert any("missing.md" in p for p in problems)
