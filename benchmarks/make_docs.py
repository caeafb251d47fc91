"""Rebuild docs/benchmarks.md from benchmarks/results/*.json (never edit that file by hand).

Usage: python benchmarks/make_docs.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "benchmarks.md"


def _fmt(v, digits: int = 1) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def bc_section(r: dict) -> list[str]:
    f = r["figures"]
    lines = [
        f"### {r['name']}",
        "",
        f"Diffusion BC pretraining on `{r.get('settings', {}).get('dataset')}` ({r.get('env_id')}).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| dataset | {f['dataset_episodes']} episodes, {f['dataset_transitions']} transitions |",
        f"| dataset mean episode return | {_fmt(f['dataset_return_mean'])} ± {_fmt(f['dataset_return_std'])} |",
        f"| BC policy return ({f['bc_eval_episodes']} episodes, EMA weights, DDPM K=20) "
        f"| {_fmt(f['bc_return_mean'])} ± {_fmt(f['bc_return_std'])} |",
        f"| BC / dataset return | {_fmt(100 * f['bc_over_dataset_return'])}% (target ≥ 80%: {_fmt(f['target_met'])}) |",
        f"| normalised score | {_fmt(f['bc_normalized_score'])} |",
        f"| gradient steps × batch | {f['gradient_steps']} × {f['batch_size']} |",
        f"| training wall time | {_fmt(f['train_seconds'] / 60)} min ({_fmt(f['gradient_steps_per_second'])} gradient steps/s) |",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        "",
    ]
    more = RESULTS / (r["name"].replace("bc_pretrain_", "bc_eval50_") + ".json")
    if more.exists():
        e = json.loads(more.read_text())
        lines += [
            f"Re-evaluated over {e['num_episodes']} episodes: return "
            f"{_fmt(e['episode_return_mean'])} ± {_fmt(e['episode_return_std'])} "
            f"({_fmt(100 * e['episode_return_mean'] / f['dataset_return_mean'])}% of the dataset "
            f"mean), command `{e.get('command')}`.",
            "",
        ]
    png = RESULTS / f"{r['name']}.png"
    if png.exists():
        lines += [f"![{r['name']}](../benchmarks/results/{png.name})", ""]
    return lines


def finetune_section(r: dict) -> list[str]:
    f = r["figures"]
    lines = [f"### {r['name']}", ""]
    if not f.get("complete", True):
        lines += ["**Partial run** (cut short; the curve below is what finished).", ""]
    rows = [
        (
            "deterministic eval return at start (pretrained policy)",
            _fmt(f.get("start_return_mean")),
        ),
        ("best deterministic eval return during training", _fmt(f.get("best_eval_return_mean"))),
        ("last periodic eval return", _fmt(f.get("last_eval_return_mean"))),
    ]
    if "final_return_mean" in f:
        rows.append(
            (
                f"final checkpoint, {f['final_eval_episodes']} episodes",
                f"{_fmt(f['final_return_mean'])} ± {_fmt(f['final_return_std'])} "
                f"(normalised {_fmt(f.get('final_normalized_score'))})",
            )
        )
    rows.append(("env steps / iterations", f"{f['env_steps']} / {f['iterations']}"))
    if "train_minutes" in f:
        rows.append(("wall time", f"{_fmt(f['train_minutes'])} min"))
    if f.get("mean_sample_seconds") is not None:
        rows.append(
            (
                "seconds per iteration: sample / learn / sync",
                f"{_fmt(f['mean_sample_seconds'])} / {_fmt(f['mean_learn_seconds'])} / "
                f"{_fmt(f['mean_sync_seconds'], 2)}",
            )
        )
    if "bc_return_mean" in f:
        rows.insert(
            0,
            (
                "Gaussian BC policy (10 episodes)",
                f"{_fmt(f['bc_return_mean'])} ± {_fmt(f['bc_return_std'])}",
            ),
        )
    lines += ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    st = r.get("settings", {})
    if "decisions_per_iteration" in st:
        ddim = st.get("use_ddim")
        sampler = f"DDIM {st.get('ddim_steps')} steps" if ddim else "DDPM"
        k_ft = st["ft_denoising_steps"] or ("all DDIM steps" if ddim else "10 (default)")
        actor_lr = st["actor_lr"] or "the network's default (MLP 1e-4, UNet 1e-5)"
        lines += [
            "",
            f"Settings: {sampler}, {st['num_env_runners']} EnvRunner × "
            f"{st['num_envs_per_env_runner']} envs, {st['decisions_per_iteration']} action "
            f"chunks per iteration, K′ = {k_ft}, {st['num_epochs']} epochs of "
            f"{st['pair_minibatch_size']}-pair minibatches, clip {st.get('clip_param', st.get('clip'))}, actor lr "
            f"{actor_lr}, critic lr {st['critic_lr']}, eval every {st['eval_interval']} "
            f"iterations ({st['eval_episodes']} deterministic episodes).",
        ]
    elif "ppo" in st:
        p = st["ppo"]
        lines += [
            "",
            f"Settings: RLlib PPO, {p['num_env_runners']} EnvRunner × "
            f"{p['num_envs_per_env_runner']} envs, batch {p['train_batch_size']}, minibatch "
            f"{p['minibatch_size']}, {p['num_epochs']} epochs, lr {p['lr']}, clip "
            f"{p['clip_param']}, eval every {p['eval_interval']} iterations "
            f"({p['eval_episodes']} deterministic episodes).",
        ]
    lines += [
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        "",
    ]
    return lines


def comparison_plot(results: list[dict]) -> list[str]:
    """DPPO vs the Gaussian baseline on the same task, if both result files exist."""
    by_name = {r["name"]: r for r in results}
    lines: list[str] = []
    for r in results:
        if not r["name"].startswith("dppo_finetune_"):
            continue
        task = r["name"][len("dppo_finetune_") :]
        base = by_name.get(f"dppo_baseline_gaussian_ppo_{task}")
        if base is None:
            continue  # only runs that have a Gaussian baseline on the same task
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return lines
        fig, ax = plt.subplots(figsize=(7, 4))
        s = r["series"]
        ax.plot(s["eval_env_steps"], s["eval_return_mean"], "o-", label="DPPO from diffusion BC")
        b = base["series"]
        ax.plot(b["eval_env_steps"], b["eval_return_mean"], "s-", label="PPO from Gaussian BC")
        ax.set_xlabel("env steps")
        ax.set_ylabel("deterministic eval return (10 episodes)")
        ax.set_title(f"Fine-tuning from BC, {task}")
        ax.legend()
        fig.tight_layout()
        img = OUT.parent / "img" / f"dppo_vs_gaussian_{task}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(img, dpi=100)
        plt.close(fig)
        lines += [f"![DPPO vs Gaussian PPO, {task}](img/{img.name})", ""]
    return lines


def behavior_section(r: dict) -> list[str]:
    f = r["figures"]
    return [
        f"### {r['name']}",
        "",
        f"RLlib PPO behaviour policy on {f['env_id']} (Gaussian MLP {f['settings']['hidden']}, "
        f"MeanStdFilter, {f['settings']['num_env_runners']} runner × "
        f"{f['settings']['num_envs_per_env_runner']} envs, batch {f['settings']['train_batch_size']}): "
        f"training return {_fmt(f['final_return'])} after {f['env_steps']} env steps "
        f"({f['iterations']} iterations) in {_fmt(f['minutes'])} min "
        f"({_fmt(f['env_steps_per_second'], 0)} env steps/s).",
        "",
        f"Command: `{r['command']}`",
        "",
    ]


OFFLINE_LABELS = {
    "diffusion_bc": "diffusion BC (T=5 DDPM, same MLP)",
    "diffusion_ql": "Diffusion-QL (DDPM, T=5)",
    "diffusion_ql_flow": "Diffusion-QL, flow-matching actor",
    "dac": "DAC",
    "idql": "IDQL-A",
    "fql": "FQL (α = 10)",
    "td3bc": "TD3+BC (ours, RLlib)",
    "d3rlpy_iql": "d3rlpy IQL",
    "d3rlpy_td3bc": "d3rlpy TD3+BC",
}


def offline_table(results: list[dict]) -> list[str]:
    """All ``offline_<algo>_<tag>`` results of one tag side by side, plus eval curves."""
    group = [r for r in results if _is_offline(r)]
    lines: list[str] = []
    tags = sorted(
        {r["name"].split("_", 1)[1].split(f"{r['figures']['algorithm']}_", 1)[1] for r in group}
    )
    for tag in tags:
        rows = [r for r in group if r["name"].endswith(f"_{tag}")]
        order = list(OFFLINE_LABELS)
        rows.sort(
            key=lambda r: (
                order.index(r["figures"]["algorithm"])
                if r["figures"]["algorithm"] in order
                else len(order)
            )
        )
        first = rows[0]
        ds = first.get("dataset", {})
        lines += [
            f"### {tag} ({first.get('env_id')})",
            "",
            f"Dataset: {ds.get('num_episodes')} episodes, {ds.get('num_transitions')} "
            f"transitions, mean return {_fmt(first['figures']['dataset_return_mean'])}. "
            "Each algorithm: the same gradient-step budget and batch, final checkpoint "
            "evaluated deterministically in the env (no best-checkpoint selection). "
            "Normalised score = 100 · (return − random) / (reference − random) with "
            "Hopper-v5 random 16.7 (measured here) and D4RL's expert reference 3234.3.",
            "",
            "| algorithm | gradient steps × batch | return (mean ± std) | episodes | "
            "normalised score | gradient steps/s | command |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            f = r["figures"]
            lines.append(
                f"| {OFFLINE_LABELS.get(f['algorithm'], f['algorithm'])} "
                f"| {f['gradient_steps']} × {f['batch_size']} "
                f"| {_fmt(f['return_mean'])} ± {_fmt(f['return_std'])} | {f['eval_episodes']} "
                f"| {_fmt(f['normalized_score'])} | {_fmt(f['gradient_steps_per_second'])} "
                f"| `{r['command']}` |"
            )
        lines += [""]
        lines += [
            f"- {OFFLINE_LABELS.get(r['figures']['algorithm'], r['figures']['algorithm'])}: "
            f"{r['note']}"
            for r in rows
            if r.get("note")
        ]
        lines += [""] if any(r.get("note") for r in rows) else []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for r in rows:
            sr = r["series"]
            # The final checkpoint's evaluation replaces a periodic one at the same step.
            curve = dict(zip(sr["eval_gradient_steps"], sr["eval_return_mean"]))
            ax.plot(
                list(curve),
                list(curve.values()),
                "o-",
                label=OFFLINE_LABELS.get(r["figures"]["algorithm"], r["figures"]["algorithm"]),
            )
        ax.axhline(
            first["figures"]["dataset_return_mean"], color="k", ls="--", label="dataset mean"
        )
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("eval return (10 episodes)")
        ax.set_title(f"Offline RL, {tag}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        img = OUT.parent / "img" / f"offline_{tag}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(img, dpi=100)
        plt.close(fig)
        lines += [f"![offline {tag}](img/{img.name})", ""]
    return lines


ONLINE_PREFIX = "offline_to_online_"
PROTOCOL_PREFIX = "offline_protocol_"


def _is_offline(r: dict) -> bool:
    return r["name"].startswith("offline_") and not r["name"].startswith(
        (ONLINE_PREFIX, PROTOCOL_PREFIX)
    )


def protocol_section(r: dict) -> list[str]:
    """``benchmarks/offline_protocol.py --summarize``: per algorithm over seeds."""
    f, budget = r["figures"], r["budget_gradient_steps"]
    lines = [
        f"### {r['name']} ({budget:,} gradient steps, `{r['dataset']}`)",
        "",
        "Final checkpoint: each seed's mean over its final evaluation's episodes, then mean "
        "± std over the finished seeds. Best periodic evaluation (what the papers report) is "
        "labelled separately. Unfinished runs are listed with the steps they reached and "
        "their last evaluation. Data's Monte-Carlo discounted return-to-go (γ = 0.99), the "
        f"scale Q on data actions should reach: {_fmt(f['data_mc_discounted_return'])}.",
        "",
        "| algorithm | seeds done | final return per seed | final mean ± std over seeds "
        "| best evaluation, periodic or final (mean over seeds) | unfinished runs |",
        "|---|---|---|---|---|---|",
    ]
    for algo, a in f.items():
        if not isinstance(a, dict):
            continue
        per_seed = ", ".join(_fmt(x) for x in a["final_return_per_seed"]) or "–"
        final = "–"
        if a["final_return_std_over_seeds"] is not None:
            final = f"{_fmt(a['final_return_mean'])} ± {_fmt(a['final_return_std_over_seeds'])}"
        elif a["final_return_mean"] is not None:
            final = f"{_fmt(a['final_return_mean'])} (one seed)"
        partial = "; ".join(
            f"{name}: {p['gradient_steps']:,} steps, last eval "
            f"{'none yet' if p['last_eval'] is None else _fmt(p['last_eval'])}"
            for name, p in a["partial_runs"].items()
        )
        lines.append(
            f"| {OFFLINE_LABELS.get(algo, algo)} | {a['seeds_done'] or '–'} | {per_seed} "
            f"| {final} | {_fmt(a['best_eval_mean']) if a['best_eval_mean'] else '–'} "
            f"| {partial or '–'} |"
        )
    image = f"../benchmarks/results/{r['name']}.png"
    lines += ["", f"Command: `{r['command']}`  ", f"Machine: {r['machine']}", ""]
    return lines + [f"![{r['name']}]({image})", ""]


def online_table(results: list[dict]) -> list[str]:
    """``offline_to_online_<algo>_<tag>`` results: return before and after online steps."""
    rows = [r for r in results if r["name"].startswith(ONLINE_PREFIX)]
    if not rows:
        return []
    lines = [
        "### Offline → online",
        "",
        "`benchmarks/offline_to_online.py` continues the offline run's final checkpoint "
        "(learner state with optimizers, targets, EMA) with one EnvRunner filling a replay "
        "buffer that starts with the offline data. Returns are deterministic evaluations of "
        "the offline policy (before) and of the final online checkpoint (after). Env "
        "steps/s counts the whole run, evaluations included.",
        "",
        "| algorithm | offline gradient steps | online env steps | updates per env step | "
        "return before | return after | normalised before → after | env steps/s | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["figures"]
        lines.append(
            f"| {OFFLINE_LABELS.get(f['algorithm'], f['algorithm'])} "
            f"| {f['offline_gradient_steps']} | {f['env_steps']} | {_fmt(f['updates_per_env_step'])} "
            f"| {_fmt(f['return_before'])} ± {_fmt(f['return_before_std'])} "
            f"| {_fmt(f['return_after'])} ± {_fmt(f['return_after_std'])} "
            f"| {_fmt(f['normalized_before'])} → {_fmt(f['normalized_after'])} "
            f"| {_fmt(f['env_steps_per_second'])} | `{r['command']}` |"
        )
    return [*lines, ""]


def acting_table() -> list[str]:
    """``evaluate --num-candidates/--action-selection --json`` results of one checkpoint."""
    rows = []
    for path in sorted(RESULTS.glob("eval_*.json")):
        r = json.loads(path.read_text())
        if "acting" in r:
            rows.append(r)
    if not rows:
        return []
    lines = [
        "### One checkpoint, other action extraction",
        "",
        "The same final checkpoint evaluated (10 episodes, the benchmark's evaluation "
        "seeds) with other numbers of sampled candidates and selection rules; N = 1 is the "
        "diffusion BC actor alone (EMA weights), without the critic.",
        "",
        "| checkpoint | candidates N | selection | return (mean ± std) | normalised | command |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["checkpoint"], r["acting"]["num_candidates"])):
        a = r["acting"]
        lines.append(
            f"| {r['algorithm']} (`{Path(r['checkpoint']).parent.name}`) "
            f"| {a['num_candidates']} | {a['action_selection']} "
            f"| {_fmt(r['episode_return_mean'])} ± {_fmt(r['episode_return_std'])} "
            f"| {_fmt(r.get('normalized_score'))} | `{r['command']}` |"
        )
    return [*lines, ""]


def avoid_section(r: dict) -> list[str]:
    """One ``benchmarks/avoid_modes.py`` result: success and routes per policy."""
    acting = "sampled actions (--stochastic)" if r.get("stochastic") else "default acting"
    # Results written before env ids were recorded are all of Avoid-v0.
    envs = " / ".join(f"`{e}`" for e in r.get("env_ids") or ["rllib_diffusion/Avoid-v0"])
    if r.get("act_steps") is not None:
        acting += f", act_steps {r['act_steps']}"
    lines = [
        f"### {r['name']}",
        "",
        f"{envs}, {r.get('episodes')} episodes per policy (reset seeds from "
        f"{r.get('seed', 0)}), {acting}; routes counted over successful episodes "
        "([docs/avoid.md](avoid.md)). Command: `" + r["command"] + "`",
        "",
        "| policy | success | routes | route entropy (nats) | route counts |",
        "|---|---|---|---|---|",
    ]
    for label, f in r["figures"].items():
        counts = ", ".join(f"{k}: {v}" for k, v in f["route_counts"].items())
        lines.append(
            f"| {label} | {_fmt(100 * f['success_rate'], 0)}% | {f['num_routes']} "
            f"| {_fmt(f['route_entropy'], 2)} | {counts} |"
        )
    lines.append("")
    if r.get("plot"):
        lines += [f"![{r['name']}](../{r['plot']})", ""]
    return lines


def comparison_section(r: dict) -> list[str]:
    """A ``benchmarks/beyond.py`` result: one row per (algorithm, seed) run."""
    lines = [
        f"### {r['name']}",
        "",
        f"Budget {r.get('budget_env_steps')} env steps per run, seeds {r.get('seeds')}; "
        "deterministic evaluation (the final one of the saved checkpoint).",
        "",
        "| run | env steps | start | best periodic eval | final (episodes) | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for key, f in r["figures"].items():
        final = "not finished"
        if "final_return_mean" in f:
            final = (
                f"{_fmt(f['final_return_mean'])} ± {_fmt(f['final_return_std'])} "
                f"({f['final_eval_episodes']})"
            )
        minutes = f"{_fmt(f['train_minutes'])} min" if "train_minutes" in f else "n/a"
        lines.append(
            f"| {key} | {f['env_steps']} | {_fmt(f.get('start_return_mean'))} | "
            f"{_fmt(f.get('best_eval_return_mean'))} | {final} | {minutes} |"
        )
    lines += ["", f"Command: `{r['command']}`  ", f"Machine: {r['machine']}", ""]
    png = RESULTS / f"{r['name']}.png"
    if png.exists():
        lines += [f"![{r['name']}](../benchmarks/results/{png.name})", ""]
    return lines


def baselines_section(r: dict) -> list[str]:
    """A ``baselines_*`` result: a ``beyond.py`` comparison (figures per run), or one
    fine-tuning run of ``dppo_gaussian_baseline.py`` (e.g. the GMM-PPO baseline)."""
    if all(isinstance(f, dict) for f in r["figures"].values()):
        return comparison_section(r)
    return finetune_section(r)


def diffppo_section(r: dict) -> list[str]:
    """A ``benchmarks/diffppo.py`` result: one row per (arm, seed) run."""
    dppo = "dppo" in r.get("arms_knobs", {})
    what = (
        "DPPO with vs without synthetic segments from the same diffusion BC checkpoint"
        if dppo
        else "DiffPPO vs PPO from the same Gaussian BC checkpoint"
    )
    lines = [
        f"### {r['name']}",
        "",
        f"{what} (`{r.get('checkpoint')}`), "
        f"budget {r['figures'].get('env_steps_budget')} env steps per run; deterministic "
        "evaluation. Arms' synthetic-experience knobs: "
        + "; ".join(
            f"{a}: {k or ('none (DPPO)' if dppo else 'none (PPO)')}"
            for a, k in r.get("arms_knobs", {}).items()
        ),
        "",
        "| arm | seed | env steps | periodic evals | final (episodes) | train return, last 3 "
        "iterations | synthetic steps / iteration (kept fraction) | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, seeds in r["series"].get("arms", {}).items():
        for seed, s in seeds.items():
            final = "not finished"
            if s.get("complete"):
                final = (
                    f"{_fmt(s['final_return_mean'])} ± {_fmt(s['final_return_std'])} "
                    f"({s['final_eval_episodes']})"
                )
            evals = " / ".join(f"{v:.0f}" for v in s.get("eval_return_mean", []))
            synth = "—"
            if s.get("synthetic_steps"):
                kept = sum(s["synthetic_kept_fraction"]) / len(s["synthetic_kept_fraction"])
                mean = sum(s["synthetic_steps"]) / len(s["synthetic_steps"])
                synth = f"{mean:.0f} ({kept:.3f})"
            minutes = f"{s['seconds'] / 60:.1f} min" if s.get("seconds") else "n/a"
            lines.append(
                f"| {arm} | {seed} | {s.get('env_steps')} | {evals} | {final} | "
                f"{_fmt(s.get('train_return_last3'))} | {synth} | {minutes} |"
            )
    lines += ["", f"Command: `{r['command']}`  ", f"Machine: {r['machine']}", ""]
    return lines


SECTIONS = {
    "behavior_ppo": ("Behaviour policies for data collection", behavior_section),
    "bc_pretrain": ("Diffusion BC pretraining", bc_section),
    "dppo_finetune": ("DPPO fine-tuning", finetune_section),
    "dppo_baseline": ("Baseline: RLlib PPO fine-tuning a Gaussian BC policy", finetune_section),
    "avoid_modes": ("Avoid: success and routes (modes)", avoid_section),
    "baselines_": ("Fine-tuning baselines", baselines_section),
    "diffppo_": ("Synthetic experience: DiffPPO vs PPO", diffppo_section),
}


def main() -> None:
    # Files without a "name" are supporting data (e.g. `rllib-diffusion evaluate --json`).
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    results = [r for r in results if "name" in r]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/make_docs.py` from `benchmarks/results/*.json`; "
        "each section names the command that produced it. How we measure: "
        "`shared/design/BENCHMARKS.md` (2-core CPU machines, noisy: compare ratios measured "
        "in the same run, not absolute times across runs).",
        "",
    ]
    for prefix, (title, render) in SECTIONS.items():
        group = [r for r in results if r["name"].startswith(prefix)]
        if group:
            lines += [f"## {title}", ""]
            for r in group:
                lines += render(r)
            if prefix == "dppo_finetune":
                lines += [
                    "`dppo_finetune_hopper_medium` and the Gaussian baseline below start from BC "
                    "policies trained on the same `rllib-diffusion/hopper/medium-v0` data and "
                    "spend the same env-step budget. The DDIM-5 / DDPM pair "
                    "(`dppo_finetune_hopper_{ddim5,ddpm}_{300k,600k}`, one seed each, machine "
                    "load average 10–22) start from the main job's 12k-step BC policy; the 600k "
                    "rows continue the 300k runs with `--resume`. "
                    "For orientation only (other env version and data): third-party runs of the "
                    "DPPO reference go from ≈1.4k to 2.2–2.6k on D4RL hopper-medium-v2 within "
                    "1.6M env steps. The two runs shared the machine's 2 cores with each other "
                    "and with test runs for part of the time, so their wall times are upper "
                    "bounds.",
                    "",
                ]
                lines += comparison_plot(results)
    if any(_is_offline(r) for r in results):
        lines += [
            "## Offline RL (Diffusion-QL, DAC, IDQL, FQL, d3rlpy baselines)",
            "",
            "One `benchmarks/offline.py` run per algorithm, each writing its own "
            "`offline_<algo>_<data>.json` (runs may span sessions). d3rlpy runs need "
            "`pip install -c constraints-cpu.txt d3rlpy==2.8.1` followed by "
            "`pip install -c constraints-cpu.txt 'gymnasium[mujoco]==1.2.2'` (d3rlpy pins "
            "gymnasium 1.0; it only uses our evaluation loop here). The runs so far shared "
            "the 2 cores with each other and with test runs (load average 20–30), so the "
            "gradient steps/s are lower bounds and not comparable between algorithms. "
            "Each result file records the git commit and settings it ran with (IDQL with "
            "IQL's reward normalisation, its default on locomotion).",
            "",
        ]
        for r in results:
            if r["name"].startswith(PROTOCOL_PREFIX):
                lines += protocol_section(r)
        lines += offline_table(results)
        lines += acting_table()
        lines += online_table(results)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
