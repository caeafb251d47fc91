"""CLI flags map onto the settings dataclasses (no training)."""

from __future__ import annotations

import pytest

from rllib_diffusion.algorithms.diffusion_ql.train import OfflineSettings
from rllib_diffusion.cli import (
    build_parser,
    finetune_settings_from_args,
    pretrain_settings_from_args,
    settings_from_args,
)


def test_pretrain_flags_map_to_settings():
    args = build_parser().parse_args(
        [
            "pretrain",
            "--dataset",
            "d",
            "--out",
            "o",
            "--hidden-dims",
            "8",
            "8",
            "--sampler",
            "ddim",
            "--ddim-steps",
            "5",
        ]
    )
    s = pretrain_settings_from_args(args)
    assert (s.dataset, s.out_dir, s.hidden_dims, s.sampler, s.ddim_steps) == (
        "d",
        "o",
        (8, 8),
        "ddim",
        5,
    )


def test_finetune_flags_map_to_settings():
    args = build_parser().parse_args(
        [
            "finetune",
            "--checkpoint",
            "c",
            "--no-reward-scaling",
            "--lambda",
            "0.9",
            "--ft-denoising-steps",
            "1",
        ]
    )
    s = finetune_settings_from_args(args)
    assert (s.checkpoint, s.reward_scaling, s.lambda_, s.ft_denoising_steps) == ("c", False, 0.9, 1)


def test_offline_flags_map_to_settings():
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", "idql", "--eta", "2"])
    s = settings_from_args(OfflineSettings, args)
    assert (s.algo, s.eta, s.alpha, s.normalize_rewards) == ("idql", 2.0, None, None)
    args = build_parser().parse_args(["offline", "--dataset", "d", "--no-normalize-rewards"])
    assert settings_from_args(OfflineSettings, args).normalize_rewards is False


def test_unknown_algorithm_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["offline", "--dataset", "d", "--algo", "cql"])
