"""Versioned training recipes of the shipped models.

A recipe names everything that decides a model: sizes, data, steps, batch,
learning rate, hint dropout and where it starts from. Change a recipe's
content, bump its version. Step counts are sized for this project's 2-core
CPU machines (measured: a step of 8 x 1 s takes 0.35 s for the small model,
1.3 s for a D = H = 32 large model and 3.3 s for the paper's D = H = 64 one),
except separate-large v5's, which ran on a GPU (docs/training.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import BoostConfig, ModelConfig, NetConfig

DELAYS = (1, 3, 6)  # chunks: 8, 24 and 48 ms


@dataclass(frozen=True)
class Recipe:
    name: str  # also the shipped model folder
    version: int
    task: str
    role: str
    net: NetConfig
    steps: int
    boost: BoostConfig | None = None
    batch: int = 8
    seconds: float = 1.0  # training clip length
    lr: float = 2e-3
    warmup: int = 50
    val_every: int = 100
    hint_drop: float = 0.5  # boosted: per-clip frame-drop rate drawn from [0, hint_drop]
    hint_drop_all: float = 0.15  # boosted: share of clips that get no hint at all
    hint_bank: int = 0  # boosted: clips whose large-model output maps are cached
    init: str = ""  # a recipe whose model this one starts from
    large: str = ""  # boosted: the frozen large model that makes the hints
    # boosted: each merge's output LayerNorm gain starts at 0, so the merges
    # start as the identity and the model starts with the small model's output
    identity_merges: bool = False
    init_lr_scale: float = 1.0  # learning rate of the parameters that came from `init`, x lr
    # "bfloat16": training steps' forward pass under torch.autocast (validation
    # stays float32); "" trains in float32
    autocast: str = ""
    seed: int = 0
    notes: dict = field(default_factory=dict)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            role=self.role, net=self.net, boost=self.boost, task=self.task, large_model=self.large
        )

    def describe(self) -> dict:
        out = asdict(self)
        out["net"] = asdict(self.net)
        out["boost"] = None if self.boost is None else self.boost.to_dict()
        return out


def _recipes() -> dict[str, Recipe]:
    out = {}
    # Large: D = H = 32 with 4 attention heads instead of the paper's 64/64/8:
    # the paper size trains 2.5x slower here (3.3 vs 1.3 s a step), too slow
    # to converge in this machine's budget; 32 keeps it 4.5x the small model.
    large_net = {"dim": 32, "hidden": 32, "attention_heads": 4}
    # (large version, large steps, large learning rate, small version, small steps).
    # separate-large: v1 trained 900 steps at 1e-3 (0.89 dB on validation, still
    # climbing); v2 went on at 1e-3, v3 from v2's step 1205 at 2e-3, because the
    # small model at 2e-3 learned faster per step (1.53 dB at step 800); v4 went
    # on from v3's end (2.44 dB) at 2e-3 to 4700 steps (2.93 dB). v5 goes on
    # from v4's end on a GPU, where batches of 32 cost about what 8 do: 3100
    # more steps (5 min on one H200, `--device cuda --workers 13`, 90 ms a step;
    # about 12 h at the 14 s a step measured on this project's 2-core machines)
    # to 7800 (3.67 dB).
    # enhance-large: v1 (500 steps at 1e-3) was still below the mixture at step
    # 300 (-0.31 dB); v2 went on from its step 271 at 2e-3 to 1300 steps; v3
    # (the CPU campaign, tools/cpu_campaign.py) goes on from v2's end to 4500
    # steps under bfloat16 autocast, 1.44x faster a step here (docs/training.md).
    # separate-small: v1 trained 1600 steps; v2 went on from its end to 3000,
    # v3 from v2's end to 5000: the steps the boosted models below get, so that
    # their gain over the small model is not just the extra training's.
    # enhance-small v2 goes on from v1's 1000 steps to 2000 for the same reason.
    budget = {"separate": (5, 7800, 2e-3, 3, 5000), "enhance": (3, 4500, 2e-3, 2, 2000)}
    large_batch = {"separate": 32}
    large_autocast = {"enhance": "bfloat16"}
    # Boosted models train from scratch with hints, as the paper trains them,
    # on the frozen large model's cached hints. Fine-tuning the trained small
    # model instead (v1; separate v2 with `identity_merges` and a small-model
    # `init_lr_scale` of 0.1) made models that ignore their hints: the
    # merges stayed near the identity (docs/results.md). separate: v5 trained
    # 3000 steps on the hints of separate-large v5 (v3 and v4 had v4's); v6
    # goes on from its end to 5000, as many as separate-small (2000 more
    # steps raised separate-small by 0.30 dB and d6 by 0.39 dB on val).
    # enhance v2: 2000 steps, as many as enhance-small; v3 the same on the
    # hints of enhance-large v3. From scratch at 2e-3 is the Recipe defaults.
    boosted = {"separate": dict(version=6, steps=5000), "enhance": dict(version=3, steps=2000)}
    # the any-delay models; enhance v2 starts from enhance-boosted-d1 v3
    any_delay = {"separate": dict(version=1, steps=2000), "enhance": dict(version=2, steps=1200)}
    for task, sources in (("separate", 2), ("enhance", 1)):
        large_version, large_steps, large_lr, small_version, small_steps = budget[task]
        out[f"{task}-large"] = Recipe(
            f"{task}-large", large_version, task, "large", NetConfig(sources=sources, **large_net),
            steps=large_steps, lr=large_lr, batch=large_batch.get(task, 8),
            autocast=large_autocast.get(task, ""),
        )  # fmt: skip
        out[f"{task}-small"] = Recipe(
            f"{task}-small", small_version, task, "small", NetConfig(sources=sources),
            steps=small_steps,
        )  # fmt: skip
        for d in DELAYS:
            out[f"{task}-boosted-d{d}"] = Recipe(
                f"{task}-boosted-d{d}", task=task, role="boosted", net=NetConfig(sources=sources),
                boost=BoostConfig(hint_channels=8, delay=d), hint_bank=3000,
                large=f"{task}-large",
                **boosted[task],
            )  # fmt: skip
        # The any-delay model starts from the d1 model (the same weights but the
        # age bias, which starts at 0) and learns ages 1-8 under jitter at half
        # the learning rate, so that it keeps what d1 learned about using hints.
        out[f"{task}-boosted"] = Recipe(
            f"{task}-boosted", task=task, role="boosted", net=NetConfig(sources=sources),
            boost=BoostConfig(hint_channels=8, delay=0, max_age=8), hint_bank=3000,
            large=f"{task}-large", init=f"{task}-boosted-d1", lr=1e-3,
            **any_delay[task],
        )  # fmt: skip
    return out


RECIPES = _recipes()
