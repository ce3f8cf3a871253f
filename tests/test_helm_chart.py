"""The Helm chart with no cluster: Helm's lint, values.schema.json, every rendered manifest
against its Kubernetes / KubeRay / Prometheus Operator schema, and the fields that matter
asserted the way helm-unittest would (ports, Secrets, resources, serveConfigV2, policies, the
TLS gateway and the access tokens)."""

from __future__ import annotations

import base64
import copy
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helm_python import Chart, lint
from helm_python.errors import HelmRenderError, HelmValuesError
from ray.serve.schema import ServeDeploySchema

from tests.conftest import REPO
from tests.k8s_manifests import CHART, Manifest, check, render, values_file

PRODUCTION = "gpu-external-minio-tls-values.yaml"
# The least an install sets: access control is on by default and needs the tokens Secret.
MINIMAL: dict[str, Any] = {"auth": {"tokensSecret": "gestalt-tokens"}}
Values = dict[str, Any] | None


def _by_name(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


@pytest.fixture(scope="module")
def default() -> dict[str, Manifest]:
    return _by_name(render(MINIMAL))


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


def _pods(rayservice: Manifest) -> dict[str, dict[str, Any]]:
    """Every Ray pod's spec by group: head, cpu, gpu (the enabled ones)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    pods |= {g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]}
    return pods


@pytest.mark.parametrize("values_name", [None, PRODUCTION])
def test_helm_lint_finds_nothing_above_info(values_name: str | None) -> None:
    values = values_file(values_name) if values_name else MINIMAL
    report = lint(CHART, values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("values_name", [None, PRODUCTION])
def test_every_rendered_manifest_is_valid_for_its_kind(values_name: str | None) -> None:
    manifests = render(values_file(values_name) if values_name else MINIMAL)
    for manifest in manifests:
        check(manifest)
    kinds = sorted({m["kind"] for m in manifests})
    expected = {"NetworkPolicy", "PodMonitor", "RayService", "Service"}
    extra: set[str] = set() if values_name else {"Job", "Secret", "StatefulSet"}
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


def _with(path: str, value: object, base: Values = MINIMAL) -> dict[str, Any]:
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
        (_with("imagePullPolicy", "Always"), HelmValuesError, "imagePullPolicy"),
        (_with("tls.enabled", True), HelmValuesError, "/tls/secretName"),
        (_with("tls.envoyImage", "envoyproxy/envoy:v1.32.3"), HelmValuesError,
         "additional properties 'envoyImage' not allowed"),  # the old sidecar's value
        (_with("tls.maxConcurrentRpcs", 0), HelmValuesError, "/tls/maxConcurrentRpcs"),
        (_with("tls.maxMessageBytes", "4Mi"), HelmValuesError, "/tls/maxMessageBytes"),
        (_with("tls.clientCA.secretName", "client-ca"), HelmValuesError, "/tls/enabled"),
        (_with("tls.clientCA.key", "../ca.crt"), HelmValuesError, "/tls/clientCA/key"),
        (_with("tls.resources.requests.memory", "some"), HelmValuesError,
         "/tls/resources/requests/memory"),
        (None, HelmValuesError, "/auth/tokensSecret"),  # the bare defaults: closed, say how
        (_with("auth.tokensSecret", ""), HelmValuesError, "/auth/tokensSecret"),
        (_with("auth.tokensSecret", "Gestalt_Tokens"), HelmValuesError, "/auth/tokensSecret"),
        (_with("auth.tokensKey", "tokens/json"), HelmValuesError, "/auth/tokensKey"),
        (_with("auth.enabled", "yes"), HelmValuesError, "/auth/enabled"),
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
    values: Values, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        render(values)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({}, "auth.enabled is true but auth.tokensSecret is empty: create a Secret"),
        (_with("tls.enabled", True), "tls.enabled is true but tls.secretName is empty"),
        (_with("tls.clientCA.secretName", "client-ca"),
         "tls.clientCA.secretName is set but tls.enabled is false"),
    ],
)  # fmt: skip
def test_the_templates_refuse_them_too_without_the_schema(
    tmp_path: Path, values: dict[str, Any], words: str
) -> None:
    """`helm install --skip-schema-validation` still fails, with a message that says what to
    do (the chart copied without values.schema.json; the serve config link followed)."""
    chart = tmp_path / "gestalt-al"
    shutil.copytree(CHART, chart, symlinks=False)
    (chart / "values.schema.json").unlink()
    loaded = Chart.load(chart)
    with pytest.raises(HelmRenderError, match=re.escape(words)):
        loaded.render(values, name="gestalt", namespace="radiology", is_install=True)
    loaded.render(MINIMAL, name="gestalt", namespace="radiology", is_install=True)


def test_default_install_serves_grpc_from_the_head_with_generated_credentials(
    default: dict[str, Manifest],
) -> None:
    from services.app import APP_ARGS, SERVICERS

    service = default["Service/gestalt-gestalt-al-grpc"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc",
                                 "protocol": "TCP", "appProtocol": "grpc"}]  # fmt: skip
    assert service["selector"]["app.kubernetes.io/component"] == "head"
    rayservice = default["RayService/gestalt-gestalt-al"]
    head = _pod(rayservice, "head")
    assert head["rayStartParams"]["num-cpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]  # no TLS: no gateway
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
    assert app["args"] == {"storage": "s3://gestalt/service",
                           "auth_tokens_file": "/etc/gestalt-auth/tokens.json"}  # fmt: skip
    assert set(app["args"]) <= set(APP_ARGS)  # arguments app_builder takes
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
    assert [c["name"] for c in head["containers"]] == ["ray-head", "grpc-gateway"]
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
    assert app["args"] == {"storage": "s3://radiology-al/gestalt/service",
                           "auth_tokens_file": "/etc/gestalt-auth/tokens.json"}  # fmt: skip
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


def test_production_values_put_the_tls_gateway_in_front_of_serve(
    production: dict[str, Manifest],
) -> None:
    from services.gateway import _parser

    head = _pod(production["RayService/gestalt-gestalt-al"], "head")["template"]["spec"]
    ray_head, gateway = head["containers"]
    # The chart's own image (the CPU tag) runs the gateway: no third-party proxy image.
    image = "registry.radiology.example.org/ai/gestalt-al:0.1.0-cpu"
    assert gateway["image"] == ray_head["image"] == image
    assert gateway["imagePullPolicy"] == "IfNotPresent"
    assert gateway["command"] == [
        "python", "-m", "services.gateway",
        "--listen", "0.0.0.0:9443", "--upstream", "127.0.0.1:9000",
        "--cert", "/etc/grpc-tls/tls.crt", "--key", "/etc/grpc-tls/tls.key",
        "--client-ca", "/etc/grpc-client-ca/ca.crt",
        "--max-message-bytes", "8388608", "--max-concurrent-rpcs", "128",
    ]  # fmt: skip
    assert "args" not in gateway
    # The gateway's own command line accepts exactly these flags and values.
    parsed = _parser().parse_args(gateway["command"][3:])
    assert (parsed.listen, parsed.upstream, parsed.client_ca) == (
        "0.0.0.0:9443", "127.0.0.1:9000", "/etc/grpc-client-ca/ca.crt")  # fmt: skip
    assert (parsed.max_message_bytes, parsed.max_concurrent_rpcs) == (8388608, 128)
    assert parsed.no_reload is False  # a rotated certificate is picked up
    assert gateway["ports"] == [{"name": "grpc-tls", "containerPort": 9443}]
    # The Service's target port is the gateway's; Serve's proxy port stays inside the pod.
    assert {"name": "grpc", "containerPort": 9000} in ray_head["ports"]

    # TCP probes (a gRPC probe would need TLS and, with mTLS, a client certificate).
    for probe in (gateway["readinessProbe"], gateway["livenessProbe"]):
        assert probe["tcpSocket"] == {"port": "grpc-tls"}
        assert probe["failureThreshold"] >= 3
        assert probe["timeoutSeconds"] >= 1
    assert gateway["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                    "limits": {"cpu": "2", "memory": "2Gi"}}  # fmt: skip
    assert gateway["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }  # fmt: skip
    assert head["securityContext"]["runAsNonRoot"] is True
    assert "env" not in gateway  # no S3 credentials: the gateway only forwards bytes

    # The certificate, key and client CA come read-only from their Secrets; no subPath, so
    # the kubelet's in-place update of a rotated Secret reaches the gateway.
    assert gateway["volumeMounts"] == [
        {"name": "grpc-certificate", "mountPath": "/etc/grpc-tls", "readOnly": True},
        {"name": "grpc-client-ca", "mountPath": "/etc/grpc-client-ca", "readOnly": True},
    ]
    volumes = {v["name"]: v for v in head["volumes"]}
    assert volumes["grpc-certificate"]["secret"] == {"secretName": "gestalt-grpc-tls"}
    assert volumes["grpc-client-ca"]["secret"] == {  # the CA certificate only, as ca.crt
        "secretName": "radiology-client-ca",
        "items": [{"key": "ca.pem", "path": "ca.crt"}],
    }
    assert not [m for m in ray_head["volumeMounts"] if m["name"].startswith("grpc-")]


def test_tls_without_a_client_ca_is_tls_only_with_the_default_limits() -> None:
    values = _with("tls", {"enabled": True, "secretName": "gestalt-grpc-tls"})
    rayservice = _by_name(render(values))["RayService/gestalt-gestalt-al"]
    head = _pod(rayservice, "head")["template"]["spec"]
    gateway = head["containers"][1]
    assert "--client-ca" not in gateway["command"]
    assert gateway["command"][-4:] == [
        "--max-message-bytes", "4194304", "--max-concurrent-rpcs", "64"]  # fmt: skip
    assert gateway["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"cpu": "1", "memory": "768Mi"}}  # fmt: skip
    assert [m["name"] for m in gateway["volumeMounts"]] == ["grpc-certificate"]
    assert "grpc-client-ca" not in {v["name"] for v in head["volumes"]}
    for pod in _pods(rayservice).values():  # only the head pod runs a gateway
        names = [c["name"] for c in pod["containers"]]
        assert names[1:] == (["grpc-gateway"] if pod is head else [])


@pytest.mark.parametrize("values_name", [None, PRODUCTION])
def test_every_ray_pod_mounts_the_tokens_secret(values_name: str | None) -> None:
    """The ingress replica can run on any Ray node, so every pod has the tokens file, at the
    path the Serve app reads (auth_tokens_file), read-only, without subPath."""
    manifests = _by_name(render(values_file(values_name) if values_name else MINIMAL))
    rayservice = manifests["RayService/gestalt-gestalt-al"]
    pods = _pods(rayservice)
    assert set(pods) == ({"head", "cpu", "gpu"} if values_name else {"head", "cpu"})
    for group, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["auth-tokens"]["secret"] == {
            "secretName": "gestalt-tokens",
            "items": [{"key": "tokens.json", "path": "tokens.json"}]}, group  # fmt: skip
        ray = pod["containers"][0]
        assert ray["name"].startswith("ray-")
        assert {"name": "auth-tokens", "mountPath": "/etc/gestalt-auth",
                "readOnly": True} in ray["volumeMounts"], group  # fmt: skip
        for other in pod["containers"][1:]:  # the gateway checks no tokens
            assert "auth-tokens" not in {m["name"] for m in other["volumeMounts"]}
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["auth_tokens_file"] == "/etc/gestalt-auth/tokens.json"


def test_another_tokens_key_is_the_file_the_app_reads() -> None:
    values = _with("auth.tokensKey", "gestalt-tokens.json")
    rayservice = _by_name(render(values))["RayService/gestalt-gestalt-al"]
    volume = {v["name"]: v for v in _pods(rayservice)["cpu"]["volumes"]}["auth-tokens"]
    assert volume["secret"]["items"] == [
        {"key": "gestalt-tokens.json", "path": "gestalt-tokens.json"}]  # fmt: skip
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["auth_tokens_file"] == "/etc/gestalt-auth/gestalt-tokens.json"


def test_auth_disabled_leaves_no_mount_and_no_app_arg() -> None:
    off = {"enabled": False, "tokensSecret": "", "tokensKey": "tokens.json"}
    rayservice = _by_name(render(_with("auth", off)))["RayService/gestalt-gestalt-al"]
    for pod in _pods(rayservice).values():
        assert "auth-tokens" not in {v["name"] for v in pod["volumes"]}
        for container in pod["containers"]:
            assert "auth-tokens" not in {m["name"] for m in container["volumeMounts"]}
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"] == {"storage": "s3://gestalt/service"}  # deploy/serve_config.yaml's


def test_nothing_of_the_envoy_sidecar_remains() -> None:
    found = [
        f"{path.relative_to(CHART)}:{number}"
        for path in sorted(CHART.rglob("*")) if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "envoy" in line.lower()
    ]  # fmt: skip
    assert found == []
    assert not (CHART / "templates" / "grpc-tls.yaml").exists()


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
