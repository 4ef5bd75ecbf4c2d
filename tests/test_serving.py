"""The policy server over real HTTP on 127.0.0.1: a local Ray Serve with three apps.

- ``open`` (``/``): a run directory, following ``best``, polled every 0.2 s;
- ``guarded`` (``/guarded``): one pinned checkpoint, a bearer token, one request in
  flight and one queued at most, batches that wait 1 s (so overload is deterministic);
- ``empty`` (``/empty``): a store without checkpoints yet.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import ray
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from ray.serve.schema import ServeDeploySchema

from serving.app import build_app
from serving.inference import Query, act
from serving.settings import SERVE_ENV, ServeArgs, UserConfig
from serving.source import parse_source
from serving.testing import make_checkpoint, serve_constants, start_local_ray
from serving.testing import random_walk_observations as observations
from turnwise.checkpoint_store import open_store

ROOT = Path(__file__).resolve().parents[1]
TOKEN_ENV = "TURNWISE_TEST_SERVE_TOKEN"
MAX_ROWS, MAX_BODY = 16, 65_536
JSON = {"Content-Type": "application/json"}


@dataclass
class Server:
    url: str
    run_dir: Path
    empty_store: Path
    token: str
    env_version: str  # of the fixture's checkpoints (the simulator's source may change meanwhile)
    models: dict = field(default_factory=dict)  # policy version -> ActorCritic


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def greedy(model, obs: np.ndarray) -> list[int]:
    return model.act(obs, greedy=True)[0].tolist()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    run_dir, empty = root / "run", root / "empty-store"
    (run_dir / "run.json").parent.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    empty.mkdir()
    first = make_checkpoint(str(run_dir / "checkpoints"), env_steps=400_000, policy_version=1)
    token = f"tok-{uuid.uuid4().hex}"
    os.environ[TOKEN_ENV] = token  # before ray.init: replicas inherit the environment
    start_local_ray()  # Serve's mode as `python -m serving` runs it
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run_many(apps(run_dir, empty, first.uri))
        url = f"http://127.0.0.1:{port}"
        yield Server(url, run_dir, empty, token, first.env_version, {1: first.model})
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(TOKEN_ENV, None)


def apps(run_dir: Path, empty: Path, pinned: str) -> list:
    """The three apps of the module docstring, each replica on half a CPU."""
    small = {"max_batch_size": MAX_ROWS, "max_request_rows": MAX_ROWS, "max_body_bytes": MAX_BODY}
    half_cpu = {"ray_actor_options": {"num_cpus": 0.5}}
    args = {
        "open": dict(checkpoint=str(run_dir), watch_interval_s=0.2, batch_wait_timeout_s=0.01),
        "guarded": dict(
            checkpoint=pinned,
            token_env=TOKEN_ENV,
            batch_wait_timeout_s=1.0,
            max_batch_size=2,
            max_request_rows=2,
            deployment={**half_cpu, "max_ongoing_requests": 1, "max_queued_requests": 1},
        ),
        "empty": dict(checkpoint=str(empty), watch_interval_s=0.2),
    }
    return [
        serve.RunTarget(
            build_app({**small, "deployment": half_cpu, **app_args}),
            name=name,
            route_prefix="/" if name == "open" else f"/{name}",
        )
        for name, app_args in args.items()
    ]


def post(url: str, body, session=requests, **kwargs) -> requests.Response:
    return session.post(url + "/v1/act", json=body, timeout=30, **kwargs)


def served_version(server: Server) -> int:
    return requests.get(server.url + "/v1/policy", timeout=10).json()["policy_version"]


# -- 1. the same actions as the policy itself ---------------------------------------------
def assert_serves_the_policy(server: Server) -> None:
    version = served_version(server)
    model, obs = server.models[version], observations(40)
    expected = greedy(model, obs)
    assert len(set(expected)) > 1, "the fixture policy should not be constant"
    with requests.Session() as session:
        singles = [post(server.url, {"observation": o.tolist()}, session).json() for o in obs]
    assert [r["action"] for r in singles] == expected
    assert {r["policy_version"] for r in singles} == {version}
    assert {r["env_version"] for r in singles} == {server.env_version}
    for start in range(0, len(obs), MAX_ROWS):
        rows = obs[start : start + MAX_ROWS]
        reply = post(server.url, {"observations": rows.tolist(), "return_probs": True}).json()
        assert reply["actions"] == expected[start : start + MAX_ROWS]
        probs = np.asarray(reply["probs"])
        assert probs.shape == (len(rows), 6) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_serve_runs_in_the_mode_of_serve_env_in_the_replicas_and_the_proxy(server):
    """serving.settings.SERVE_ENV took effect where requests are served: the policy
    replica and the HTTP proxy run throughput-optimized (proxy-to-replica calls over
    gRPC), without direct ingress; and the app still answers through the proxy."""
    actors = ray.util.list_named_actors(all_namespaces=True)
    names = [a["name"] for a in actors if a["name"].startswith("SERVE_REPLICA::open#PolicyServer#")]
    names += [a["name"] for a in actors if a["name"].startswith("SERVE_PROXY_ACTOR")]
    assert len(names) == 2, names
    for name in names:
        actor = ray.get_actor(name, namespace="serve")
        seen = ray.get(actor.__ray_call__.remote(serve_constants), timeout=60)
        assert seen["RAY_SERVE_THROUGHPUT_OPTIMIZED"] is True, name
        assert seen["RAY_SERVE_ENABLE_DIRECT_INGRESS"] is False, name
        assert seen["RAY_SERVE_USE_GRPC_BY_DEFAULT"] is True, name  # proxy -> replica
        assert seen["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] is False, name
    body = {"observation": observations(1)[0].tolist()}
    assert requests.post(server.url + "/v1/act", json=body, timeout=10).status_code == 200


def test_single_and_batched_actions_equal_the_policy_called_directly(server):
    assert_serves_the_policy(server)


def test_sampled_actions_are_valid_and_vary(server):
    obs = observations(1)[0].tolist()
    replies = [post(server.url, {"observation": obs, "deterministic": False}) for _ in range(30)]
    actions = [r.json()["action"] for r in replies]
    assert all(r.status_code == 200 for r in replies)
    assert set(actions) <= set(range(6)) and len(set(actions)) > 1


def test_the_normalizer_in_the_checkpoint_is_applied(tmp_path):
    """In-process: the served computation differs from a model whose normalizer is reset."""
    built = make_checkpoint(str(tmp_path))
    obs = observations(64)
    served = act(built.model, [Query(obs)])[0][0].actions.tolist()
    assert served == greedy(built.model, obs)
    built.model.normalizer.mean.zero_()
    built.model.normalizer.var.fill_(1.0)
    assert greedy(built.model, obs) != served


# -- 2. malformed requests -----------------------------------------------------------------
def malformed_requests() -> list[tuple[str, bytes, dict]]:
    """(what, body, headers): at least 200 requests that must all get a 4xx."""
    good = [round(float(x), 4) for x in observations(1)[0]]
    cases: list[tuple[str, object]] = []
    for n in (0, 1, 2, 50, 52, 102):
        cases.append((f"{n} values", {"observation": [0.0] * n}))
        cases.append((f"rows of {n}", {"observations": [[0.0] * n, good]}))
    for i in range(0, 51, 5):
        for bad in ("1", "x", None, True, False, [], {}, [1.0], "NaN"):
            row = list(good)
            row[i] = bad
            cases.append((f"{bad!r} at {i}", {"observation": row}))
            cases.append((f"{bad!r} at {i} in a batch", {"observations": [good, row]}))
        for value in (5.0, -1.5, 1e39):
            row = list(good)
            row[i] = value
            cases.append((f"{value} at {i}", {"observation": row}))
    cases += [
        ("empty object", {}),
        ("unknown field", {"obs": good}),
        ("extra field", {"observation": good, "foo": 1}),
        ("null observation", {"observation": None}),
        ("both", {"observation": good, "observations": [good]}),
        ("empty batch", {"observations": []}),
        ("empty row", {"observations": [[]]}),
        ("oversize batch", {"observations": [good] * (MAX_ROWS + 1)}),
        ("batch not a list", {"observations": good}),
        ("nested single", {"observation": [good]}),
        ("observation a string", {"observation": "0,0,0"}),
        ("observation a number", {"observation": 1}),
        ("deterministic a string", {"observation": good, "deterministic": "yes"}),
        ("deterministic a number", {"observation": good, "deterministic": 1}),
        ("return_probs null", {"observation": good, "return_probs": None}),
        ("a list", [good]),
        ("a string", "observation"),
        ("null", None),
    ]
    requests_: list[tuple[str, bytes, dict]] = [
        (what, json.dumps(body).encode(), JSON) for what, body in cases
    ]
    text = json.dumps({"observation": good})
    for i, token in enumerate(("NaN", "Infinity", "-Infinity", "1e999", "-1e999")):
        requests_.append((token, text.replace(str(good[i]), token, 1).encode(), JSON))
    for what, raw in [
        ("empty body", b""),
        ("truncated", text[:-5].encode()),
        ("trailing garbage", text.encode() + b"}"),
        ("single quotes", text.replace('"', "'").encode()),
        ("invalid utf-8", b'{"observation": [\xff\xfe]}'),
        ("not json", b"observation=1,2,3"),
    ]:
        requests_.append((what, raw, JSON))
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "multipart/form-data",
    ):
        requests_.append(
            (f"content type {content_type!r}", text.encode(), {"Content-Type": content_type})
        )
    big = json.dumps({"observations": [good] * 2000}).encode()
    requests_.append(("body over the limit", big, JSON))
    requests_.append(("4 MiB body", b" " * (4 << 20) + text.encode(), JSON))
    return requests_


def test_malformed_requests_get_4xx_json_and_the_server_keeps_answering(server):
    cases = malformed_requests()
    assert len(cases) >= 200
    with requests.Session() as session:
        for what, body, headers in cases:
            reply = session.post(server.url + "/v1/act", data=body, headers=headers, timeout=30)
            assert 400 <= reply.status_code < 500, (what, reply.status_code, reply.text[:300])
            payload = reply.json()
            assert payload["error"] and payload["detail"], what
            assert "Traceback" not in reply.text, what
            if reply.status_code in (400, 413, 415, 422):
                assert payload.get("expected"), what
        chunked = session.post(
            server.url + "/v1/act", data=iter([b" "] * 10 + [b" " * MAX_BODY]), headers=JSON
        )
        assert chunked.status_code == 413, chunked.text
        for method in ("get", "put", "delete"):
            assert getattr(session, method)(server.url + "/v1/act").status_code == 405
        assert session.get(server.url + "/nope").json()["error"] == "not_found"
    assert_serves_the_policy(server)


def test_error_messages_say_what_was_expected(server):
    good = observations(1)[0].tolist()
    short = post(server.url, {"observation": good[:3]}).json()
    assert "51" in short["detail"] and "51" in short["expected"]
    bounds = post(server.url, {"observation": [7.0, *good[1:]]}).json()
    assert bounds["error"] == "out_of_bounds" and "index 0" in bounds["detail"]
    oversize = post(server.url, {"observations": [good] * (MAX_ROWS + 1)}).json()
    assert f"{MAX_ROWS}" in oversize["detail"]
    typed = requests.post(server.url + "/v1/act", data="x", headers={"Content-Type": "text/plain"})
    assert typed.status_code == 415 and "application/json" in typed.json()["expected"]


# -- 3. hot reload --------------------------------------------------------------------------
def test_hot_reload_switches_to_a_promoted_checkpoint_without_failing_requests(server):
    obs = observations(8, seed=3)
    replies: list[tuple[int, int | None]] = []
    mismatches: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                reply = post(server.url, {"observations": obs.tolist()}, session)
                version = reply.json().get("policy_version") if reply.ok else None
                replies.append((reply.status_code, version))
                if reply.ok and reply.json()["actions"] != greedy(server.models[version], obs):
                    mismatches.append(version)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        store = str(server.run_dir / "checkpoints")
        latest_only = make_checkpoint(store, 600_000, policy_version=5, seed=5, promote="latest")
        time.sleep(1.0)  # five polls: `best` still names version 1, so nothing changes
        assert served_version(server) == 1
        promoted = make_checkpoint(store, 800_000, policy_version=2, seed=1, promote="best")
        server.models.update({2: promoted.model, 5: latest_only.model})
        wait_for_version(server, 2)
        time.sleep(0.5)  # and keep serving for a while on the new policy
    finally:
        stop.set()
        thread.join(timeout=30)
    statuses = [status for status, _ in replies]
    versions = [version for _, version in replies]
    assert len(replies) > 10 and set(statuses) == {200}, statuses
    assert not mismatches, "every reply matches the policy of the version it reports"
    assert versions[0] == 1 and versions[-1] == 2
    assert versions == sorted(versions), "a replica never goes back to an older policy"
    pinned = requests.get(server.url + "/guarded/healthz").json()
    assert pinned["policy_version"] == 1, "a pinned checkpoint is never replaced"


def wait_for_version(server: Server, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while served_version(server) != version:
        assert time.monotonic() < deadline, f"policy version {version} was never served"
        time.sleep(0.1)


def test_user_config_pins_a_checkpoint_on_running_replicas(server):
    """What Serve calls when ``serve deploy`` changes only the user_config: reconfigure()
    on the running replica (called here through a handle, as serve.run would restart it)."""
    before = requests.get(server.url + "/v1/policy").json()
    store = str(server.run_dir / "checkpoints")
    other = make_checkpoint(store, 900_000, policy_version=9, seed=9, promote="latest")
    handle = serve.get_app_handle("open")
    handle.reconfigure.remote({"checkpoint": other.name}).result(timeout_s=30)
    pinned = requests.get(server.url + "/v1/policy").json()  # loaded before reconfigure returns
    assert pinned["policy_version"] == 9 and pinned["loaded_at"] > before["loaded_at"]
    assert pinned["source"]["pinned"] == other.name == pinned["settings"]["checkpoint"]
    obs = observations(16, seed=4)
    reply = post(server.url, {"observations": obs.tolist()}).json()
    assert reply["actions"] == greedy(other.model, obs)
    handle.reconfigure.remote({"pointer": "best", "max_batch_size": 32}).result(timeout_s=30)
    after = requests.get(server.url + "/v1/policy").json()  # unpinned: `best` again
    assert after["policy_version"] == before["policy_version"]
    assert after["source"]["pinned"] is None and after["settings"]["max_batch_size"] == 32
    for bad in ({"max_batch_size": 0}, {"pointr": "best"}, {"watch_interval_s": -1}):
        with pytest.raises(ValueError):
            UserConfig.model_validate(bad)


def test_an_empty_store_is_unready_until_a_checkpoint_appears(server):
    url = server.url + "/empty"
    health = requests.get(url + "/healthz")
    assert health.status_code == 503 and health.json()["error"] == "no_policy"
    assert post(url, {"observation": observations(1)[0].tolist()}).status_code == 503
    make_checkpoint(str(server.empty_store), 1_000, policy_version=7, promote="latest")
    deadline = time.monotonic() + 30
    while requests.get(url + "/healthz").status_code != 200:  # `best` falls back to `latest`
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert post(url, {"observation": observations(1)[0].tolist()}).json()["policy_version"] == 7


# -- 4. metrics -------------------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_latency_histograms_and_counters_are_on_the_metrics_endpoint(server):
    obs = observations(32)
    before = scrape(server.url)
    barrier = threading.Barrier(len(obs))

    def one(row: np.ndarray) -> None:
        barrier.wait()
        assert post(server.url, {"observation": row.tolist()}).status_code == 200

    threads = [threading.Thread(target=one, args=(row,)) for row in obs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = scrape(server.url)
    forwards = ("turnwise_serve_inference_latency_seconds_count", ())

    def delta(key) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert 0 < delta(forwards) < len(obs), "concurrent requests share forward passes"
    act_2xx = (("route", "/v1/act"), ("status_class", "2xx"))
    assert delta(("turnwise_serve_requests_total", act_2xx)) == len(obs)
    assert after[("turnwise_serve_inference_latency_seconds_sum", ())] > 0
    route = (("le", "+Inf"), ("route", "/v1/act"))
    assert after[("turnwise_serve_request_latency_seconds_bucket", route)] >= len(obs)
    act_4xx = (("route", "/v1/act"), ("status_class", "4xx"))
    assert after[("turnwise_serve_errors_total", act_4xx)] >= 200
    assert after[("turnwise_serve_policy_version", ())] == served_version(server)


# -- 5. health, description, auth, overload -------------------------------------------------
def test_health_and_policy_description(server):
    assert requests.get(server.url + "/healthz").json()["status"] == "ok"
    info = requests.get(server.url + "/v1/policy").json()
    assert info["env_id"] == "Warehouse-v0" and info["env_version"] == server.env_version
    assert info["observation_space"]["shape"] == [51] and info["action_space"]["n"] == 6
    assert info["checkpoint"]["name"].startswith("step-") and info["env_steps"] > 0
    assert info["source"]["pointer"] == "best" and info["source"]["pinned"] is None


def test_bearer_token_and_overload(server):
    url, obs = server.url + "/guarded", observations(1)[0].tolist()
    assert post(url, {"observation": obs}).status_code == 401
    wrong = post(url, {"observation": obs}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert server.token not in wrong.text
    assert requests.get(url + "/v1/policy").status_code == 401
    auth = {"Authorization": f"Bearer {server.token}"}
    assert post(url, {"observation": obs}, headers=auth).json()["policy_version"] == 1
    assert requests.get(url + "/healthz").status_code == 200  # probes need no token
    # one request in the replica (its batch waits 1 s), one queued: the third gets 503
    results: dict[int, int] = {}

    def send(i: int) -> None:
        results[i] = post(url, {"observation": obs}, headers=auth).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    assert post(url, {"observation": obs}, headers=auth).status_code == 503
    for thread in threads:
        thread.join()
    assert results == {0: 200, 1: 200}


# -- in-process: sources, options, config file ----------------------------------------------
def test_sources_resolve_checkpoints_runs_and_stores(tmp_path):
    store = tmp_path / "run" / "checkpoints"
    first = make_checkpoint(str(store), 1_000, promote="latest")
    second = make_checkpoint(str(store), 2_000, promote="latest")
    run = parse_source(str(tmp_path / "run"))
    assert run.store_uri == str(store) and run.checkpoint is None
    assert run.current_name() == second.name  # no `best` yet: `latest`
    open_store(str(store)).set_pointer("best", first.name)  # `best` may be older than `latest`
    assert run.current_name() == first.name
    assert parse_source(str(store), "latest").current_name() == second.name
    pinned = parse_source(first.uri)
    assert (pinned.store_uri, pinned.current_name()) == (str(store), first.name)
    assert parse_source(f"file://{store}").store_uri == str(store)
    with pytest.raises(FileNotFoundError):
        parse_source(str(tmp_path / "missing"))


def test_s3_sources(tmp_path):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "x"}
    old = {k: os.environ.get(k) for k in (*env, "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(env, AWS_SECRET_ACCESS_KEY="x")
    try:
        boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1"
        ).create_bucket(Bucket="bucket")
        built = make_checkpoint("s3://bucket/runs/r1", 3_000, policy_version=4)
        store = parse_source("s3://bucket/runs/r1/")
        assert (store.store_uri, store.current_name()) == ("s3://bucket/runs/r1", built.name)
        pinned = parse_source(built.uri)
        assert (pinned.store_uri, pinned.checkpoint) == ("s3://bucket/runs/r1", built.name)
    finally:
        moto.stop()
        for key, value in old.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_request_rows"):
        ServeArgs(checkpoint="x", max_request_rows=64, max_batch_size=16)
    with pytest.raises(ValueError, match="extra"):
        ServeArgs(checkpoint="x", max_batch=4)
    options = ServeArgs(checkpoint="x", deployment={"autoscaling_config": {"max_replicas": 4}})
    assert "num_replicas" not in options.deployment_options()


def test_serve_config_file_is_valid_and_builds():
    config = yaml.safe_load((ROOT / "serving" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (application,) = schema.applications
    assert application.import_path == "serving.app:build_app"
    assert schema.http_options.host == "127.0.0.1"
    build_app(application.args)  # the args validate; nothing is loaded until a replica starts


def test_serving_metrics_match_the_catalog():
    from monitoring.catalog import METRICS
    from serving.metrics import SPECS

    served = [m for m in METRICS if m.source == "serving"]
    assert served
    for metric in served:
        kind, _, labels, _ = SPECS[metric.name]
        assert (kind, labels) == (metric.kind, metric.labels), metric.name


def test_the_command_line_refuses_bad_input_before_starting_ray(tmp_path, monkeypatch):
    from serving.__main__ import main

    assert main([str(tmp_path / "missing")]) == 2
    monkeypatch.delenv("TURNWISE_NO_SUCH_TOKEN", raising=False)
    assert main([str(tmp_path), "--token-env", "TURNWISE_NO_SUCH_TOKEN"]) == 2


def test_the_rayservice_pods_run_serve_in_the_mode_of_serve_env():
    """Serve reads its mode from the environment of every Ray process, which a Serve
    config cannot set: the RayService's pods carry serving.settings.SERVE_ENV."""
    [service] = [
        doc
        for doc in yaml.safe_load_all((ROOT / "k8s" / "rayservice-serve.yaml").read_text())
        if doc and doc.get("kind") == "RayService"
    ]
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    for template in templates:
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert {name: env.get(name) for name in SERVE_ENV} == SERVE_ENV
