"""The deployment manifests (k8s/) and images (docker/), checked offline.

k8s/ is rendered as ``kubectl kustomize k8s`` renders it: by a small renderer of the
kustomization fields we use (compared with the real kubectl where one is on PATH). Then:

- RayJob and RayService validate against the v1 CRD schemas in tests/data/kuberay-crds, made
  strict: a field the schema does not know fails here (the API server would drop it
  without a word, e.g. a misspelled ``imagePullPolicy`` inside a pod template).
- Namespace, ConfigMap, PodMonitor and PrometheusRule validate against small hand-written
  schemas of the fields they may use (no Kubernetes schema package is a dependency).
- The pieces agree: the training entrypoint composes with turnwise's Hydra config and
  points at the simulator sidecar's port and the scraped metrics port; the rollout actors
  fit the worker pods; the RayService's Serve config builds serving's app; the
  PrometheusRule is monitoring.rules' rendering.
- The Dockerfiles copy files that exist, install only constraints.txt pins, run as a
  non-root uid, and the simulator image's few packages really run ``sims.server``.
"""

from __future__ import annotations

import copy
import fnmatch
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from turnwise.config import compose_config

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
DOCKER = REPO / "docker"
CRDS = REPO / "tests" / "data" / "kuberay-crds"  # vendored, gzipped; provenance: README.md
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml.gz", "RayService": "ray.io_rayservices.yaml.gz",
             "RayCluster": "ray.io_rayclusters.yaml.gz"}  # fmt: skip
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PORT_NAME = re.compile(r"^(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA_SVC_NAME
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}


# -- rendering -------------------------------------------------------------------------
def render(directory: Path = K8S) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY`` for the fields k8s/kustomization.yaml uses; any
    other field fails, so this never silently renders something else than kustomize."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "labels", "resources",
                                    "images"}  # fmt: skip
    assert not unknown, f"the test renderer does not implement {unknown}; extend it"
    objects = [
        json.loads(json.dumps(doc))  # YAML aliases become independent copies
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((directory / name).read_text())
        if doc
    ]
    for obj in objects:
        _set_namespace(obj, kustomization.get("namespace"))
        _add_labels(obj, kustomization.get("labels", []))
        _set_images(obj, kustomization.get("images", []))
    return objects


def _set_namespace(obj: dict[str, Any], namespace: str | None) -> None:
    if namespace and obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace


def _add_labels(obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates")
        obj["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _set_images(obj: dict[str, Any], images: list[dict[str, str]]) -> None:
    for container in containers(obj):
        name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def test_the_renderer_agrees_with_kubectl_kustomize(rendered):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the offline renderer stands alone")
    run = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    theirs = {key(o): o for o in yaml.safe_load_all(run.stdout) if o}
    assert {key(o): o for o in rendered} == theirs


def test_every_object_is_in_the_namespace_labelled_and_uses_a_pushed_image(rendered):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    pushed = {f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    for obj in rendered:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "turnwise"
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta["namespace"] == kustomization["namespace"], key(obj)
    images = {c["image"] for c in containers(rendered)}
    assert images == pushed  # both images used, and nothing else


# -- schemas ---------------------------------------------------------------------------
def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields wherever it lists the known ones."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for word in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(word), dict):
            out[word] = strict(schema[word])
    for word in ("anyOf", "allOf", "oneOf"):
        if word in schema:
            out[word] = [strict(s) for s in schema[word]]
    return out


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress((CRDS / CRD_FILES[kind]).read_bytes()))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(version["schema"]["openAPIV3Schema"])


def schema_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


LABEL_KEY = r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL},
        "namespace": {"type": "string", "pattern": DNS_LABEL},
        "labels": {
            "type": "object",
            "propertyNames": {"pattern": LABEL_KEY},
            "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
        },
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _object(api_version: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", *fields],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            **fields,
        },
    }


def _strict_object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}  # fmt: skip


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = _strict_object({
    "matchLabels": STRING_MAP,
    "matchExpressions": {"type": "array", "items": _strict_object({
        "key": {"type": "string"},
        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": {"type": "array", "items": {"type": "string"}},
    }, ("key", "operator"))},
})  # fmt: skip
# Subsets of the Kubernetes and Prometheus Operator (monitoring.coreos.com/v1) schemas:
# the fields these objects may use, with their types; anything else fails.
SCHEMAS: dict[str, dict[str, Any]] = {
    "Namespace": _object("v1", "Namespace"),
    "ConfigMap": _object("v1", "ConfigMap", data={
        "type": "object", "propertyNames": {"pattern": r"^[-._a-zA-Z0-9]+$"},
        "additionalProperties": {"type": "string"}}),
    "PodMonitor": _object("monitoring.coreos.com/v1", "PodMonitor", spec=_strict_object({
        "jobLabel": {"type": "string"},
        "selector": LABEL_SELECTOR,
        "namespaceSelector": _strict_object({"any": {"type": "boolean"},
            "matchNames": {"type": "array", "items": {"type": "string"}}}),
        "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _strict_object({
            "port": {"type": "string"}, "path": {"type": "string"},
            "interval": DURATION, "scrapeTimeout": DURATION,
            "metricRelabelings": {"type": "array", "items": _strict_object({
                "sourceLabels": {"type": "array", "items": {"type": "string"}},
                "regex": {"type": "string"}, "targetLabel": {"type": "string"},
                "replacement": {"type": "string"},
                "action": {"enum": ["replace", "keep", "drop", "labeldrop", "labelkeep"]}},
                ())}}, ("port",))},
    }, ("selector", "podMetricsEndpoints"))),
    "PrometheusRule": _object("monitoring.coreos.com/v1", "PrometheusRule", spec=_strict_object({
        "groups": {"type": "array", "items": _strict_object({
            "name": {"type": "string"}, "interval": DURATION,
            "rules": {"type": "array", "items": _strict_object({
                "alert": {"type": "string"}, "record": {"type": "string"},
                "expr": {"type": "string"}, "for": DURATION,
                "labels": STRING_MAP, "annotations": STRING_MAP}, ("expr",))}},
            ("name", "rules"))}}, ("groups",))),
}  # fmt: skip


def test_kuberay_objects_validate_against_the_v1_crds(rendered):
    kuberay = [o for o in rendered if o["kind"] in CRD_FILES]
    assert {o["kind"] for o in kuberay} == {"RayJob", "RayService"}
    for obj in kuberay:
        assert obj["apiVersion"] == "ray.io/v1"
        assert schema_errors(crd_schema(obj["kind"]), obj) == [], key(obj)
        assert schema_errors(OBJECT_META, obj["metadata"]) == [], key(obj)


def test_the_strict_crd_schema_catches_a_misspelled_field(rendered):
    job = copy.deepcopy(only(rendered, "RayJob"))
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    head["rayStartParams"]["num-cpus"] = 0  # rayStartParams values must be strings
    errors = schema_errors(crd_schema("RayJob"), job)
    assert any("imagePullPolcy" in e for e in errors), errors
    assert any("rayStartParams.num-cpus" in e for e in errors), errors


def test_core_and_monitoring_objects_validate(rendered):
    kinds = {o["kind"] for o in rendered}
    assert kinds <= set(SCHEMAS) | set(CRD_FILES), "an object without a schema"
    assert "Secret" not in kinds  # credentials are created by hand, never kept here
    for obj in rendered:
        if obj["kind"] in SCHEMAS:
            assert schema_errors(SCHEMAS[obj["kind"]], obj) == [], key(obj)


# -- pods ------------------------------------------------------------------------------
def pod_groups(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(node type, group spec, pod template) of a RayJob's or RayService's cluster."""
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield "worker", group, group["template"]


def ray_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("RayJob", "RayService")]


def test_pods_have_valid_names_ports_and_run_as_non_root(rendered):
    for obj in ray_objects(rendered):
        for node_type, _, template in pod_groups(obj):
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] != 0
            names = [c["name"] for c in spec["containers"]]
            assert len(set(names)) == len(names)
            assert names[0] == f"ray-{node_type}"  # KubeRay takes the first as Ray's
            for container in spec["containers"]:
                ports = [p["name"] for p in container.get("ports", [])]
                assert len(set(ports)) == len(ports), container["name"]
                assert all(PORT_NAME.match(p) for p in ports), ports
                assert container["securityContext"]["allowPrivilegeEscalation"] is False


SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|SESSION", re.IGNORECASE)


def test_credentials_come_from_secrets_never_inline(rendered):
    for container in containers(rendered):
        for var in container.get("env", []):
            if SECRET_NAME.search(var["name"]):
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
        refs = [e for e in container.get("envFrom", []) if "secretRef" in e]
        if container["name"].startswith("ray-"):  # S3 access for checkpoints
            assert [r["secretRef"]["name"] for r in refs] == ["turnwise-s3"]
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id


# -- training --------------------------------------------------------------------------
def entrypoint_overrides(job: dict[str, Any]) -> list[str]:
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "learner"], words[:3]
    return words[3:]


def container(template: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in template["spec"]["containers"] if c["name"] == name]
    return found


def port(c: dict[str, Any], name: str) -> int:
    [number] = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return number


def test_the_training_entrypoint_composes_and_matches_the_pods(rendered):
    job = only(rendered, "RayJob")
    config = compose_config(entrypoint_overrides(job))
    assert config.ray.address == "auto"
    assert config.checkpoint.uri.startswith("s3://")
    assert config.resume is False and config.train.progress is False
    head = next(t for n, _, t in pod_groups(job) if n == "head")
    assert config.monitoring.metrics_host == "0.0.0.0"
    assert config.monitoring.metrics_port == port(container(head, "ray-head"), "driver-metrics")
    sim = config.env.simulator
    assert sim.mode == "connect"
    for _, _, template in pod_groups(job):  # every pod has the simulator the config names
        sidecar = container(template, "simulator")
        host, _, sim_port = sim.address.rpartition(":")
        assert host == "127.0.0.1" and int(sim_port) == port(sidecar, "simulator")
        args = sidecar["args"]
        assert args[args.index("--env") + 1] == config.env.id
        assert json.loads(args[args.index("--env-kwargs") + 1]) == config.env.kwargs


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_rollout_actors_and_the_evaluator_fit_on_the_workers(rendered):
    job = only(rendered, "RayJob")
    config = compose_config(entrypoint_overrides(job))
    groups = list(pod_groups(job))
    [head] = [g for n, g, _ in groups if n == "head"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # nothing is scheduled on the head
    workers = [(g, t) for n, g, t in groups if n == "worker"]
    worker_cpus = sum(
        g["replicas"] * cpus(container(t, "ray-worker")["resources"]["limits"]["cpu"])
        for g, t in workers
    )
    rollout_slots = sum(
        g["replicas"] * json.loads(json.loads(g["rayStartParams"]["resources"]))["turnwise_rollout"]
        for g, _ in workers
    )
    needed = config.actors.num_actors * config.actors.num_cpus
    needed += config.evaluator.num_cpus if config.evaluator.enabled else 0
    assert needed <= worker_cpus, (
        f"actors and evaluator need {needed} CPUs, workers have {worker_cpus}"
    )
    assert config.actors.num_actors <= rollout_slots


def test_the_clusters_run_the_pinned_ray_version(rendered):
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line)
    for obj in ray_objects(rendered):
        cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
        assert cluster["rayVersion"] == pins["ray"]


def pod_labels(node_type: str, template: dict[str, Any]) -> dict[str, str]:
    return {**template["metadata"]["labels"], "ray.io/node-type": node_type}  # KubeRay's label


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def test_pod_monitors_scrape_ports_the_selected_pods_have(rendered):
    pods = [(n, t) for o in ray_objects(rendered) for n, _, t in pod_groups(o)]
    monitors = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "PodMonitor"}
    assert set(monitors) == {"turnwise-driver", "turnwise-ray"}
    for monitor in monitors.values():
        selected = [t for n, t in pods if selects(monitor["spec"]["selector"], pod_labels(n, t))]
        assert selected, monitor["metadata"]["name"]
        for template in selected:
            ray_container = template["spec"]["containers"][0]
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert port(ray_container, endpoint["port"])
    assert port(container(driver_pod(pods), "ray-head"), "driver-metrics") == 9464


def driver_pod(pods: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    [head] = [t for n, t in pods if n == "head" and "driver-metrics" in json.dumps(t)]
    return head


# -- serving ---------------------------------------------------------------------------
def serve_config(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(only(rendered, "RayService")["spec"]["serveConfigV2"])


def test_the_serve_config_is_a_valid_serve_deployment(rendered):
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(rendered)
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    assert config["http_options"]["host"] == "0.0.0.0"  # reachable from its Service
    [app] = config["applications"]
    assert app["args"]["checkpoint"].startswith("s3://")
    token_env = app["args"]["token_env"]
    service = only(rendered, "RayService")
    for _, _, template in pod_groups(service):  # replicas read the token from a Secret
        env = {e["name"]: e for e in template["spec"]["containers"][0].get("env", [])}
        assert "secretKeyRef" in env[token_env]["valueFrom"]


def test_the_serve_config_builds_the_serving_app(rendered):
    if not (REPO / "serving" / "app.py").exists():
        pytest.skip("serving/ is not there yet: serving.app:build_app cannot be checked")
    import importlib

    [app] = serve_config(rendered)["applications"]
    module, _, name = app["import_path"].partition(":")
    build_app = getattr(importlib.import_module(module), name)
    application = build_app(app["args"])  # ServeArgs refuses unknown or bad arguments
    assert type(application).__name__ == "Application"


# What the RayService sets differently from serving/serve_config.yaml, on purpose.
DEPLOYED = {("http_options", "host"), ("args", "checkpoint"), ("args", "token_env")}


def test_the_serve_config_is_serving_s_own_but_for_host_store_and_token(rendered):
    local_path = REPO / "serving" / "serve_config.yaml"
    if not local_path.exists():
        pytest.skip("serving/serve_config.yaml is not there yet")
    ours, theirs = serve_config(rendered), yaml.safe_load(local_path.read_text())
    [app], [local_app] = ours["applications"], theirs["applications"]
    sections = [
        ("http_options", ours["http_options"], theirs["http_options"]),
        ("args", app["args"], local_app["args"]),
    ]
    for section, mine, local in sections:
        assert mine.keys() == local.keys(), section
        for name, value in local.items():
            if (section, name) not in DEPLOYED:
                assert mine[name] == value, (
                    f"serveConfigV2 {section}.{name} drifted from {local_path}"
                )
    rest = ("name", "route_prefix", "import_path", "deployments")
    assert {k: app[k] for k in rest} == {k: local_app[k] for k in rest}
    assert ours["proxy_location"] == theirs["proxy_location"]


# -- alerts ----------------------------------------------------------------------------
def test_the_prometheus_rule_is_the_generated_one():
    rules = pytest.importorskip("monitoring.rules")
    if "prometheusrule" not in getattr(rules.Format, "__args__", ()):
        pytest.skip("monitoring.rules cannot render a PrometheusRule yet")
    expected = rules.render(fmt="prometheusrule")
    assert (K8S / "prometheusrule.yaml").read_text() == expected, (
        "k8s/prometheusrule.yaml is stale: python -m monitoring.rules --format "
        "prometheusrule --out k8s/prometheusrule.yaml"
    )


# -- images ----------------------------------------------------------------------------
def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, parts = [], []
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        joined.append(" ".join([*parts, stripped]))
        parts = []
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


PIP_OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url",
                          "--extra-index-url", "-f", "--find-links"}  # fmt: skip


def pip_packages(words: list[str]) -> list[str]:
    """The packages a ``pip install ...`` command names (not options or their values)."""
    packages, skip = [], False
    for word in words[2:]:
        if skip or word.startswith("-"):
            skip = word in PIP_OPTIONS_WITH_VALUE
            continue
        packages.append(word)
    return packages


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN line, split at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


DOCKERFILES = ["Dockerfile", "Dockerfile.simulator"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_files_that_exist(name):
    copies = [shlex.split(args) for op, args in instructions(DOCKER / name) if op == "COPY"]
    assert copies
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:  # the build context is the repository root
            assert list(REPO.glob(source)), f"{name}: COPY {source} does not exist"


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes ``path`` (the last matching pattern decides; a
    pattern matching a directory matches what is inside it; ``**/`` matches any depth)."""
    result = False
    parts = path.split("/")
    for pattern in patterns:
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            depth = pattern.count("/") + 1
            hit = len(parts) >= depth and fnmatch.fnmatch("/".join(parts[:depth]), pattern)
        if hit:
            result = not negated
    return result


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_context_holds_what_the_image_copies_and_nothing_private(name):
    text = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in text if line.strip() and not line.startswith("#")]
    copies = [shlex.split(a) for op, a in instructions(DOCKER / name) if op == "COPY"]
    sources = [REPO / s for words in copies for s in words[:-1] if not s.startswith("--")]
    files = [f for s in sources for f in ([s] if s.is_file() else s.rglob("*.py"))]
    for file in files:
        relative = file.relative_to(REPO).as_posix()
        assert not ignored(relative, patterns), f"{relative} is left out of the context"
    for private in (".venv/bin/python", "runs/x/metrics.jsonl", ".git/config", ".env"):
        assert ignored(private, patterns), private
    assert ignored("sims/__pycache__/server.cpython-311.pyc", patterns)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_installs_only_pinned_packages(name):
    steps = instructions(DOCKER / name)
    copied = [i for i, (op, args) in enumerate(steps) if op == "COPY" and "constraints.txt" in args]
    pins = pinned()
    for i, (op, args) in enumerate(steps):
        for words in shell_commands(args) if op == "RUN" else []:
            command = shlex.join(words)
            if words[:2] != ["pip", "install"]:
                continue
            assert "-c" in words and words[words.index("-c") + 1] == "constraints.txt", command
            assert copied and copied[0] < i, "constraints.txt is copied after it is used"
            named = pip_packages(words)
            assert all(canonicalize_name(p) in pins for p in named), named


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_a_non_root_uid_on_python_3_11(name):
    steps = instructions(DOCKER / name)
    users = [args.split(":")[0] for op, args in steps if op == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0  # runAsNonRoot can verify it
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    [base] = [a for op, a in steps if op == "FROM"]
    image = args.get(base.strip("${}"), base)
    assert image.startswith("python:3.11-"), image  # the Python constraints.txt was locked on


def pinned() -> set[str]:
    text = (REPO / "constraints.txt").read_text()
    return {canonicalize_name(line.split("==")[0]) for line in text.splitlines() if "==" in line}


def dependency_closure(requirements: list[str]) -> set[str]:
    """Names of the installed distributions ``requirements`` pull in, extras included."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        item = (canonicalize_name(req.name), frozenset(req.extras))
        if item in seen:
            continue
        seen.add(item)
        for text in metadata.distribution(req.name).requires or []:
            sub = Requirement(text)
            extras = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in extras):
                todo.append(sub)
    return {name for name, _ in seen}


def test_the_turnwise_images_dependencies_are_all_pinned():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    unpinned = dependency_closure(dependencies) - pinned()
    assert unpinned <= {"pip", "setuptools", "wheel"}, unpinned  # pip freeze leaves those out


def test_the_main_job_install_leaves_the_benchmarked_systems_out():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    closure = dependency_closure(dependencies)
    assert not closure & {"stable-baselines3", "sb3-contrib", "dm-tree", "pytest", "moto"}, closure
    assert all("rllib" not in Requirement(r).extras for r in dependencies)


SERVER_UNDER_BLOCK = """
import importlib.abc, runpy, sys
root, allowed = sys.argv[1], set(sys.argv[2].split(","))
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in allowed or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"{top} is not in the simulator image")
sys.meta_path[:] = [  # no editable install of the repository: only what the image has
    f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
]
sys.meta_path.insert(0, NotInTheImage())
import sims, turnwise
assert sims.__file__.startswith(root) and turnwise.__file__.startswith(root)
sys.argv = ["sims.server", *sys.argv[3:]]
runpy.run_module("sims.server", run_name="__main__", alter_sys=True)
"""


def image_root(tmp_path: Path, dockerfile: Path) -> Path:
    """The files the Dockerfile copies, laid out as in the image's WORKDIR."""
    for op, args in instructions(dockerfile):
        words = shlex.split(args)
        if op != "COPY" or words[0] == "constraints.txt":
            continue
        target = tmp_path / words[-1]
        for source in words[:-1]:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / path.name)
    return tmp_path


def test_the_simulator_image_serves_with_only_its_own_packages(tmp_path):
    from sims.client import RemoteEnv

    dockerfile = DOCKER / "Dockerfile.simulator"
    steps = instructions(dockerfile)
    [pip] = [
        c
        for op, a in steps
        if op == "RUN"
        for c in shell_commands(a)
        if c[:2] == ["pip", "install"]
    ]
    packages = pip_packages(pip)
    modules = {
        module
        for module, dists in metadata.packages_distributions().items()
        if {canonicalize_name(d) for d in dists} & dependency_closure(packages)
    }
    entrypoint = json.loads(next(a for op, a in steps if op == "ENTRYPOINT"))
    cmd = json.loads(next(a for op, a in steps if op == "CMD"))
    assert entrypoint[:3] == ["python", "-m", "sims.server"]
    root = image_root(tmp_path, dockerfile)
    allowed = ",".join(sorted(modules | {"sims", "turnwise"}))
    arguments = [*entrypoint[3:], *cmd, "--port", "0"]  # any free port for the test
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_UNDER_BLOCK, str(root), allowed, *arguments],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("listening on 0.0.0.0:"), line + server.stderr.read()
        address = f"127.0.0.1:{line.rpartition(':')[2]}"
        env = RemoteEnv("Warehouse-v0", lambda: address, 10.0, 5)
        obs, _ = env.reset(seed=0)
        assert env.step(0)[0].shape == obs.shape
        env.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_simulator_image_listens_where_the_pods_connect(rendered):
    steps = instructions(DOCKER / "Dockerfile.simulator")
    entrypoint = json.loads(next(a for op, a in steps if op == "ENTRYPOINT"))
    exposed = {int(a) for op, a in steps if op == "EXPOSE"}
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"
    assert {int(entrypoint[entrypoint.index("--port") + 1])} == exposed
    sidecars = [c for c in containers(rendered) if c["name"] == "simulator"]
    assert sidecars and {port(c, "simulator") for c in sidecars} == exposed
