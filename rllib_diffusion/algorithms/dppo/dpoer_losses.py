"""DPOER's pieces on top of DPPO's chain-PPO loss (pure torch, no Ray).

DPOER (seed 001's "Improved Version", configs ``ft_sac_ppo_diffusion_mlp*``): DPPO plus
a SAC-style temperature α learned against a target entropy. The temperature enters the
unclipped branch of the clipped surrogate as ``(α/λ)·log π`` (an entropy bonus on the
denoising step) and is itself updated by ``−log α · (H_target − Ĥ)``, where ``Ĥ`` is the
seed's estimate of the policy's entropy: a Gaussian mixture fitted, per minibatch row, to
the ``Ta`` action rows of one freshly sampled denoising step (:func:`gmm_entropy`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Mixture components of the seed's entropy estimate (``GaussianMixture(n_components=3)``).
GMM_COMPONENTS = 3
#: Covariance regulariser added to every component (scikit-learn's ``reg_covar`` default).
GMM_REG_COVAR = 1e-6
#: EM iterations (scikit-learn's ``max_iter`` default; it may stop earlier at ``tol``).
GMM_ITERATIONS = 100
#: Smallest temperature: the seed updates α itself (not log α) with Adam, which can step it
#: past 0 (then ``log α`` is NaN); we keep it at or above this floor.
ALPHA_FLOOR = 1e-8


def entropy_surrogate_term(alpha: Tensor, new_logp: Tensor, scale: float) -> Tensor:
    """Term added to the unclipped branch of DPPO's surrogate (per pair).

    ``L = mean(max(−A·r + s·α·log π_θ(x_{k−1}|x_k,s), −A·clip(r, 1−c, 1+c)))`` with
    ``s = 1/λ`` (the seed's ``lambda_alpha_entropy``, 10,000 by default, 1,000 or 10,000
    in its Square/Transport variants) and α held constant (no gradient reaches α from the
    policy loss). Returns ``s·α·log π`` of shape ``new_logp.shape``.
    """
    return scale * alpha.detach() * new_logp


def temperature_loss(alpha: Tensor, entropy: float, target_entropy: float) -> Tensor:
    """The seed's temperature loss ``−log α · (H_target − Ĥ)`` (α itself is the parameter).

    ``∂L/∂α = −(H_target − Ĥ)/α``: α grows while the estimated entropy ``Ĥ`` is below the
    target and shrinks while it is above.
    """
    return -(alpha.clamp_min(ALPHA_FLOOR).log() * (target_entropy - float(entropy))).mean()


def gaussian_entropy(std: Tensor) -> Tensor:
    """Closed-form entropy ``Σ ½·log(2πe·σ²)`` over the last two dims (``(B, Ta, Da)`` →
    ``(B,)``) of a diagonal Gaussian denoising step: our alternative to the seed's
    mixture estimate (``entropy_estimator="gaussian"``)."""
    return (0.5 * math.log(2 * math.pi * math.e) + std.log()).flatten(1).sum(dim=1)


def sample_step(mean: Tensor, std: Tensor, generator: torch.Generator, clip: float = 3.0) -> Tensor:
    """One denoising step drawn as the seed's estimate draws it: ``μ + σ·clip(ε, ±3)``."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + std * noise.clamp(-clip, clip)


def _kmeans_labels(x: Tensor, c: int, iterations: int = 10) -> Tensor:
    """Hard k-means labels ``(B, N)`` of each row's ``N`` points: farthest-point seeds from
    point 0, then Lloyd steps (scikit-learn starts its EM from k-means labels too)."""
    b, n, _ = x.shape
    idx = torch.zeros(b, c, dtype=torch.long, device=x.device)
    dist = (x - x[:, :1]).pow(2).sum(-1)
    for j in range(1, c):
        idx[:, j] = dist.argmax(dim=1)
        new = x.gather(1, idx[:, j, None, None].expand(-1, 1, x.shape[-1]))
        dist = torch.minimum(dist, (x - new).pow(2).sum(-1))
    centers = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    for _ in range(iterations):
        labels = torch.cdist(x, centers).argmin(dim=2)
        onehot = torch.nn.functional.one_hot(labels, c).to(x.dtype)
        count = onehot.sum(1)[..., None]
        moved = onehot.transpose(1, 2) @ x / count.clamp_min(1)
        centers = torch.where(count > 0, moved, centers)
    return torch.cdist(x, centers).argmin(dim=2)


def _m_step(x: Tensor, resp: Tensor, reg: float) -> tuple[Tensor, Tensor, Tensor]:
    """Weights ``(B, C)``, means ``(B, C, d)``, full covariances ``(B, C, d, d)``."""
    nk = resp.sum(1) + 10 * torch.finfo(x.dtype).eps
    means = resp.transpose(1, 2) @ x / nk[..., None]
    diff = x[:, None] - means[:, :, None]  # (B, C, N, d)
    weighted = diff * resp.transpose(1, 2)[..., None]
    cov = weighted.transpose(2, 3) @ diff / nk[..., None, None]
    cov = cov + reg * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return nk / x.shape[1], means, cov


def _log_gaussian(x: Tensor, means: Tensor, cov: Tensor) -> Tensor:
    """``log N(x_n | μ_c, Σ_c)`` of every point and component: ``(B, N, C)``."""
    chol = torch.linalg.cholesky(cov)  # (B, C, d, d)
    diff = (x[:, None] - means[:, :, None]).transpose(2, 3)  # (B, C, d, N)
    z = torch.linalg.solve_triangular(chol, diff, upper=False)
    half_logdet = chol.diagonal(dim1=2, dim2=3).log().sum(-1)  # (B, C)
    d = x.shape[-1]
    log_p = -0.5 * z.pow(2).sum(2) - half_logdet[..., None] - 0.5 * d * math.log(2 * math.pi)
    return log_p.transpose(1, 2)


def gmm_entropy(
    points: Tensor,
    *,
    components: int = GMM_COMPONENTS,
    iterations: int = GMM_ITERATIONS,
    reg_covar: float = GMM_REG_COVAR,
    tol: float = 1e-3,
) -> Tensor:
    """The seed's entropy estimate of each row's point set ``(B, N, d)`` → ``(B,)``.

    A full-covariance mixture of ``C = min(components, N)`` Gaussians is fitted to the
    ``N`` points of each row by EM (from k-means labels); the estimate is the mixture's
    entropy bound ``H(w) + Σ_c w_c·(½·d·(1 + log 2π) + ½·log det Σ_c)``. In the seed the
    points are the ``Ta`` action rows of one sampled denoising step (``N = Ta = 4``,
    ``d = Da``): with 3 components on 4 points a component holds one or two points, so
    each ``Σ_c`` is ``reg_covar·I`` plus at most a rank-one spread, and the estimate
    follows ``reg_covar`` and the spread of the chunk's rows more than the step's noise.
    """
    x = points.detach().double()
    c = min(components, x.shape[1])
    resp = torch.nn.functional.one_hot(_kmeans_labels(x, c), c).double()
    weights, means, cov = _m_step(x, resp, reg_covar)
    bound = None
    for _ in range(iterations):
        log_p = _log_gaussian(x, means, cov) + weights.log()[:, None]  # (B, N, C)
        norm = log_p.logsumexp(dim=2, keepdim=True)
        resp = (log_p - norm).exp()
        weights, means, cov = _m_step(x, resp, reg_covar)
        new_bound = norm.mean(dim=(1, 2))
        if bound is not None and (new_bound - bound).abs().max() < tol:
            break  # scikit-learn's convergence test (change of the mean log-likelihood)
        bound = new_bound
    d = x.shape[-1]
    per_component = 0.5 * d * (1 + math.log(2 * math.pi)) + 0.5 * torch.linalg.slogdet(cov)[1]
    mixing = -(weights * weights.clamp_min(1e-300).log()).sum(-1)
    return (mixing + (weights * per_component).sum(-1)).float()
