"""Feynman-Kac correctors (Skreta et al., "Feynman-Kac Correctors in Diffusion: Annealing, Guidance, and
Product of Experts", ICML 2025): a reverse SDE over populations of weighted particles, resampled by SMC.

A pretrained model gives the noised marginals q_t of the forward VP process dx = f_t x dt + g_t dW
(f_t = d log alpha / dt, g_t^2 = -2 f_t). FKC samples a target built from their scores s = grad log q_t
by simulating, in reverse time tau (d tau = |dt|), a drift -f x + g^2 S with Feynman-Kac log-weights
d log w = r g^2 d tau, and resampling particles by their weights; x-independent terms of the weight
rate are dropped (they cancel when the weights are normalised). The three targets, each checked
against the paper's propositions, the official code (martaskrt/fkc-diffusion) and the Fokker-Planck
equation written out in docs/fkc.md:

  anneal   q_t^beta             S = beta s                 r = beta (beta - 1) / 2 ||s||^2    prior N(0, I / beta)
           (paper Prop. 3.2, the target-score SDE; the dropped term is (beta - 1) div f)
  product  q1_t q2_t            S = s1 + s2                r = <s1, s2>                      prior N(0, I / 2)
           (paper Prop. 3.3; dropped: div f)
  cfg      q_u^(1-w) q_c^w      S = s_u + w (s_c - s_u)    r = w (w - 1) / 2 ||s_c - s_u||^2  prior N(0, I)
           (the geometric-average case of Sec. 3; the official EDM2 sampler's increment
           -w (w - 1) ||s_u - s_c||^2 dt t_hat is this rate with g^2 = 2 t of sigma(t) = t)

The step: with F = log(alpha_t / alpha_s) (= int of -f over the step, and int g^2 = 2 F), Euler-Maruyama
in the integrated coefficients, x_t = x_s + F x_s + 2 F S(x_s) + sqrt(2 F) z, and log w += 2 F r(x_s).
`proposal="heun"` is the stochastic Heun step (predictor as above, corrector averaging both increments
with the same z) whose log-weight increment averages the rates at both points (the official image code's
Heun step is EDM's deterministic one and averages the scores before the norm; here it stays an SDE so that
copies made by resampling separate again; docs/fkc.md compares the two). With beta = 1 (anneal), w = 1 (cfg), or `weights=False`, the loop is the
plain reverse SDE of the drift, draw for draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser, as_denoiser
from ..diffusion.schedules import VPSchedule
from .base import BOOL, Option, Sampler, positive_int
from .noise import randn_like
from .registry import register
from .smc import (RESAMPLING, check_threshold, distinct_count, draw_uniforms, effective_sample_size,
                  gather_particles, resample)

TARGETS = ("anneal", "product", "cfg")
PROPOSALS = ("euler", "heun")


class Experts:
    """The denoisers a target reads (one, or two for a product), with their summed NFE count."""

    def __init__(self, denoisers: Sequence[Denoiser]):
        self.denoisers = tuple(denoisers)
        self.schedule = self.denoisers[0].schedule

    @property
    def nfe(self) -> int:
        return sum(d.nfe for d in self.denoisers)


@dataclass(frozen=True)
class Target:
    """One FKC target: the score of its drift and its weight rate r (per unit of int g^2), from expert scores."""

    kind: str
    beta: float

    def scores(self, experts: Experts, x: torch.Tensor, t) -> tuple[torch.Tensor, ...]:
        """The expert scores grad log q_t at x: (s,), (s1, s2) or (s_u, s_c); 1 NFE per expert (cfg: batched)."""
        den = experts.denoisers[0]
        sigma = den.coefficients(x, t)[1]
        if self.kind == "product":
            return tuple(-d.eps(x, t) / sigma for d in experts.denoisers)
        if self.kind == "cfg" and self.beta != 1.0:
            cond, uncond = den.guidance_pair(x, t, "eps")
            return -uncond / sigma, -cond / sigma
        return (-den.eps(x, t) / sigma,)

    def drift_score(self, scores: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """S of the drift -f x + g^2 S."""
        if self.kind == "product":
            return scores[0] + scores[1]
        if self.kind == "cfg":
            return scores[0] if len(scores) == 1 else scores[0] + self.beta * (scores[1] - scores[0])
        return self.beta * scores[0]

    def rate(self, scores: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """r [batch] (float64): the log-weight grows by r int g^2 d tau."""
        flat = [s.reshape(s.shape[0], -1).to(torch.float64) for s in scores]
        if self.kind == "product":
            return (flat[0] * flat[1]).sum(-1)
        if self.kind == "cfg":
            if len(flat) == 1:
                return torch.zeros(flat[0].shape[0], dtype=torch.float64, device=flat[0].device)
            return 0.5 * self.beta * (self.beta - 1.0) * ((flat[1] - flat[0]) ** 2).sum(-1)
        return 0.5 * self.beta * (self.beta - 1.0) * (flat[0] ** 2).sum(-1)

    def prior_std(self) -> float:
        """Standard deviation of the tempered prior at t_max: 1 / sqrt(beta) (anneal), 1 / sqrt(2) (product), 1 (cfg)."""
        return {"anneal": 1.0 / math.sqrt(self.beta), "product": math.sqrt(0.5), "cfg": 1.0}[self.kind]

    def weighted(self) -> bool:
        """Whether the weights can differ between particles at all."""
        return self.kind == "product" or self.beta != 1.0


@register("fkc")
class FKC(Sampler):
    """Feynman-Kac correctors with SMC resampling (Skreta et al. 2025, Props. 3.2-3.3 and Sec. 3; see the module)."""

    OPTIONS = {
        "target": Option("anneal", choices=TARGETS, doc="anneal: q^beta; product: q1 q2 (model = (model_a, model_b)); "
                                                        "cfg: q_u^(1-w) q_c^w, w the Denoiser's guidance_scale"),
        "beta": Option(1.0, check=lambda v: not isinstance(v, bool) and float(v) > 0, allowed="a number > 0",
                       doc="annealing exponent (target anneal only)"),
        "num_particles": Option(1, check=positive_int(), allowed="an integer >= 1",
                                doc="particles per population; the batch holds batch / num_particles populations"),
        "proposal": Option("euler", choices=PROPOSALS, doc="Euler-Maruyama (1 evaluation per expert and step) or "
                                                           "stochastic Heun (2)"),
        "weights": Option(True, choices=BOOL, doc="false: the unweighted SDE of the same drift (no resampling)"),
        "resampling": Option("systematic", choices=RESAMPLING, doc="how ancestors are drawn"),
        "ess_threshold": Option(1.0, check=lambda v: not isinstance(v, bool) and 0 < float(v) <= 1,
                                allowed="a number in (0, 1]",
                                doc="resample a population when ESS < ess_threshold * num_particles (1.0: every step)"),
        "final_resample": Option(True, choices=BOOL, doc="resample after the last step so that the particles are "
                                                         "equally weighted samples of the target"),
        "center_increments": Option(False, choices=BOOL, doc="subtract each population's mean log-weight increment "
                                                             "(official image code; alone it changes nothing)"),
        "clamp_increments": Option(0.0, check=lambda v: not isinstance(v, bool) and float(v) >= 0,
                                   allowed="a number >= 0", doc="clamp each log-weight increment to [-c, c] "
                                                                "(official image code: 1 or 2; 0: off, exact)"),
    }
    stochastic = True

    def check_options(self) -> None:
        o = self.options
        if "beta" in self.explicit and o["target"] != "anneal":
            raise ValueError(f"sampler 'fkc': option beta applies to target 'anneal' only; target {o['target']!r} takes "
                             f"{'the guidance scale of the Denoiser (--guidance-scale)' if o['target'] == 'cfg' else 'no beta'}")
        if o["weights"] and o["num_particles"] == 1 and (o["target"] == "product" or float(o["beta"]) != 1.0):
            raise ValueError("sampler 'fkc': weights with num_particles=1 change nothing; allowed: num_particles >= 2, "
                             "or weights=false for the unweighted SDE")
        check_threshold(o["ess_threshold"])
        if o["time_shift"]:
            raise ValueError("sampler 'fkc': option time_shift=True is not allowed (its particles' weights are defined "
                             "at the grid's own times); allowed: time_shift=False")

    # --- NFE: evaluations per step and per final x0, per expert ---------------------------------------------------
    @property
    def experts(self) -> int:  # type: ignore[override]
        return 2 if self.options["target"] == "product" else 1

    @property
    def population(self) -> int:  # type: ignore[override]
        return int(self.options["num_particles"])

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return (2 if self.options["proposal"] == "heun" else 1) * self.experts

    @property
    def final_evals(self) -> int:  # type: ignore[override]
        return self.experts

    # --- models ---------------------------------------------------------------------------------------------
    def as_denoiser(self, model, schedule: VPSchedule) -> Experts:  # type: ignore[override]
        """One Denoiser, or for target 'product' a pair (model_a, model_b) of Denoisers or eps callables."""
        pair = isinstance(model, (tuple, list))
        if self.options["target"] == "product":
            if not pair or len(model) != 2:
                raise ValueError("sampler 'fkc' with target 'product' needs model=(model_a, model_b), two models")
            return Experts([as_denoiser(m, schedule) for m in model])
        if pair:
            raise ValueError(f"sampler 'fkc' with target {self.options['target']!r} takes one model; a pair of models "
                             f"is for target 'product'")
        return Experts([as_denoiser(model, schedule)])

    def target(self, experts: Experts) -> Target:
        kind = self.options["target"]
        if kind == "cfg":
            return Target(kind, experts.denoisers[0].guidance_scale)
        return Target(kind, float(self.options["beta"]))

    def final_x0(self, experts: Experts, x: torch.Tensor, t) -> torch.Tensor:  # type: ignore[override]
        """Tweedie's x0 for the target's score: (x + sigma^2 S) / alpha (one evaluation per expert)."""
        target = self.target(experts)
        alpha, sigma = experts.denoisers[0].coefficients(x, t)
        return (x + sigma**2 * target.drift_score(target.scores(experts, x, t))) / alpha

    # --- the loop --------------------------------------------------------------------------------------------
    def solve(self, experts: Experts, x, grid, generator=None, callback=None, steps=None):  # type: ignore[override]
        target, k = self.target(experts), int(self.options["num_particles"])
        populations = _populations(x.shape[0], k)
        _check_labels(experts, target, populations, k)
        if self.options["weights"] and k == 1 and target.weighted():
            raise ValueError(f"sampler 'fkc': weights with num_particles=1 change nothing (guidance_scale "
                             f"{target.beta:g}); allowed: num_particles >= 2, or weights=false for the guided SDE")
        weighted = bool(self.options["weights"]) and k > 1 and target.weighted()
        resampler = _Resampler(self.options, populations, k, generator) if weighted else None
        x = x * target.prior_std()
        log_w = torch.zeros(populations, k, dtype=torch.float64, device=x.device)
        lineage = torch.arange(populations * k, device=x.device).reshape(populations, k)
        last = len(grid) - 2
        for i in steps if steps is not None else range(len(grid) - 1):
            s, t = grid[i], grid[i + 1]
            x, x0, rate, span = self.step(experts, target, x, s, t, generator)
            info: dict = {}
            if resampler is not None:
                log_w = log_w + resampler.increment(span * rate.reshape(populations, k))
                final = i == last and bool(self.options["final_resample"])
                x, log_w, lineage, info = resampler.resample(x, log_w, lineage, final)
            _report(callback, i, s, t, x, x0, info)
        return x

    def step(self, experts: Experts, target: Target, x, s, t, generator):
        """One proposal step s -> t: (x_t, x0 at s, weight rate r [batch], int g^2 over the step)."""
        sched = experts.schedule
        f = float(torch.log(sched.alpha(t.to(torch.float64)) / sched.alpha(s.to(torch.float64))))
        span = 2.0 * f
        alpha_s, sigma_s = experts.denoisers[0].coefficients(x, s)
        scores = target.scores(experts, x, s)
        drift = target.drift_score(scores)
        x0 = (x + sigma_s**2 * drift) / alpha_s
        noise = math.sqrt(span) * randn_like(x, generator)
        inc = f * x + span * drift
        x_next = x + inc + noise
        rate = target.rate(scores)
        if self.options["proposal"] == "heun":
            scores_2 = target.scores(experts, x_next, t)
            x_next = x + 0.5 * (inc + f * x_next + span * target.drift_score(scores_2)) + noise
            rate = 0.5 * (rate + target.rate(scores_2))
        return x_next, x0, rate, span


class _Resampler:
    """The SMC part of one solve: weight increments (with the optional stabilisers) and adaptive resampling."""

    def __init__(self, options: dict, populations: int, k: int, generator):
        self.method, self.threshold = options["resampling"], float(options["ess_threshold"])
        self.center, self.clamp = bool(options["center_increments"]), float(options["clamp_increments"])
        self.populations, self.k = populations, k
        self.generator = _resampling_generators(generator, populations, k)

    def increment(self, d: torch.Tensor) -> torch.Tensor:
        if self.center:
            d = d - d.mean(-1, keepdim=True)
        if self.clamp > 0:
            d = d.clamp(-self.clamp, self.clamp)
        return d

    def resample(self, x, log_w, lineage, final: bool):
        """Resample the populations whose ESS fell below the threshold (all of them when `final`); reset their weights."""
        u = draw_uniforms(self.method, self.populations, self.k, self.generator)
        ess = effective_sample_size(log_w)
        idx, which = resample(log_w, self.method, 1.0 if final else self.threshold, u)
        info = {"ess": ess, "log_weights": log_w, "resampled": which}
        x = gather_particles(x, idx)
        lineage = torch.gather(lineage, 1, idx.to(lineage.device))
        log_w = torch.where(which.unsqueeze(1), torch.zeros_like(log_w), log_w)
        info["distinct_ancestors"] = distinct_count(lineage)
        return x, log_w, lineage, info


def _populations(batch: int, k: int) -> int:
    if batch % k:
        raise ValueError(f"sampler 'fkc': the batch of {batch} is not a whole number of populations of num_particles={k}; "
                         f"allowed: a batch that is a multiple of num_particles")
    return batch // k


def _check_labels(experts: Experts, target: Target, populations: int, k: int) -> None:
    """cfg: the particles of one population are one target, so they must share one label."""
    labels = experts.denoisers[0].labels
    if target.kind != "cfg" or labels is None or k == 1:
        return
    rows = labels.reshape(populations, k)
    if not bool((rows == rows[:, :1]).all()):
        raise ValueError("sampler 'fkc' with target 'cfg': the particles of a population (num_particles consecutive "
                         "samples) must share one label")


def _resampling_generators(generator, populations: int, k: int):
    """Generators for the resampling draws, apart from the particles' noise (so that the particle noise is the
    plain SDE's): population p draws from one seeded by the seed of its first particle's generator; one
    generator for the batch gives one derived generator; None uses the global generator."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return _derived(generator)
    return [_derived(generator[p * k]) for p in range(populations)]


def _derived(g: torch.Generator) -> torch.Generator:
    out = torch.Generator(device=g.device)
    out.manual_seed((int(g.initial_seed()) * 1_000_003 + 0x5EED) % (2**63 - 1))
    return out


def _report(callback: Optional[Callable[[dict], None]], i: int, t, t_next, x, x0, info: dict) -> None:
    """The documented step dict(i, t, t_next, x, x0) plus, when weighted: ess [P] and log_weights [P, K] before
    resampling, resampled [P], and distinct_ancestors [P] (how many starting particles still have descendants)."""
    if callback is not None:
        callback({"i": i, "t": t, "t_next": t_next, "x": x, "x0": x0, **info})
