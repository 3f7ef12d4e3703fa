"""`kboost-rt train RECIPE`: train one model with checkpoints and resume.

The run folder `<workdir>/<recipe>/` holds `checkpoint.pt` (model, optimiser,
step, data RNG; written atomically every few minutes and at the end),
`train.log` (one JSON line per validation). Boosted models train on a fixed
bank of clips with the frozen large model's output maps, so a boosted step
costs no more than a small-model step; it is made once in
`<workdir>/hint-banks/` and shared by the runs that draw the same clips from
the same large model. Stopping at
any point and running the same command again resumes where it stopped. The
best validation weights are written as a model folder `<out>/<recipe>/`.

On a GPU (`device="cuda"`) the model steps faster than one process can mix
clips: `workers` processes then mix the batches of small and large models,
each from its own random stream (seeded by the recipe, the step it started at
and its number), so a resumed run draws other clips than an unbroken one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..model_files import checksum, load_model_files
from ..reference.io import build_model, load_model, save_model
from ..signal_path import SAMPLE_RATE
from .mixing import Mixer
from .recipes import RECIPES, Recipe

VAL_CLIPS, VAL_SECONDS = 32, 2.0
AUTOCAST = {"bfloat16": torch.bfloat16}
CHECKPOINT_EVERY_S = 120.0


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SI-SDR in dB over the last axis."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((est - target).pow(2).sum(-1) + eps))


def pit_si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """est, ref [B, S, M, N] -> per-clip SI-SDR [B], mean over sources and mics,
    under the best source order (S is 1 or 2)."""
    direct = si_sdr(est, ref).mean(dim=(1, 2))
    if est.shape[1] == 1:
        return direct
    swapped = si_sdr(est.flip(1), ref).mean(dim=(1, 2))
    return torch.maximum(direct, swapped)


def draw_ages(rng: np.random.Generator, batch: int, frames: int, max_age: int) -> np.ndarray:
    """Hint ages for training an any-delay model, [batch, frames] in 1..max_age:
    per clip a range lo..hi (lo == hi: a steady round trip), and per frame an
    age drawn uniformly from it (jitter)."""
    lo = rng.integers(1, max_age + 1, (batch, 1))
    hi = rng.integers(lo, max_age + 1)
    return rng.integers(lo, hi + 1, (batch, frames))


def clips_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """Names validation clips, so that scores are compared only where they were
    made on the same clips (a rebuilt data cache or a GPU pack has others)."""
    digest = hashlib.sha256()
    for t in (x, y):
        digest.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def validation_scores(model, x, y, maps=None, batch: int = 8) -> dict:
    """Mean SI-SDRi of `model` (in eval mode) on fixed clips x [N, M, T], y [N, S, M, T]:
    `si_sdr_i`, and for a boosted model (given the large model's output `maps`) also
    `si_sdr_i_no_hints`, with every hint lost. An any-delay model gets hint ages
    from `draw_ages` with a fixed seed."""
    base = pit_si_sdr(x[:, None].expand_as(y), y)
    ages = None
    if maps is not None and model.boost.any_delay:
        drawn = draw_ages(np.random.default_rng(4321), len(x), maps.shape[2], model.boost.max_age)
        ages = torch.from_numpy(drawn).to(x.device)
    conds: dict[str, torch.Tensor | None] = {"si_sdr_i": None}
    if maps is not None:
        conds["si_sdr_i_no_hints"] = torch.zeros(
            len(x), maps.shape[2], dtype=torch.bool, device=x.device
        )
    out = {}
    with torch.no_grad():
        for key, arrived in conds.items():
            scores = []
            for i in range(0, len(x), batch):
                part = slice(i, i + batch)
                if maps is None:
                    est = model(x[part])[0]
                else:
                    hints = model.make_hints(maps[part].float())
                    est = model(
                        x[part],
                        hints,
                        None if arrived is None else arrived[part],
                        None if ages is None else ages[part],
                    )[0]
                scores.append(pit_si_sdr(est, y[part]))
            out[key] = float((torch.cat(scores) - base).mean())
    return out


def _with_defaults(described: dict) -> dict:
    """A recipe as written in an older checkpoint: fields added since take their defaults."""
    fields = dataclasses.fields(Recipe)
    return {**{f.name: f.default for f in fields if f.default is not dataclasses.MISSING},
            **described}  # fmt: skip


def _continues(old: dict, new: dict, at_step: int) -> bool:
    """A checkpoint of `old` may go on under `new`: the same recipe, or a later
    version that trains longer, perhaps at another learning rate or batch size
    (its schedule then restarts at `old`'s end)."""
    if old == new:
        return True
    same = {k for k in new if k not in ("version", "steps", "lr", "batch", "autocast")}
    return (
        all(old.get(k) == new[k] for k in same)
        and new["version"] > old["version"]
        and new["steps"] > at_step
    )


def _lr(recipe: Recipe, step: int, start: int = 0) -> float:
    """Warm-up, then cosine decay to 5 %; a continued run (from step `start`)
    gets a schedule of its own over its extra steps."""
    step -= start
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - start - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class _Batches(torch.utils.data.IterableDataset):
    """Endless training batches, mixed in DataLoader worker processes."""

    def __init__(self, cache: Path, recipe: Recipe, start_step: int):
        self.cache, self.recipe, self.start_step = cache, recipe, start_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        r = self.recipe
        rng = np.random.default_rng([r.seed, self.start_step, 0 if info is None else info.id])
        mixer = Mixer(self.cache, r.task, "train")
        while True:
            x, y = mixer.batch(r.batch, int(r.seconds * SAMPLE_RATE), rng)
            yield torch.from_numpy(x), torch.from_numpy(y)


class Run:
    def __init__(
        self,
        recipe: Recipe,
        cache: Path,
        workdir: Path,
        models: Path,
        device: str = "cpu",
        workers: int = 0,
    ):
        if recipe.autocast and recipe.autocast not in AUTOCAST:
            raise ValueError(f"{recipe.name}: unknown autocast {recipe.autocast!r} "
                             f"(choose from {', '.join(AUTOCAST)})")  # fmt: skip
        self.recipe, self.cache, self.models = recipe, cache, models
        self.device, self.workers = torch.device(device), workers
        self.dir = workdir / recipe.name
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(recipe.seed)
        self.model = build_model(recipe.model_config()).to(self.device)
        self.opt = torch.optim.Adam(self._param_groups(), lr=recipe.lr)
        self.step, self.best, self.best_state = 0, -math.inf, None
        self.history: list[dict] = []  # earlier recipe versions this run continues
        self.rng = np.random.default_rng(recipe.seed)
        self.mixer = Mixer(cache, recipe.task, "train")
        self.large = None
        if recipe.role == "boosted":
            self.large, _ = load_model(models / recipe.large)
            self.large.to(self.device)
            # names the maps in a cached clip bank: another large model's are stale
            self.large_checksum = checksum(load_model_files(models / recipe.large).tensors)
            for p in self.large.parameters():
                p.requires_grad_(False)
        ckpt = self.dir / "checkpoint.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, weights_only=False, map_location="cpu")
            state["recipe"] = _with_defaults(state["recipe"])
            if not _continues(state["recipe"], recipe.describe(), state["step"]):
                raise RuntimeError(f"{ckpt} is from another recipe version; delete it to restart")
            self.history = state.get("history", []) + (
                []
                if state["recipe"] == recipe.describe()
                else [{**state["recipe"], "stopped_at": state["step"]}]
            )
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.best, self.best_state = (
                state["step"],
                state["best"],
                state["best_state"],
            )
            self.rng.bit_generator.state = state["rng"]
        elif self._earlier_version_in(models):
            pass
        elif recipe.init:
            init, _ = load_model(models / recipe.init)
            if recipe.role == "boosted" and hasattr(init, "merges"):
                # a fixed-delay boosted model starts an any-delay one: all but the age bias
                missing, unexpected = self.model.load_state_dict(init.state_dict(), strict=False)
                if unexpected or any(not k.endswith("age_bias") for k in missing):
                    raise RuntimeError(f"{recipe.init} does not fit {recipe.name}: {missing}")
            else:
                target = self.model.small if recipe.role == "boosted" else self.model
                target.load_state_dict(init.state_dict())  # copies onto the device
            if recipe.identity_merges:
                # A merge adds a LayerNorm'd update: with gain 1 it adds unit-size
                # noise to a trained model's features (measured: validation fell
                # from 1.88 to 1.25 dB in the first 100 steps). Gain 0 adds nothing
                # until training has learned to use the hints.
                with torch.no_grad():
                    for merge in self.model.merges:
                        merge.attention.out.norm_weight.zero_()
        self.val = self._fixed_set("val", VAL_CLIPS, VAL_SECONDS, seed=1234)
        self.bank = (
            self._fixed_set("train", recipe.hint_bank, recipe.seconds, seed=recipe.seed + 99)
            if recipe.role == "boosted"
            else None
        )
        self._stream = None  # worker-mixed batches, started by the first step
        if self.step and self.best_state is None:  # went on from a model folder
            self.best = self.validate()["si_sdr_i"]
            self.best_state = {k: v.cpu().clone() for k, v in self.model.state_dict().items()}
            self.history[-1]["validation_at_start"] = self.best

    def _earlier_version_in(self, models: Path) -> bool:
        """Without a checkpoint, go on from `<models>/<recipe>` when it holds this
        recipe's model of an earlier version (a shipped model trained further on
        another machine): its weights and step count, a fresh optimiser, and its
        own validation score as the best so far, so the export is never worse."""
        folder = models / self.recipe.name
        if not model_exists(models, self.recipe.name):
            return False
        notes = load_model_files(folder).config.notes
        if "recipe" not in notes or "trained_steps" not in notes:
            return False
        old, at = _with_defaults(notes["recipe"]), int(notes["trained_steps"])
        new = self.recipe.describe()
        if old == new or not _continues(old, new, at):
            return False
        model, _ = load_model(folder)
        self.model.load_state_dict(model.state_dict())
        self.step = at
        self.rng = np.random.default_rng([self.recipe.seed, at])  # other clips than before
        self.history = [
            {"version": c["version"], "steps": c["steps"], "lr": c["lr"],
             "batch": c.get("batch", old["batch"])}
            for c in notes.get("continues", [])
        ] + [{**old, "stopped_at": at, "optimiser_restarted": True}]  # fmt: skip
        return True

    def _param_groups(self) -> list[dict]:
        """Adam groups, each with its share of the recipe's learning rate."""
        if not self.recipe.init or self.recipe.init_lr_scale == 1.0:
            return [{"params": list(self.model.parameters()), "lr_scale": 1.0}]
        # A boosted model's small part is already trained: a full learning rate
        # knocks it off its optimum before the new merges have learned anything.
        inherited = self.model.small if self.recipe.role == "boosted" else self.model
        ids = {id(p) for p in inherited.parameters()}
        new = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [{"params": list(inherited.parameters()), "lr_scale": self.recipe.init_lr_scale}]
        return groups + ([{"params": new, "lr_scale": 1.0}] if new else [])

    def _fixed_set(self, split: str, count: int, seconds: float, seed: int) -> dict:
        """Fixed clips (with the large model's maps for boosted runs), cached and
        held on the training device. A boosted run's sets are shared by every
        run in the work folder that draws the same clips from the same large
        model (d1, d3, d6 and the any-delay model): the maps of a 3000-clip
        bank take minutes to make."""
        large = None if self.large is None else self.large_checksum
        path = self.dir / f"{split}_set.pt"
        if large is not None:
            clips = f"{self.recipe.task}-{split}-{count}x{seconds:g}s-seed{seed}"
            shared = self.dir.parent / "hint-banks" / f"{clips}-{large[:16]}.pt"
            for older in (shared, path):  # a run folder may hold its own from before
                if older.is_file():
                    saved = torch.load(older, weights_only=True, map_location=self.device)
                    if saved.get("large") == large and len(saved["x"]) == count:
                        return saved
            path.unlink(missing_ok=True)
            for stale in shared.parent.glob(f"{clips}-*.pt"):
                print(f"{self.recipe.name}: {stale} holds another large model's maps; removed")
                stale.unlink()
            path = shared
            path.parent.mkdir(exist_ok=True)
        elif path.is_file():
            saved = torch.load(path, weights_only=True, map_location=self.device)
            if saved.get("large") is None:
                return saved
            print(f"{self.recipe.name}: {path} holds a large model's maps; making it again")
        mixer = Mixer(self.cache, self.recipe.task, split)
        x, y = mixer.batch(count, int(seconds * SAMPLE_RATE), np.random.default_rng(seed))
        out = {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}
        if self.large is not None:
            maps = []
            with torch.no_grad():
                for i in range(0, count, 16):
                    clips = out["x"][i : i + 16].to(self.device)
                    maps.append(self.large(clips)[1].half().cpu())
                    print(f"\r{self.recipe.name}: large-model maps {min(count, i + 16)}/{count}",
                          end="", flush=True)  # fmt: skip
            print()
            out["maps"] = torch.cat(maps)
            out["large"] = large
        _save_atomic(out, path)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    def _forward(self, x, maps=None, arrived=None, ages=None):
        if self.recipe.role == "boosted":
            hints = self.model.make_hints(maps.float())
            return self.model(x, hints, arrived, ages)[0]
        return self.model(x)[0]

    def _train_batch(self):
        r, dev = self.recipe, self.device
        if self.bank is None:
            if self.workers:
                if self._stream is None:
                    self._stream = iter(
                        torch.utils.data.DataLoader(
                            _Batches(self.cache, r, self.step),
                            batch_size=None,
                            num_workers=self.workers,
                            pin_memory=dev.type == "cuda",
                            prefetch_factor=4,
                        )
                    )
                x, y = next(self._stream)
            else:
                x, y = map(
                    torch.from_numpy,
                    self.mixer.batch(r.batch, int(r.seconds * SAMPLE_RATE), self.rng),
                )
            return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), None, None, None
        idx = torch.from_numpy(self.rng.choice(len(self.bank["x"]), r.batch, replace=False))
        idx = idx.to(dev)
        maps = self.bank["maps"][idx]
        frames = maps.shape[2]
        rate = torch.from_numpy(self.rng.uniform(0, r.hint_drop, (r.batch, 1))).float()
        rate[torch.from_numpy(self.rng.random((r.batch, 1)) < r.hint_drop_all)] = 1.0
        arrived = torch.from_numpy(self.rng.random((r.batch, frames))).float() >= rate
        ages = None
        if r.boost.any_delay:
            ages = torch.from_numpy(draw_ages(self.rng, r.batch, frames, r.boost.max_age)).to(dev)
        return self.bank["x"][idx], self.bank["y"][idx], maps, arrived.to(dev), ages

    def validate(self) -> dict:
        self.model.eval()
        maps = self.val["maps"] if self.bank is not None else None
        out = validation_scores(self.model, self.val["x"], self.val["y"], maps)
        self.model.train()
        return out

    @property
    def shipped_score(self) -> float:
        """Validation of the model folder this run went on from (nan if none)."""
        return next((h["validation_at_start"] for h in self.history
                     if "validation_at_start" in h), math.nan)  # fmt: skip

    def _segment_start(self) -> int:
        """The step this recipe version took over from an earlier one (0 if none)."""
        if not self.history:
            return 0
        last = self.history[-1]
        return last.get("stopped_at", last["steps"])

    def checkpoint(self) -> None:
        _save_atomic(
            {
                "recipe": self.recipe.describe(),
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "step": self.step,
                "best": self.best,
                "best_state": self.best_state,
                "rng": self.rng.bit_generator.state,
                "history": self.history,
            },
            self.dir / "checkpoint.pt",
        )

    def train_step(self) -> torch.Tensor:
        """One optimiser step; returns its loss, still on the device."""
        for group in self.opt.param_groups:
            group["lr"] = group.get("lr_scale", 1.0) * _lr(
                self.recipe, self.step, self._segment_start()
            )
        x, y, maps, arrived, ages = self._train_batch()
        if self.recipe.autocast:
            with torch.autocast(self.device.type, dtype=AUTOCAST[self.recipe.autocast]):
                est = self._forward(x, maps, arrived, ages)
            loss = -pit_si_sdr(est.float(), y).mean()
        else:
            loss = -pit_si_sdr(self._forward(x, maps, arrived, ages), y).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.step += 1
        return loss.detach()

    def run(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        r = self.recipe
        self.model.train()
        log = (self.dir / "train.log").open("a")
        bar = tqdm(total=r.steps, initial=self.step, desc=r.name, disable=not progress)
        last_ckpt, started, losses = time.monotonic(), time.monotonic(), []
        val = {}
        while self.step < r.steps:
            loss = self.train_step()
            losses.append(loss)
            if self.step % r.val_every == 0 or self.step == r.steps:
                val = self.validate()
                if val["si_sdr_i"] > self.best:
                    self.best = val["si_sdr_i"]
                    self.best_state = {
                        k: v.cpu().clone() for k, v in self.model.state_dict().items()
                    }
                entry = {"step": self.step, "loss": torch.stack(losses).mean().item(), **val}
                entry["seconds"] = round(time.monotonic() - started, 1)
                log.write(json.dumps(entry) + "\n")
                log.flush()
                losses = []
            if progress and self.step % 10 == 0:  # .item() waits for a GPU: not every step
                bar.set_postfix(
                    loss=f"{loss.item():.2f}", val=f"{val.get('si_sdr_i', math.nan):.2f}"
                )
            bar.update(1)
            if time.monotonic() - last_ckpt > CHECKPOINT_EVERY_S or self.step == r.steps:
                self.checkpoint()
                last_ckpt = time.monotonic()
        bar.close()
        log.close()
        return self.export()

    def export(self) -> dict:
        r = self.recipe
        self.model.load_state_dict(self.best_state)
        val = self.validate()
        history = [json.loads(line) for line in (self.dir / "train.log").open()]
        config = r.model_config()
        notes = {
            "recipe": r.describe(),
            "validation": {
                "clips": VAL_CLIPS,
                "seconds": VAL_SECONDS,
                "split": "val (speakers never used in training)",
                **{k: round(v, 3) for k, v in val.items()},
                "clips_sha256": clips_fingerprint(self.val["x"], self.val["y"]),
            },
            "trained_steps": self.step,
            "continues": [
                {"version": h["version"], "steps": h.get("stopped_at", h["steps"]), "lr": h["lr"]}
                | ({"batch": h["batch"]} if h["batch"] != r.batch else {})
                | ({"optimiser_restarted": True} if h.get("optimiser_restarted") else {})
                for h in self.history
            ],
            "device": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else "cpu",
            "train_seconds": history[-1]["seconds"] if history else None,
        }
        config = dataclasses.replace(config, notes=notes)
        save_model(self.model.eval(), config, self.models / r.name)
        write_model_readme(self.models / r.name)
        return val


def _last_segment(notes: dict) -> str:
    """'all' or 'the last N': the steps the last recipe version trained."""
    earlier = notes.get("continues", [])
    return f"the last {notes['trained_steps'] - earlier[-1]['steps']}" if earlier else "all"


def write_model_readme(folder: Path) -> None:
    """README.md of a trained model folder, from the notes in its config.json."""
    files = load_model_files(folder)
    cfg, notes = files.config, files.config.notes
    recipe, val = notes["recipe"], notes["validation"]
    net = cfg.net
    lines = [
        f"# {folder.name}",
        "",
        f"{cfg.role.capitalize()} model for `{cfg.task}` (M = {net.channels} microphones, "
        f"S = {net.sources} outputs): D = {net.dim}, H = {net.hidden}, B = {net.blocks}, "
        f"attention heads {net.attention_heads or 'none'}.",
    ]
    if cfg.boost is not None and cfg.boost.any_delay:
        lines.append(
            f"Boosted by hints of `{cfg.large_model}` ({cfg.boost.hint_channels} channels) "
            f"used at their real age, 1 to {cfg.boost.max_age} chunks "
            f"(8 to {8 * cfg.boost.max_age} ms): an any-delay model."
        )
    elif cfg.boost is not None:
        lines.append(
            f"Boosted by hints of `{cfg.large_model}` ({cfg.boost.hint_channels} channels) "
            f"arriving {cfg.boost.delay} chunk{'s' * (cfg.boost.delay != 1)} "
            f"({8 * cfg.boost.delay} ms) late."
        )
    lines += [
        "",
        f"Recipe `{recipe['name']}` version {recipe['version']}: {recipe['steps']} steps of "
        f"{recipe['batch']} x {recipe['seconds']:g} s clips, peak learning rate {recipe['lr']:g}"
        + (f", started from `{recipe['init']}`" if recipe["init"] else "")
        + (
            f", hints dropped at a per-clip rate drawn from [0, {recipe['hint_drop']:g}] and "
            f"all of them for {recipe['hint_drop_all']:.0%} of the clips"
            if cfg.role == "boosted"
            else ""
        )
        + (", merges started as the identity" if recipe.get("identity_merges") else "")
        + (f", {recipe['autocast']} autocast" if recipe.get("autocast") else "")
        + (
            f", the weights from `{recipe['init']}` at {recipe['init_lr_scale']:g} x that rate"
            if recipe.get("init_lr_scale", 1.0) != 1.0
            else ""
        )
        + f". Trained {notes['trained_steps']} steps"
        + "".join(
            f" (the first {c['steps']}"
            + (f", of {c['batch']} clips each," if "batch" in c else "")
            + f" under version {c['version']})"
            for c in notes.get("continues", [])[-1:]
        )
        + (
            f", {_last_segment(notes)} on {notes['device']}"
            if notes.get("device", "cpu") != "cpu"
            else ""
        )
        + "."
        + (f" Training data: {notes['data']}" if "data" in notes else ""),
        "",
        f"Validation ({val['clips']} clips of {val['seconds']:g} s, {val['split']}):",
        f"SI-SDRi {val['si_sdr_i']:.2f} dB"
        + (
            f" with every hint, {val['si_sdr_i_no_hints']:.2f} dB with none"
            if "si_sdr_i_no_hints" in val
            else ""
        )
        + " (offline forward pass; `kboost-rt eval` gives the streaming scores).",
        "",
        "Reproduce: `kboost-rt data build && kboost-rt train " + folder.name + "`",
        "(see docs/results.md).",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines))


def train(
    name: str,
    cache: Path,
    workdir: Path,
    models: Path,
    progress: bool = True,
    device: str = "cpu",
    workers: int = 0,
) -> dict:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    run = Run(RECIPES[name], cache, workdir, models, device, workers)
    if run.step >= run.recipe.steps:
        return run.export()
    return run.run(progress)


def model_exists(models: Path, name: str) -> bool:
    try:
        load_model_files(models / name)
    except Exception:
        return False
    return True
