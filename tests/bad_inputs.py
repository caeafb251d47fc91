"""A battery of bad inputs across every sub-command (issue 11), shared by
``tests/test_bad_inputs.py`` (in-process, asserting the outcome) and
``scripts/bad_input_battery.py`` (subprocesses against any checkout, counting outcomes).

Each case is ``(id, argv, names)``: ``argv`` may hold ``{placeholders}`` filled from
:func:`make_inputs`; ``names`` must appear in the one error line (a flag, a file name or
a value). Every case must fail: a non-zero exit, one ``error:`` line naming ``names``, no
traceback and nothing written under ``{out}``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: The project's own small dataset (valid input for the cases that break something else).
DATASET = Path(__file__).resolve().parents[1] / "data" / "hopper-medium-v5-small.npz"

P = ["pretrain", "--dataset", "{dataset}", "--out", "{out}"]
F = ["finetune", "--checkpoint", "{ckpt}", "--out", "{out}"]
O = ["offline", "--dataset", "{dataset}", "--out", "{out}"]  # noqa: E741
OD = ["--dydiff-model", "{ckpt}"]
OD_OK = ["--real-ratio", "0.5", "--steps-per-iteration", "500"]
E = ["evaluate", "--checkpoint"]
C = ["collect", "--dataset-id", "battery/none/x-v0"]
CS = [*C, "--env", "Hopper-v5", "--num-steps", "10"]
CC = ["concat-datasets", "--dataset-id"]
T = ["tune", "--storage-path", "{out}"]
S = ["synthesize", "--dataset", "{dataset}", "--out", "{out}", "--dataset-id", "battery/s/x-v0"]
Y = ["dydiff", "--dataset", "{dataset}", "--out", "{out}"]
YR = [*Y, "--policy", "{ckpt}", "--dataset-id", "battery/d/x-v0"]

CASES: list[tuple[str, list[str], str]] = [
    # pretrain: budgets, rates, shapes, choices, data, output dir, env
    ("pretrain-steps-0", [*P, "--gradient-steps", "0"], "--gradient-steps"),
    ("pretrain-steps-negative", [*P, "--gradient-steps", "-10"], "--gradient-steps"),
    ("pretrain-lr-0", [*P, "--lr", "0"], "--lr"),
    ("pretrain-lr-negative", [*P, "--lr", "-0.001"], "--lr"),
    ("pretrain-batch-0", [*P, "--batch-size", "0"], "--batch-size"),
    ("pretrain-batch-text", [*P, "--batch-size", "many"], "--batch-size"),
    ("pretrain-act-steps-over-horizon", [*P, "--act-steps", "8"], "--act-steps"),
    ("pretrain-hidden-0", [*P, "--hidden-dims", "0", "8"], "--hidden-dims"),
    ("pretrain-sampler", [*P, "--sampler", "euler"], "--sampler"),
    ("pretrain-ddim-steps-ddpm", [*P, "--ddim-steps", "5"], "--ddim-steps"),
    ("pretrain-eval-episodes-0", [*P, "--eval-episodes", "0"], "--eval-episodes"),
    ("pretrain-iteration-0", [*P, "--steps-per-iteration", "0"], "--steps-per-iteration"),
    ("pretrain-unknown-flag", [*P, "--no-such-flag", "1"], "--no-such-flag"),
    ("pretrain-missing-dataset", ["pretrain", "--dataset", "{missing}", "--out", "{out}"], "nope"),
    ("pretrain-truncated-npz", ["pretrain", "--dataset", "{trunc_npz}", "--out", "{out}"], "trunc"),
    ("pretrain-text-npz", ["pretrain", "--dataset", "{text_npz}", "--out", "{out}"], "text.npz"),
    ("pretrain-empty-npz", ["pretrain", "--dataset", "{empty_npz}", "--out", "{out}"], "empty"),
    ("pretrain-out-is-file", ["pretrain", "--dataset", "{dataset}", "--out", "{file}"], "a_file"),
    ("pretrain-out-has-run", ["pretrain", "--dataset", "{dataset}", "--out", "{run}"], "--resume"),
    ("pretrain-unknown-env", [*P, "--env-id", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
    ("pretrain-other-env", [*P, "--env-id", "Walker2d-v5"], "Walker2d-v5"),
    # finetune: budgets, counts, checkpoint, knobs, resources
    ("finetune-env-steps-0", [*F, "--env-steps", "0"], "--env-steps"),
    ("finetune-runners-negative", [*F, "--num-env-runners", "-1"], "--num-env-runners"),
    ("finetune-missing-ckpt", ["finetune", "--checkpoint", "{missing}", "--out", "{out}"], "nope"),
    ("finetune-bad-meta", ["finetune", "--checkpoint", "{bad_meta}", "--out", "{out}"], "json"),
    ("finetune-foreign-knob", [*F, "--eta", "5"], "--eta"),
    ("finetune-eta-without-ddim", [*F, "--ddim-eta", "0.5"], "--use-ddim"),
    ("finetune-ft-steps-too-many", [*F, "--ft-denoising-steps", "100"], "ft-denoising-steps"),
    ("finetune-actor-lr-negative", [*F, "--actor-lr", "-1"], "--actor-lr"),
    ("finetune-epochs-0", [*F, "--num-epochs", "0"], "--num-epochs"),
    ("finetune-target-kl-0", [*F, "--target-kl", "0"], "--target-kl"),
    ("finetune-decisions-0", [*F, "--decisions-per-iteration", "0"], "--decisions-per-iteration"),
    ("finetune-clamp-reversed", [*F, "--logprob-clamp", "2", "1"], "--logprob-clamp"),
    ("finetune-drwr-foreign-knob", [*F, "--algo", "drwr", "--critic-lr", "1e-3"], "--critic-lr"),
    ("finetune-dawr-max-weight-0", [*F, "--algo", "dawr", "--max-weight", "0"], "--max-weight"),
    ("finetune-dpoer-interval-0", [*F, "--algo", "dpoer", "--entropy-interval", "0"], "--entropy-"),
    ("finetune-dpoer-estimator", [*F, "--algo", "dpoer", "--entropy-estimator", "kde"], "kde"),
    ("finetune-cpu-resource", [*F, "--env-runner-resources", '{"CPU": 1}'], "CPU"),
    ("finetune-resource-not-json", [*F, "--env-runner-resources", "rollout"], "--env-runner"),
    ("finetune-learner-resources", [*F, "--learner-resources", '{"l": 1}'], "--num-learners"),
    ("finetune-out-is-file", ["finetune", "--checkpoint", "{ckpt}", "--out", "{file}"], "a_file"),
    ("finetune-dql-not-bc", ["finetune", "--algo", "dql", "--checkpoint", "{not_bc}", "--out",
                             "{out}"], "DiffusionBC"),  # fmt: skip
    ("finetune-idql-other-env", ["finetune", "--algo", "idql", "--checkpoint", "{other_env}",
                                 "--out", "{out}"], "Walker2d-v5"),  # fmt: skip
    ("finetune-idql-expectile-1", [*F, "--algo", "idql", "--expectile", "1"], "--expectile"),
    ("finetune-dql-bc-actions", [*F, "--algo", "dql", "--bc-actions", "ema"], "--bc-actions"),
    ("finetune-synther-knob-off", [*F, "--algo", "dql", "--synther-pool-size", "9"], "--synther-"),
    ("finetune-synther-ratio", [*F, "--algo", "qsm", "--synther-real-ratio", "0.3333"], "0.3333"),
    ("finetune-synther-dipo", [*F, "--algo", "dipo", "--synther-real-ratio", "0.5"], "DIPO"),
    # offline: algorithm, knobs of other algorithms, budgets
    ("offline-unknown-algo", [*O, "--algo", "cql"], "--algo"),
    ("offline-foreign-knob", [*O, "--algo", "dac", "--alpha", "3"], "--alpha"),
    ("offline-unused-network-flag", [*O, "--algo", "fql", "--num-candidates", "5"], "candidates"),
    ("offline-td3bc-policy-freq-0", [*O, "--algo", "td3bc", "--policy-freq", "0"], "--policy-freq"),
    ("offline-batch-0", [*O, "--batch-size", "0"], "--batch-size"),
    ("offline-lr-end-negative", [*O, "--lr-end", "-1"], "--lr-end"),
    # online
    ("online-missing-ckpt", ["online", "--checkpoint", "{missing}", "--out", "{out}"], "nope"),
    ("online-bc-ckpt", ["online", "--checkpoint", "{ckpt}", "--out", "{out}"], "DiffusionBC"),
    (
        "online-utd-0",
        ["online", "--checkpoint", "{ckpt}", "--out", "{out}", "--updates-per-env-step", "0"],
        "--updates-per-env-step",
    ),
    # evaluate
    ("evaluate-episodes-0", [*E, "{ckpt}", "--episodes", "0"], "--episodes"),
    ("evaluate-missing-ckpt", [*E, "{missing}"], "nope"),
    ("evaluate-bad-meta", [*E, "{bad_meta}"], "rllib_diffusion.json"),
    ("evaluate-truncated-module", [*E, "{trunc_module}"], "damaged"),
    ("evaluate-candidates-0", [*E, "{ckpt}", "--num-candidates", "0"], "--num-candidates"),
    # collect
    ("collect-discrete-env", [*C, "--env", "CartPole-v1", "--num-episodes", "1"], "CartPole-v1"),
    ("collect-unknown-env", [*C, "--env", "NoSuchEnv-v0", "--num-episodes", "1"], "NoSuchEnv"),
    (
        "collect-missing-policy",
        [*C, "--env", "Hopper-v5", "--num-episodes", "1", "--policy", "{missing}"],
        "nope",
    ),
    ("collect-episodes-0", [*C, "--env", "Hopper-v5", "--num-episodes", "0"], "--num-episodes"),
    ("collect-until-return-alone", [*CS, "--until-return", "5"], "--until-return"),
    ("collect-sequence-not-a-run", [*CS, "--policy-sequence", "{missing}"], "nope"),
    ("collect-sequence-and-policy", [*CS, "--policy-sequence", "{out}", "--policy", "random"], "--policy"),
    # concat-datasets
    ("concat-one-source", [*CC, "battery/c/x-v0", "--sources", "{dataset}"], "--sources"),
    ("concat-missing-source", [*CC, "battery/c/x-v0", "--sources", "{dataset}", "{missing}"], "nope"),
    ("concat-malformed-id", [*CC, "no-version", "--sources", "{dataset}", "{dataset}"], "no-version"),
    # dataset-info
    # synthesize (and mixing synthetic data into offline runs)
    # dydiff (segment dynamics model and policy rollouts)
    ("dydiff-policy-without-id", [*Y, "--policy", "{ckpt}"], "--dataset-id"),
    ("dydiff-id-without-policy", [*Y, "--dataset-id", "battery/d/x-v0"], "--policy"),
    ("dydiff-filter", [*Y, "--filter", "topk"], "--filter"),
    ("dydiff-ensemble-1", [*Y, "--ensemble-size", "1"], "--ensemble-size"),
    ("dydiff-diffuse", [*Y, "--diffuse", "noise"], "--diffuse"),
    ("dydiff-keep-fraction", [*Y, "--keep-fraction", "1.5"], "--keep-fraction"),
    ("dydiff-malformed-id", [*YR[:-1], "no-version"], "no-version"),
    ("dydiff-missing-model", [*YR, "--model", "{missing}"], "nope"),
    ("dydiff-foreign-model", [*YR, "--model", "{ckpt}"], "DiffusionBC"),
    ("synthesize-malformed-id", [*S[:-1], "no-version"], "no-version"),
    ("synthesize-no-dataset-id", S[:-2], "--dataset-id"),
    ("synthesize-transitions-0", [*S, "--num-transitions", "0"], "--num-transitions"),
    ("synthesize-terminals-unknown", [*S, "--terminals", "sometimes"], "--terminals"),
    ("synthesize-ddim-over-k", [*S, "--denoising-steps", "10", "--ddim-steps", "20"], "--ddim"),
    ("synthesize-missing-generator", [*S, "--generator", "{missing}"], "nope"),
    ("synthesize-foreign-generator", [*S, "--generator", "{ckpt}"], "DiffusionBC"),
    ("synthesize-missing-dataset", ["synthesize", "--dataset", "{missing}", *S[3:]], "nope"),
    ("offline-real-ratio-alone", [*O, "--real-ratio", "0.5"], "--synthetic-dataset"),
    ("offline-real-ratio-over-1", [*O, "--real-ratio", "1.5"], "--real-ratio"),
    (
        "offline-real-ratio-inexact",
        [*O, "--synthetic-dataset", "{dataset}", "--real-ratio", "0.3", "--batch-size", "256"],
        "--real-ratio",
    ),
    # offline with DyDiff rollouts regenerated by the learning policy
    ("offline-dydiff-knob-without-model", [*O, "--dydiff-regenerate-every", "1000"], "--dydiff-model"),
    ("offline-dydiff-no-real-ratio", [*O, *OD, "--steps-per-iteration", "500"], "--real-ratio"),
    ("offline-dydiff-foreign-model", [*O, *OD, *OD_OK], "DiffusionBC"),
    (
        "offline-dydiff-missing-model",
        [*O, "--dydiff-model", "{missing}", *OD_OK],
        "nope",
    ),
    ("dataset-info-missing", ["dataset-info", "{missing}"], "nope"),
    ("dataset-info-truncated", ["dataset-info", "{trunc_npz}"], "trunc"),
    # tune: config files and --set
    ("tune-missing-sweep", [*T, "{missing}.py"], "nope"),
    ("tune-syntax-error", [*T, "{syntax_sweep}", "--checkpoint", "{ckpt}"], "syntax"),
    ("tune-misspelt-key", [*T, "{typo_sweep}", "--checkpoint", "{ckpt}"], "actr_lr"),
    ("tune-set-unknown", [*T, "dppo_hopper", "--checkpoint", "{ckpt}", "--set", "x_y=1"], "x_y"),
    ("tune-set-type", [*T, "dppo_hopper", "--checkpoint", "{ckpt}", "--set", "seed=a"], "seed"),
    # Gaussian baseline and the behaviour policy
    ("pretrain-gaussian-activation", ["pretrain-gaussian", "--dataset", "{dataset}",
                                      "--out", "{out}", "--activation", "gelu"], "--activation"),
    ("pretrain-gaussian-lr-0", ["pretrain-gaussian", "--dataset", "{dataset}", "--out", "{out}",
                                "--lr", "0"], "--lr"),
    ("pretrain-gaussian-num-modes-0", ["pretrain-gaussian", "--dataset", "{dataset}", "--out",
                                       "{out}", "--num-modes", "0"], "--num-modes"),
    ("pretrain-gaussian-gmm-std-alone", ["pretrain-gaussian", "--dataset", "{dataset}", "--out",
                                         "{out}", "--gmm-fixed-std", "0.3"], "--num-modes"),
    ("finetune-gaussian-bc-ckpt", ["finetune-gaussian", "--checkpoint", "{ckpt}", "--out",
                                   "{out}"], "GaussianBC"),
    ("finetune-gaussian-minibatch", ["finetune-gaussian", "--checkpoint", "{ckpt}", "--out",
                                     "{out}", "--minibatch-size", "100", "--train-batch-size",
                                     "10"], "--minibatch-size"),
    ("finetune-gaussian-gamma-0", ["finetune-gaussian", "--checkpoint", "{ckpt}", "--out",
                                   "{out}", "--gamma", "0"], "--gamma"),
    ("finetune-gaussian-synthetic-ratio-negative", ["finetune-gaussian", "--checkpoint", "{ckpt}",
                                                    "--out", "{out}", "--synthetic-ratio", "-1"],
     "--synthetic-ratio"),
    ("finetune-gaussian-synthetic-actions", ["finetune-gaussian", "--checkpoint", "{ckpt}", "--out",
                                             "{out}", "--synthetic-actions", "mixed"],
     "--synthetic-actions"),
    ("train-behavior-unknown-env", ["train-behavior", "--env", "NoSuchEnv-v0", "--out", "{out}"],
     "NoSuchEnv"),
    ("train-behavior-minutes-0", ["train-behavior", "--env", "Hopper-v5", "--out", "{out}",
                                  "--max-minutes", "0"], "--max-minutes"),
]  # fmt: skip


def make_inputs(root: Path, checkpoint: Path, earlier_run: Path) -> dict[str, str]:
    """The placeholders' values: bad files under ``root`` made from a good ``checkpoint``
    (a DiffusionBC one) and a copy of ``earlier_run`` (a finished pretrain output)."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    good = DATASET.read_bytes()
    (root / "trunc.npz").write_bytes(good[: len(good) // 2])
    (root / "text.npz").write_text("not an npz\n")
    with np.load(DATASET) as data:
        empty = {k: data[k][:0] if data[k].ndim else data[k] for k in data.files}
    np.savez(root / "empty.npz", **empty)
    (root / "a_file").write_text("a file, not a directory\n")
    bad_meta = _copy(checkpoint, root / "bad_meta")
    (bad_meta / "rllib_diffusion.json").write_text("{ not json")
    not_bc = _edited_meta(checkpoint, root / "not_bc", algorithm="idql")
    other_env = _edited_meta(checkpoint, root / "other_env", env_id="Walker2d-v5")
    trunc = _copy(checkpoint, root / "trunc_module")
    for state in trunc.rglob("module_state.pkl"):
        state.write_bytes(state.read_bytes()[:100])
    (root / "syntax_sweep.py").write_text("def make_sweep(args:\n    return 1\n")
    hopper = (DATASET.parents[1] / "tune_configs" / "dppo_hopper.py").read_text()
    (root / "typo_sweep.py").write_text(hopper.replace("actor_lr=tune", "actr_lr=tune"))
    return {
        "dataset": str(DATASET),
        "ckpt": str(checkpoint),
        "missing": str(root / "nope"),
        "trunc_npz": str(root / "trunc.npz"),
        "text_npz": str(root / "text.npz"),
        "empty_npz": str(root / "empty.npz"),
        "file": str(root / "a_file"),
        "run": str(_copy(earlier_run, root / "earlier_run")),
        "bad_meta": str(bad_meta),
        "not_bc": str(not_bc),
        "other_env": str(other_env),
        "trunc_module": str(trunc),
        "syntax_sweep": str(root / "syntax_sweep.py"),
        "typo_sweep": str(root / "typo_sweep.py"),
    }


def _edited_meta(src: Path, dst: Path, **changes: str) -> Path:
    """A copy of checkpoint ``src`` whose meta says ``changes`` (``env_id`` in the policy
    config too): a foreign algorithm, or a policy on an env it does not fit."""
    dst = _copy(src, dst)
    meta = json.loads((dst / "rllib_diffusion.json").read_text())
    meta.update(changes)
    if "env_id" in changes:
        meta["policy_config"]["env_id"] = changes["env_id"]
    (dst / "rllib_diffusion.json").write_text(json.dumps(meta))
    return dst


def _copy(src: Path, dst: Path) -> Path:
    if not dst.exists():
        shutil.copytree(src, dst)
    return dst


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) if "{" in a and not a.startswith('{"') else a for a in argv]


def listing(path: Path) -> list[str]:
    """Files under ``path`` with sizes (to show nothing was written)."""
    if not path.exists():
        return []
    if path.is_file():
        return [f"{path.name} {path.stat().st_size}"]
    return sorted(f"{p.relative_to(path)} {p.stat().st_size}" for p in path.rglob("*"))


def snapshot(values: dict[str, str]) -> str:
    """What the outputs that must stay untouched hold."""
    return json.dumps({k: listing(Path(values[k])) for k in ("run", "file")})
