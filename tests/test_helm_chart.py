"""The Helm chart with no cluster: Helm's lint, values.schema.json, every rendered manifest
against its Kubernetes / KubeRay / Prometheus Operator schema, and the fields that matter
asserted the way helm-unittest would (ports, Secrets, resources, serveConfigV2, policies)."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helm_python import lint
from helm_python.errors import HelmRenderError, HelmValuesError
from ray.serve.schema import ServeDeploySchema

from tests.conftest import REPO
from tests.k8s_manifests import CHART, Manifest, check, render, values_file

PRODUCTION = "gpu-external-minio-tls-values.yaml"
Values = dict[str, Any] | None


def _by_name(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


@pytest.fixture(scope="module")
def default() -> dict[str, Manifest]:
    return _by_name(render())


@pytest.fixture(scope="module")
def production() -> dict[str, Manifest]:
    return _by_name(render(values_file(PRODUCTION)))


def _pod(rayservice: Manifest, group: str) -> dict[str, Any]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    if group == "head":
        spec: dict[str, Any] = cluster["headGroupSpec"]
    else:
        (spec,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == group]
    return spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values_name", [None, PRODUCTION])
def test_helm_lint_finds_nothing_above_info(values_name: str | None) -> None:
    values = values_file(values_name) if values_name else None
    report = lint(CHART, values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("values_name", [None, PRODUCTION])
def test_every_rendered_manifest_is_valid_for_its_kind(values_name: str | None) -> None:
    manifests = render(values_file(values_name) if values_name else None)
    for manifest in manifests:
        check(manifest)
    kinds = sorted({m["kind"] for m in manifests})
    expected = {"NetworkPolicy", "PodMonitor", "RayService", "Service"}
    extra = {"ConfigMap"} if values_name else {"Job", "Secret", "StatefulSet"}
    assert kinds == sorted(expected | extra)


def _set(path: str, value: object) -> Callable[[Manifest], None]:
    def mutate(manifest: Manifest) -> None:
        node: Any = manifest
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("RayService/gestalt-gestalt-al", _set("spec.serveConfig", "x"), "'serveConfig' was"),
        ("RayService/gestalt-gestalt-al",
         _set("spec.rayClusterConfig.headGroupSpec.template.spec.containers.0.imagePullPolice",
              "Always"), "'imagePullPolice' was"),
        ("RayService/gestalt-gestalt-al",
         _set("spec.rayClusterConfig.headGroupSpec.rayStartParams.num-cpus", 0),
         "is not of type 'string'"),
        ("PodMonitor/gestalt-gestalt-al-ray", _set("spec.podMetricsEndpoints.0.intervall", "5s"),
         "'intervall' was"),
        ("NetworkPolicy/gestalt-gestalt-al-grpc", _set("spec.ingres", []), "'ingres' was"),
        ("Service/gestalt-gestalt-al-grpc", _set("spec.ports.0.port", "grpc"), "not of type"),
    ],
)  # fmt: skip
def test_the_schema_check_catches_a_bad_field(
    default: dict[str, Manifest], name: str, mutate: Callable[[Manifest], None], message: str
) -> None:
    broken = copy.deepcopy(default[name])
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        check(broken)


def _with(path: str, value: object, base: Values = None) -> dict[str, Any]:
    values = copy.deepcopy(base or {})
    node = values
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return values


@pytest.mark.parametrize(
    ("values", "error", "words"),
    [
        (_with("image.tag", "latest"), HelmRenderError, "image.tag: pin a version"),
        (_with("minio.image", "quay.io/minio/minio:latest"), HelmRenderError, "minio.image: pin"),
        (_with("tls.envoyImage", "envoyproxy/envoy"), HelmValuesError, "/tls/envoyImage"),
        (_with("imagePullPolicy", "Always"), HelmValuesError, "imagePullPolicy"),
        (_with("tls.enabled", True), HelmValuesError, "/tls/secretName"),
        (_with("objectStore.external.enabled", True), HelmValuesError, "/minio/enabled"),
        (_with("minio.enabled", False), HelmValuesError, "/minio/enabled"),
        (_with("workers.cpu.maxReplicas", -1), HelmValuesError, "/workers/cpu/maxReplicas"),
        (_with("objectStore.bucket", "Not_A_Bucket"), HelmValuesError, "/objectStore/bucket"),
        (_with("podSecurityContext.runAsNonRoot", False), HelmValuesError,
         "/podSecurityContext/runAsNonRoot"),
        (_with("serve.gpusPerReplica", 0.5), HelmValuesError, "/workers/gpu/enabled"),
        (_with("head.resources.limits.memory", "lots"), HelmValuesError,
         "/head/resources/limits/memory"),
        (_with("serve.latentReplicas", {"min": 3, "max": 2}), HelmRenderError,
         "serve.latentReplicas.min (3) must not exceed"),
        (_with("workers.cpu.replicas", 9), HelmRenderError, "minReplicas <= replicas"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_key_named(
    values: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        render(values)


def test_default_install_serves_grpc_from_the_head_with_generated_credentials(
    default: dict[str, Manifest],
) -> None:
    from services.app import SERVICERS

    service = default["Service/gestalt-gestalt-al-grpc"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc",
                                 "protocol": "TCP", "appProtocol": "grpc"}]  # fmt: skip
    assert service["selector"]["app.kubernetes.io/component"] == "head"
    rayservice = default["RayService/gestalt-gestalt-al"]
    head = _pod(rayservice, "head")
    assert head["rayStartParams"]["num-cpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert {"name": "grpc", "containerPort": 9000} in container["ports"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                      "limits": {"cpu": "2", "memory": "8Gi"}}  # fmt: skip
    assert container["image"] == "ghcr.io/gestalt-al/gestalt-al:0.1.0-cpu"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert head["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    # The Serve config is deploy/serve_config.yaml with this release's storage and replicas.
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    source = yaml.safe_load((REPO / "deploy" / "serve_config.yaml").read_text())
    (app,) = serve["applications"]
    assert app["import_path"] == source["applications"][0]["import_path"]
    assert app["args"] == {"storage": "s3://gestalt/service"}
    assert app["deployments"] == source["applications"][0]["deployments"]  # defaults = file
    assert serve["grpc_options"]["port"] == 9000
    assert set(SERVICERS) <= set(serve["grpc_options"]["grpc_servicer_functions"])

    # S3 credentials reach the pods only through the generated Secret.
    secret = default["Secret/gestalt-gestalt-al-minio"]
    keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(keys) == ["accessKey", "secretKey"]
    assert (len(keys["accessKey"]), len(keys["secretKey"])) == (20, 40)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    env = _env(container)
    assert env["GESTALT_S3_ENDPOINT"] == "gestalt-gestalt-al-minio:9000"
    assert env["GESTALT_S3_SECURE"] == "0"
    for name, key in (("GESTALT_S3_ACCESS_KEY", "accessKey"),
                      ("GESTALT_S3_SECRET_KEY", "secretKey")):  # fmt: skip
        assert env[name] == {"secretKeyRef": {"name": "gestalt-gestalt-al-minio", "key": key}}
    minio = default["StatefulSet/gestalt-gestalt-al-minio"]["spec"]["template"]["spec"]
    assert _env(minio["containers"][0])["MINIO_ROOT_PASSWORD"] == {
        "secretKeyRef": {"name": "gestalt-gestalt-al-minio", "key": "secretKey"}}  # fmt: skip
    job = default["Job/gestalt-gestalt-al-minio-bucket"]
    assert "mc mb --ignore-existing \"store/gestalt\"" in job["spec"]["template"]["spec"][
        "containers"][0]["args"][0]  # fmt: skip
    rendered_text = yaml.safe_dump_all(list(default.values()))
    assert keys["secretKey"] not in rendered_text.replace(secret["data"]["secretKey"], "")


def test_production_values_give_tls_gpus_and_the_external_store(
    production: dict[str, Manifest],
) -> None:
    assert not [name for name in production if "minio" in name]  # no embedded MinIO
    service = production["Service/gestalt-gestalt-al-grpc"]["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["ports"][0]["port"] == 443
    assert service["ports"][0]["targetPort"] == "grpc-tls"
    rayservice = production["RayService/gestalt-gestalt-al"]
    head = _pod(rayservice, "head")["template"]["spec"]
    assert [c["name"] for c in head["containers"]] == ["ray-head", "grpc-tls"]
    envoy = head["containers"][1]
    assert envoy["ports"] == [{"name": "grpc-tls", "containerPort": 9443}]
    volumes = {v["name"]: v for v in head["volumes"]}
    assert volumes["grpc-certificate"]["secret"]["secretName"] == "gestalt-grpc-tls"
    envoy_config = yaml.safe_load(
        production["ConfigMap/gestalt-gestalt-al-grpc-tls"]["data"]["envoy.yaml"]
    )["static_resources"]
    (listener,) = envoy_config["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 9443
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["tls_certificates"] == [
        {"certificate_chain": {"filename": "/etc/grpc-tls/tls.crt"},
         "private_key": {"filename": "/etc/grpc-tls/tls.key"}}]  # fmt: skip
    upstream = envoy_config["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert upstream["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                                 "port_value": 9000}  # fmt: skip
    assert head["imagePullSecrets"] == [{"name": "radiology-registry"}]

    gpu = _pod(rayservice, "gpu")
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (2, 1, 4)
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    gpu_pod = gpu["template"]["spec"]
    (container,) = gpu_pod["containers"]
    assert container["image"] == "registry.radiology.example.org/ai/gestalt-al:0.1.0-gpu"
    assert container["resources"]["limits"] == {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": 1}
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = _env(container)
    assert env["GESTALT_S3_ENDPOINT"] == "minio.storage.svc.cluster.local:9000"
    assert env["GESTALT_S3_SECURE"] == "1"
    assert env["GESTALT_S3_SECRET_KEY"] == {
        "secretKeyRef": {"name": "gestalt-s3-credentials", "key": "secretKey"}}  # fmt: skip
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"] == {"storage": "s3://radiology-al/gestalt/service"}
    deployments = {d["name"]: d for d in app["deployments"]}
    latents, sampler = deployments["SaliencyLatents"], deployments["DiscriminatorScores"]
    assert (latents["autoscaling_config"]["min_replicas"], latents["autoscaling_config"][
        "max_replicas"]) == (2, 8)  # fmt: skip
    assert latents["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 0.5}
    assert sampler["num_replicas"] == 2
    assert sampler["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert production["PodMonitor/gestalt-gestalt-al-ray"]["metadata"]["labels"]["release"] == (
        "kube-prometheus-stack"
    )


def test_only_the_grpc_port_is_open_outside_the_namespace(
    default: dict[str, Manifest], production: dict[str, Manifest]
) -> None:
    for manifests, port in ((default, 9000), (production, 9443)):
        policies = {n: m["spec"] for n, m in manifests.items() if n.startswith("NetworkPolicy/")}
        deny = policies["NetworkPolicy/gestalt-gestalt-al-default-deny"]
        assert (deny["policyTypes"], deny.get("ingress")) == (["Ingress"], None)
        for spec in policies.values():
            for rule in spec.get("ingress", []):
                sources = rule.get("from")
                if sources is None:  # open to everyone: must be exactly the gRPC port
                    assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
                else:
                    for source in sources:
                        assert "ipBlock" not in source
                        if "namespaceSelector" in source:  # only these namespaces, ports
                            namespace = source["namespaceSelector"]["matchLabels"][
                                "kubernetes.io/metadata.name"]  # fmt: skip
                            allowed = {"monitoring": [8080], "kuberay-system": [8265, 8000]}
                            assert [p["port"] for p in rule["ports"]] == allowed[namespace]
                        else:
                            assert list(source) == ["podSelector"]  # the release's own pods


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _leaf_paths(value, f"{path}.")
    return paths


def test_the_readme_documents_every_value_and_no_other() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    existing = _leaf_paths(defaults)
    documented: set[str] = set()
    for line in (CHART / "README.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first, *siblings = re.findall(r"`([^`]+)`", line.split("|")[1])
        parent = first.rsplit(".", 1)[0] + "." if "." in first else ""
        documented |= {first, *(parent + sibling for sibling in siblings)}
    assert documented <= existing, f"documented but not in values.yaml: {documented - existing}"
    undocumented = {  # a key is covered by itself, a documented parent or documented children
        path for path in existing
        if not any(path == d or path.startswith(d + ".") or d.startswith(path + ".")
                   for d in documented)
    }  # fmt: skip
    assert not undocumented, f"values.yaml keys missing from README.md: {sorted(undocumented)}"


def test_the_chart_uses_the_repository_serve_config() -> None:
    link = CHART / "files" / "serve_config.yaml"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "deploy" / "serve_config.yaml").resolve()
    assert Path(link.resolve()).is_file()
