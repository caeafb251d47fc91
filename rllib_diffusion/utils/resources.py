"""Will this run's actors ever start on this Ray cluster? Say so before building it.

Ray queues an actor whose resources no node offers forever, so an RLlib run that asks
for more than the cluster has (3 CPUs on a 2-CPU laptop, ``{"rollout": 1}`` on a cluster
without such nodes, a GPU learner on CPU-only nodes) just hangs. This module compares
the request with the cluster before ``config.build_algo()``:

* :func:`request_from_config` — what an ``AlgorithmConfig`` asks Ray for (pure; the
  counting follows RLlib 2.60's ``Algorithm.default_resource_request``).
* :func:`check_fit` — the verdict for a request on a cluster (pure): ``ok``, ``wait``
  (an autoscaler may add nodes, or other work holds the resources now) or ``never``,
  with a one-line message.
* :func:`read_cluster` — the cluster as Ray reports it (nodes, free resources,
  whether an autoscaler is configured).
* :func:`resource_guard` — the entry points' wrapper around ``build_algo()``: raises
  :class:`ConfigError` on ``never``, and prints a progress line while the actors start
  (repeated every ``interval_s``), so that a slow or pending start is never silent.

What the driver costs: a plain driver process (``rllib-diffusion finetune``, a script,
``ray job submit`` whose entrypoint asks for no resources) holds **no** Ray CPU; only
its actors do. With ``num_learners=0`` the learner runs inside the driver, so its GPU
must be on the driver's machine (RLlib uses it without asking Ray). Inside a Tune trial
the driver *is* an actor and its bundle (``num_cpus_for_main_process``, or the local
learner's CPUs/GPUs) is part of the trial's placement group: pass ``in_tune=True``.

Escape hatches (environment): ``RLLIB_DIFFUSION_AUTOSCALER=1|0`` overrides the
autoscaler detection; ``RLLIB_DIFFUSION_SKIP_RESOURCE_CHECK=1`` skips the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from rllib_diffusion.modules.model_config import ConfigError

#: RLlib config attribute -> the CLI flag that sets it (others are named as attributes).
DEFAULT_FLAGS: dict[str, str] = {
    "num_env_runners": "--num-env-runners",
    "num_cpus_per_env_runner": "num_cpus_per_env_runner",
    "num_gpus_per_env_runner": "num_gpus_per_env_runner",
    "custom_resources_per_env_runner": "--env-runner-resources",
    "evaluation_num_env_runners": "evaluation_num_env_runners",
    "num_learners": "--num-learners",
    "num_cpus_per_learner": "num_cpus_per_learner",
    "num_gpus_per_learner": "--num-gpus-per-learner",
    "custom_resources_per_learner": "--learner-resources",
    "num_cpus_for_main_process": "num_cpus_for_main_process",
}

Status = Literal["ok", "wait", "never"]


@dataclass(frozen=True)
class ActorGroup:
    """``count`` Ray actors of one kind, each needing ``bundle`` on a single node.

    ``knobs``: the config attributes that set (count, CPUs, GPUs, custom resources) of
    the group, ``""`` where none does; they name what to change in messages.
    """

    kind: str
    count: int
    bundle: Mapping[str, float]
    knobs: tuple[str, str, str, str] = ("", "", "", "")

    def knobs_for(self, keys: set[str]) -> list[str]:
        """The knobs that change this group's need of resources ``keys``."""
        count, cpu, gpu, custom = self.knobs
        wanted = [count, cpu if "CPU" in keys else "", gpu if "GPU" in keys else ""]
        wanted.append(custom if keys - {"CPU", "GPU"} else "")
        return [k for k in wanted if k]

    def total(self) -> dict[str, float]:
        """Resources of the whole group."""
        return {k: v * self.count for k, v in self.bundle.items() if v}


@dataclass(frozen=True)
class ResourceRequest:
    """What a run asks for: Ray-placed actor groups, plus what the driver process uses
    on its own machine without asking Ray (the GPU of a learner inside the driver)."""

    groups: tuple[ActorGroup, ...]
    driver_local: Mapping[str, float] = field(default_factory=dict)
    driver_knobs: tuple[str, ...] = ()

    def totals(self) -> dict[str, float]:
        """Summed resources of all actor groups."""
        out: dict[str, float] = {}
        for group in self.groups:
            for key, value in group.total().items():
                out[key] = out.get(key, 0.0) + value
        return out

    def describe(self) -> str:
        """E.g. ``1 EnvRunner (1 CPU), 2 learners (2 CPU)``; ``no actors`` if none."""
        parts = [
            f"{g.count} {_plural(g.kind, g.count)} ({_fmt(g.total())})"
            for g in self.groups
            if g.count
        ]
        return ", ".join(parts) or "no actors"


@dataclass(frozen=True)
class ClusterView:
    """The cluster as seen now: per-node totals, free resources, autoscaler present."""

    nodes: tuple[Mapping[str, float], ...]
    available: Mapping[str, float]
    driver_node: Mapping[str, float] | None = None
    autoscaler: bool = False

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for node in self.nodes:
            for key, value in node.items():
                out[key] = out.get(key, 0.0) + float(value)
        return out


@dataclass(frozen=True)
class Verdict:
    """``ok``: fits now; ``wait``: may fit later; ``never``: cannot fit this cluster."""

    status: Status
    message: str


def _plural(kind: str, n: int) -> str:
    return kind if n == 1 else kind + "s"


def _fmt(res: Mapping[str, float]) -> str:
    """``{"CPU": 2, "rollout": 1}`` -> ``2 CPU, 1 rollout`` (``0 CPU`` when empty)."""
    items = [f"{v:g} {k}" for k, v in sorted(res.items(), key=_order) if v]
    return ", ".join(items) or "0 CPU"


def _order(item: tuple[str, float]) -> tuple[int, str]:
    return ({"CPU": 0, "GPU": 1}.get(item[0], 2), item[0])


# ------------------------------------------------------------------ the request
def _learner_cpus(config: Any) -> float:
    """RLlib 2.60: ``num_cpus_per_learner="auto"`` is 1 without GPUs, else 0."""
    if config.num_cpus_per_learner != "auto":
        return float(config.num_cpus_per_learner)
    return 1.0 if not config.num_gpus_per_learner else 0.0


def _runner_group(kind: str, cfg: Any, count: int, count_knob: str) -> ActorGroup:
    bundle = {
        "CPU": float(cfg.num_cpus_per_env_runner),
        "GPU": float(cfg.num_gpus_per_env_runner),
        **{k: float(v) for k, v in (cfg.custom_resources_per_env_runner or {}).items()},
    }
    knobs = (
        count_knob,
        "num_cpus_per_env_runner",
        "num_gpus_per_env_runner",
        "custom_resources_per_env_runner",
    )
    return ActorGroup(kind, int(count), bundle, knobs)


def request_from_config(config: Any, *, in_tune: bool = False) -> ResourceRequest:
    """What ``config`` (an RLlib ``AlgorithmConfig``) will ask Ray for.

    Mirrors ``Algorithm.default_resource_request`` of RLlib 2.60 (``algorithms/utils.py``:
    ``_get_env_runner_bundles``, ``_get_learner_bundles``, ``_get_main_process_bundle``)
    but keeps the actor kinds apart. Evaluation EnvRunners count when
    ``evaluation_num_env_runners > 0`` (they use the evaluation config's per-runner
    resources). ``in_tune``: the driver is a Tune trial actor and needs its own bundle.
    """
    groups = [_runner_group("EnvRunner", config, config.num_env_runners, "num_env_runners")]
    if config.evaluation_num_env_runners > 0:
        eval_cfg = config.get_evaluation_config_object()
        groups.append(
            _runner_group(
                "evaluation EnvRunner",
                eval_cfg,
                config.evaluation_num_env_runners,
                "evaluation_num_env_runners",
            )
        )
    gpus = float(config.num_gpus_per_learner)
    aggregators = int(getattr(config, "num_aggregator_actors_per_learner", 0) or 0)
    learner_knobs = (
        "num_learners",
        "num_cpus_per_learner",
        "num_gpus_per_learner",
        "custom_resources_per_learner",
    )
    driver_local: dict[str, float] = {}
    if config.num_learners > 0:
        bundle = {
            "CPU": _learner_cpus(config) + aggregators,
            "GPU": gpus,
            **{k: float(v) for k, v in (config.custom_resources_per_learner or {}).items()},
        }
        groups.append(ActorGroup("learner", int(config.num_learners), bundle, learner_knobs))
        main = {"CPU": float(config.num_cpus_for_main_process)}
    else:
        if aggregators:
            knobs = ("num_aggregator_actors_per_learner", "", "", "")
            groups.append(ActorGroup("aggregator", aggregators, {"CPU": 1.0}, knobs))
        main = {"CPU": max(_learner_cpus(config), float(config.num_cpus_for_main_process))}
        if gpus:
            main["GPU"] = gpus
            driver_local = {"GPU": gpus}
    main.update({k: float(v) for k, v in (config.custom_resources_for_main_process or {}).items()})
    if in_tune:
        # The trial actor holds the main-process bundle; its GPU comes through Ray.
        knobs = ("", "num_cpus_for_main_process", "num_gpus_per_learner", "")
        groups.insert(0, ActorGroup("driver", 1, main, knobs))
        driver_local = {}
    driver_knobs = ("num_learners", "num_gpus_per_learner") if driver_local else ()
    return ResourceRequest(tuple(groups), driver_local, driver_knobs)


# ------------------------------------------------------------------ the verdict
_EPS = 1e-9


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(v <= float(node.get(k, 0.0)) + _EPS for k, v in bundle.items() if v)


def _packs(request: ResourceRequest, nodes: tuple[Mapping[str, float], ...]) -> bool:
    """First-fit decreasing of every actor's bundle onto the nodes' totals (Ray too
    places actors one by one; a packing this misses is rare and not found by Ray either)."""
    free = [dict(node) for node in nodes]
    bundles = [g.bundle for g in request.groups for _ in range(g.count)]
    bundles.sort(key=lambda b: (b.get("GPU", 0.0), sum(b.values())), reverse=True)
    for bundle in bundles:
        node = next((n for n in free if _fits(bundle, n)), None)
        if node is None:
            return False
        for key, value in bundle.items():
            node[key] = float(node.get(key, 0.0)) - value
    return True


def _nodes_summary(nodes: tuple[Mapping[str, float], ...], keys: set[str]) -> str:
    """E.g. ``1 node (2 CPU)`` or ``2 nodes (16 CPU, 16 rollout; 8 CPU, 1 GPU)``."""
    shown = [_fmt({k: float(v) for k, v in n.items() if k in keys}) for n in nodes]
    counts: dict[str, int] = {}
    for text in shown:
        counts[text] = counts.get(text, 0) + 1
    body = "; ".join(t if c == 1 else f"{c}× {t}" for t, c in counts.items())
    return f"{len(nodes)} {_plural('node', len(nodes))} ({body or 'none'})"


def _problems(
    request: ResourceRequest, cluster: ClusterView
) -> tuple[list[str], list[str], list[str]]:
    """``(driver_problems, cluster_problems, knobs)``: what cannot fit and what to change.

    Driver problems (the driver's own machine) no autoscaler can fix; cluster problems
    (a bundle no node offers, totals short, no packing) an autoscaler may.
    """
    driver, cluster_side, knobs = [], [], []
    for key, need in request.driver_local.items():
        have = float((cluster.driver_node or {}).get(key, 0.0))
        if need > have + _EPS:
            driver.append(
                f"the learner inside the driver process needs {need:g} {key} on the "
                f"driver's machine, which has {have:g}"
            )
            knobs += request.driver_knobs
    for g in request.groups:
        if g.count and not any(_fits(g.bundle, node) for node in cluster.nodes):
            cluster_side.append(
                f"each {g.kind} needs {_fmt(g.bundle)} on one node: no node has that"
            )
            node_max = {k: max(float(n.get(k, 0.0)) for n in cluster.nodes) for k in g.bundle}
            short = {k for k, v in g.bundle.items() if v and v > node_max.get(k, 0.0) + _EPS}
            knobs += g.knobs_for(short or set(g.bundle))
    have = cluster.totals()
    for key, need in sorted(request.totals().items(), key=_order):
        if need > have.get(key, 0.0) + _EPS:
            users = [g for g in request.groups if g.total().get(key)]
            parts = " + ".join(
                f"{g.total()[key]:g} for {g.count} {_plural(g.kind, g.count)}" for g in users
            )
            cluster_side.append(
                f"{need:g} {key} needed ({parts}), {have.get(key, 0.0):g} in the cluster"
            )
            knobs += [k for g in users for k in g.knobs_for({key})]
    if not cluster_side and not _packs(request, cluster.nodes):
        cluster_side.append("the actors do not fit onto the nodes together")
        knobs += [k for g in request.groups for k in g.knobs_for(set(g.bundle))]
    return driver, cluster_side, knobs


def _flag_list(knobs: list[str], flags: Mapping[str, str]) -> str:
    names = list(dict.fromkeys(flags[k] for k in knobs if flags.get(k)))
    return ", ".join(names) or "the resource settings"


def check_fit(
    request: ResourceRequest,
    cluster: ClusterView,
    *,
    flags: Mapping[str, str] | None = None,
    tag: str = "",
) -> Verdict:
    """Can ``request`` run on ``cluster``? One-line message for ``wait`` and ``never``.

    ``never``: the driver's machine lacks what the in-driver learner needs, or the
    cluster cannot hold the actors (a bundle no node offers, a total short, no packing)
    and no autoscaler is configured. ``wait``: an autoscaler may add nodes, or the
    cluster could hold the actors but other work uses the resources now. ``flags`` maps
    config attributes to the flag names the message tells the user to change (default
    :data:`DEFAULT_FLAGS`); ``tag`` prefixes the message (e.g. ``"[finetune] "``).
    """
    flags = DEFAULT_FLAGS if flags is None else flags
    driver, cluster_side, knobs = _problems(request, cluster)
    keys = set(request.totals()) | set(request.driver_local)
    summary = (
        f"Requested {request.describe()}; cluster has "
        f"{_nodes_summary(cluster.nodes, keys or {'CPU'})}"
    )
    if driver or (cluster_side and not cluster.autoscaler):
        reason = "; ".join(driver + cluster_side)
        return Verdict(
            "never",
            f"{tag}this run can never start on this Ray cluster"
            f"{'' if cluster.autoscaler else ' (no autoscaler)'}: {reason}. {summary}. "
            f"Change {_flag_list(knobs, flags)} (see docs/cluster.md, 'How CPUs are spent').",
        )
    if cluster_side:
        return Verdict(
            "wait",
            f"{tag}pending until the autoscaler adds nodes: {'; '.join(cluster_side)}. {summary}.",
        )
    need, free = request.totals(), cluster.available
    busy = {k: v for k, v in need.items() if v > float(free.get(k, 0.0)) + _EPS}
    if busy:
        free_now = ", ".join(f"{float(free.get(k, 0.0)):g} {k}" for k in sorted(busy))
        return Verdict(
            "wait",
            f"{tag}waiting for resources other work holds: needs {_fmt(busy)}, free now "
            f"{free_now}. {summary}.",
        )
    return Verdict("ok", f"{tag}{summary}.")


# ------------------------------------------------------------------ reading Ray
def autoscaler_configured() -> bool:
    """Whether the connected cluster has an autoscaler that can add nodes.

    ``RLLIB_DIFFUSION_AUTOSCALER=1|0`` decides when set. Otherwise: autoscaler v2
    (KubeRay's, flagged in the GCS) counts as one; for v1 the monitor process that every
    head runs publishes its status in the GCS key-value store, and without an
    autoscaling config (``ray start``, ``ray.init()``, KubeRay without autoscaling) it
    runs a read-only provider that names every node ``node_<id>``; a ``ray up``/KubeRay
    autoscaler names them after the config's node types. No status: no autoscaler.
    """
    forced = os.environ.get("RLLIB_DIFFUSION_AUTOSCALER", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            return True
    except Exception:  # noqa: BLE001 - an older/unreachable GCS: fall through to v1
        pass
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        mapping = json.loads(raw or b"{}").get("autoscaler_report", {}) or {}
    except Exception:  # noqa: BLE001 - no monitor status: treat as a fixed cluster
        return False
    types = mapping.get("node_type_mapping") or {}
    return any(kind != f"node_{key}" for key, kind in types.items())


def _node_resources(node: Mapping[str, Any]) -> dict[str, float]:
    """A ``ray.nodes()`` entry's schedulable resources (no ``node:<ip>`` markers)."""
    res = node.get("Resources") or {}
    return {k: float(v) for k, v in res.items() if not k.startswith("node:")}


def read_cluster() -> ClusterView:
    """The connected Ray cluster (call after ``ray.init``): alive nodes' totals, free
    resources, the driver's node and whether an autoscaler is configured."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    driver = next((n for n in alive if n.get("NodeID") == here), None)
    return ClusterView(
        nodes=tuple(_node_resources(n) for n in alive),
        available={k: float(v) for k, v in ray.available_resources().items()},
        driver_node=_node_resources(driver) if driver else None,
        autoscaler=autoscaler_configured(),
    )


def check_resources(
    config: Any,
    *,
    in_tune: bool = False,
    flags: Mapping[str, str] | None = None,
    tag: str = "",
) -> tuple[ResourceRequest, Verdict]:
    """Check ``config``'s request against the connected cluster.

    Raises :class:`ConfigError` (one line: what is requested, what the cluster has,
    the flags to change) when it can never start; returns the request and the verdict
    otherwise (``ok`` or ``wait``). ``RLLIB_DIFFUSION_SKIP_RESOURCE_CHECK=1`` skips
    the comparison (verdict ``ok``).
    """
    request = request_from_config(config, in_tune=in_tune)
    if os.environ.get("RLLIB_DIFFUSION_SKIP_RESOURCE_CHECK") == "1":
        return request, Verdict("ok", f"{tag}resource check skipped")
    verdict = check_fit(request, read_cluster(), flags=flags, tag=tag)
    if verdict.status == "never":
        raise ConfigError(verdict.message)
    return request, verdict


# ------------------------------------------------------------------ progress lines
#: Ray actor class -> the kind users know it as.
_ACTOR_KINDS: dict[str, str] = {
    "SingleAgentEnvRunner": "EnvRunner",
    "MultiAgentEnvRunner": "EnvRunner",
    "RayTrainWorker": "learner",
    "_WrappedExecutable": "learner",  # Ray Train's worker class, which hosts a Learner
    "AggregatorActor": "aggregator",
}


def pending_actors() -> dict[str, int] | None:
    """This job's actors that wait to be placed, by kind (``None`` if unreadable)."""
    import ray

    try:
        # Private, with a fallback: the public ray.util.state.list_actors needs the
        # dashboard, which local runs start without (init_ray).
        from ray._private import state

        job = ray.get_runtime_context().get_job_id()
        table = state.actors(job_id=ray.JobID.from_hex(job))
    except Exception:  # noqa: BLE001 - a debugging API: fall back to the request
        return None
    out: dict[str, int] = {}
    for info in table.values():
        if info.get("State") in ("PENDING_CREATION", "DEPENDENCIES_UNREADY"):
            name = str(info.get("ActorClassName", "actor")).rsplit(".", 1)[-1]
            kind = _ACTOR_KINDS.get(name, name)
            out[kind] = out.get(kind, 0) + 1
    return out


def progress_line(request: ResourceRequest, verdict: Verdict, elapsed: float, tag: str) -> str:
    """The line repeated while actors start: what is still pending, for how long."""
    import ray

    if verdict.status == "wait":
        return f"{verdict.message} (still waiting, {elapsed:.0f}s)"
    pending = pending_actors()
    if pending:
        what = ", ".join(f"{n} {_plural(kind, n)}" for kind, n in pending.items())
    elif pending is None:
        what = request.describe()
    else:
        what = "actors to become ready"
    free = {k: v for k, v in ray.available_resources().items() if k in request.totals()}
    free_txt = ", ".join(f"{v:g} {k}" for k, v in sorted(free.items(), key=_order)) or "0 CPU"
    return f"{tag}waiting for {what} to start ({elapsed:.0f}s; free now: {free_txt})"


@contextlib.contextmanager
def resource_guard(
    config: Any,
    *,
    tag: str = "",
    flags: Mapping[str, str] | None = None,
    in_tune: bool = False,
    interval_s: float = 15.0,
    stream: TextIO | None = None,
) -> Iterator[Verdict]:
    """Wrap ``config.build_algo()``: fail fast when the run can never start, else say
    what starts and repeat a progress line every ``interval_s`` until the block ends.

    Raises :class:`ConfigError` (see :func:`check_resources`). Lines go to ``stream``
    (default: stderr).
    """
    request, verdict = check_resources(config, in_tune=in_tune, flags=flags, tag=tag)
    out = stream or sys.stderr
    if not any(g.count for g in request.groups):
        yield verdict
        return
    first = verdict.message if verdict.status == "wait" else f"{tag}starting {request.describe()}"
    print(first + " ...", file=out, flush=True)
    stop, t0 = threading.Event(), time.monotonic()

    def repeat() -> None:
        while not stop.wait(interval_s):
            line = progress_line(request, verdict, time.monotonic() - t0, tag)
            print(line, file=out, flush=True)

    thread = threading.Thread(target=repeat, name="resource-guard", daemon=True)
    thread.start()
    try:
        yield verdict
    finally:
        stop.set()
        thread.join(timeout=5.0)
    elapsed = time.monotonic() - t0
    if elapsed >= interval_s:
        print(f"{tag}{request.describe()} started after {elapsed:.0f}s", file=out, flush=True)
