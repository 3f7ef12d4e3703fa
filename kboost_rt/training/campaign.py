"""A whole task's models in one wall-clock budget: `tools/gpu_run.sh TASK MINUTES`.

Made for a GPU lent for a few minutes: nothing of ours is compiled (torch,
numpy, safetensors and soundfile are all it needs), the data come from a
pack (`kboost-rt data pack`), and batches are mixed on the device.

1. The large model trains alone for `large_share` of the budget.
2. The small model and the any-delay boosted model (hint ages drawn per
   clip and frame, as `draw_ages`), with fixed-delay boosted models where
   `--fixed-delays` asks for them, then train in lockstep on the same
   batches, so each boosted model's gain over the small one is measured
   against a model that saw exactly the same audio. The frozen large model
   makes the hints of each batch on the fly.

Each phase picks its batch by timing doubling batches until the step time
stops being flat, and decays its learning rate by the share of its time
spent. Every `checkpoint_s` all models are validated (the trainer's fixed
validation clips, offline forward pass) and the best weights of each so far
are written, with the learning curves, into `<out>/<task>-models.tar`
(atomically), so a run cut short still returns its models. Each boosted
model goes with its hint codec (pca hints), fitted on the hints its frozen
large model and hint generator make from a fixed set of training mixtures.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from ..config import MAX_DELAY, BoostConfig, NetConfig
from ..hint_codec import HintCodec, fit_codec
from ..reference.io import build_model, save_model
from ..signal_path import SAMPLE_RATE
from .mixing import TASK_SOURCES
from .pack import load_pack, simulate_rooms
from .recipes import DELAYS, RECIPES, Recipe
from .torch_mixing import TorchMixer
from .trainer import clips_fingerprint, pit_si_sdr, validation_scores, write_model_readme

WARMUP_STEPS = 50
FLOOR = 0.05  # of the peak learning rate, at the end of a phase
CLIP_GRAD = 5.0
HINT_DROP, HINT_DROP_ALL = 0.5, 0.15  # as the CPU recipes
FLAT = 1.6  # a doubled batch whose step takes less than this factor longer is worth it
PAPER_LARGE_NET = {"dim": 64, "hidden": 64, "attention_heads": 8}
CODEC_COMPONENTS, CODEC_SECONDS = 96, 4.0  # as `kboost-rt codec`


def campaign_recipes(
    task: str, seconds: float = 1.0, fixed_delays: tuple[int, ...] = ()
) -> dict[str, Recipe]:
    """The models a campaign makes, each one version past the shipped recipe; `steps`
    and `batch` are filled in with what the run did."""
    sources = TASK_SOURCES[task]
    base = dict(task=task, steps=0, seconds=seconds, warmup=WARMUP_STEPS)
    out = {
        f"{task}-large": Recipe(
            f"{task}-large", role="large", net=NetConfig(sources=sources, **PAPER_LARGE_NET),
            version=RECIPES[f"{task}-large"].version + 1, **base,
        ),
        f"{task}-small": Recipe(
            f"{task}-small", role="small", net=NetConfig(sources=sources),
            version=RECIPES[f"{task}-small"].version + 1, **base,
        ),
    }  # fmt: skip
    for d in fixed_delays:
        name = f"{task}-boosted-d{d}"
        out[name] = Recipe(
            name, role="boosted", net=NetConfig(sources=sources),
            boost=BoostConfig(hint_channels=8, delay=d), large=f"{task}-large",
            hint_drop=HINT_DROP, hint_drop_all=HINT_DROP_ALL,
            version=RECIPES[name].version + 1, **base,
        )  # fmt: skip
    name = f"{task}-boosted"
    out[name] = Recipe(
        name, role="boosted", net=NetConfig(sources=sources),
        boost=BoostConfig(hint_channels=8, delay=0, max_age=MAX_DELAY), large=f"{task}-large",
        hint_drop=HINT_DROP, hint_drop_all=HINT_DROP_ALL,
        version=RECIPES[name].version + 1, **base,
    )  # fmt: skip
    return out


def draw_ages_on(g: torch.Generator, batch: int, frames: int, max_age: int) -> torch.Tensor:
    """`trainer.draw_ages` on the training device: per clip a range lo..hi in
    1..max_age, per frame an age uniform in it."""
    device = g.device
    lo = torch.randint(1, max_age + 1, (batch, 1), generator=g, device=device)
    hi = lo + (torch.rand(batch, 1, generator=g, device=device) * (max_age + 1 - lo)).long()
    spread = torch.rand(batch, frames, generator=g, device=device) * (hi - lo + 1)
    return lo + spread.long()


@dataclasses.dataclass
class Trainee:
    """One model being trained, with its optimiser, best weights and curve."""

    recipe: Recipe
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    steps: int = 0
    clips: int = 0
    best: float = -math.inf
    best_state: dict | None = None
    best_val: dict = dataclasses.field(default_factory=dict)
    curve: list = dataclasses.field(default_factory=list)
    batch: int = 0
    started_hours: float = 0.0  # audio hours seen before this run (--init)
    started_steps: int = 0

    def hours(self) -> float:
        return self.started_hours + self.clips * self.recipe.seconds / 3600


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Campaign:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.task = args.task
        self.device = torch.device(args.device)
        self.deadline = time.monotonic() + args.minutes * 60
        self.started = time.monotonic()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(args.seed)
        pack = load_pack(Path(args.pack), self.task)
        rooms = pack.rooms
        if rooms is None:
            t = time.monotonic()
            rooms = simulate_rooms(args.rooms, args.room_workers)
            self.log(f"simulated {len(rooms)} training rooms in {time.monotonic() - t:.1f} s")
        speed = (1 - args.speed_perturb, 1 + args.speed_perturb) if args.speed_perturb else None
        self.mixer = TorchMixer(
            self.task, list(pack.speech.values()), list(pack.noise.values()), rooms,
            self.device, seed=args.seed, speed_range=speed,
        )  # fmt: skip
        self.val_x = torch.from_numpy(pack.val_x).to(self.device)
        self.val_y = torch.from_numpy(pack.val_y).to(self.device)
        self.pack_info = pack.info
        self.recipes = campaign_recipes(self.task, args.seconds, args.fixed_delays)
        self.trainees: dict[str, Trainee] = {}
        self.codec_maps: torch.Tensor | None = None  # the frozen large model's, phase 2
        self.init = self._read_archive(Path(args.init)) if args.init else {}
        self.last_checkpoint = time.monotonic()
        self.log(
            f"{self.task}: {args.minutes:g} min on {self._device_name()}; "
            f"{pack.info['talkers']} talkers, {pack.info['seconds']['speech'] / 60:.1f} min "
            f"of speech; {len(rooms)} rooms"
        )

    # ---- bookkeeping ----
    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f} s] {message}", flush=True)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu"

    def _read_archive(self, path: Path) -> dict[str, tuple[dict, dict]]:
        """model name -> (state dict, notes) from an earlier run's archive."""
        from ..model_files import load_model_files

        found = {}
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
            for folder in sorted(Path(tmp).iterdir()):
                if (folder / "config.json").is_file():
                    files = load_model_files(folder)
                    state = {k: torch.from_numpy(v.copy()) for k, v in files.tensors.items()}
                    found[folder.name] = (state, files.config.notes)
        self.log(f"continuing from {path}: {', '.join(found) or 'nothing usable'}")
        return found

    def _trainee(self, name: str) -> Trainee:
        recipe = self.recipes[name]
        model = build_model(recipe.model_config()).to(self.device)
        hours, steps = 0.0, 0
        if name in self.init:
            state, notes = self.init[name]
            model.load_state_dict(state)
            hours, steps = float(notes.get("audio_hours", 0.0)), int(notes["trained_steps"])
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        trainee = Trainee(recipe, model, opt, started_hours=hours, started_steps=steps)
        self.trainees[name] = trainee
        return trainee

    # ---- training ----
    def _lr(self, trainee: Trainee, fraction: float) -> float:
        warm = min(1.0, (trainee.steps + 1) / WARMUP_STEPS)
        cosine = FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))
        return trainee.recipe.lr * warm * cosine

    def _step(self, trainee: Trainee, x, y, maps=None, fraction: float = 0.0) -> torch.Tensor:
        for group in trainee.opt.param_groups:
            group["lr"] = self._lr(trainee, fraction)
        if maps is None:
            est = trainee.model(x)[0]
        else:
            b, frames = x.shape[0], maps.shape[2]
            g = self.mixer.g
            rate = torch.rand(b, 1, generator=g, device=self.device) * HINT_DROP
            rate[torch.rand(b, 1, generator=g, device=self.device) < HINT_DROP_ALL] = 1.0
            arrived = torch.rand(b, frames, generator=g, device=self.device) >= rate
            boost = trainee.model.boost
            ages = draw_ages_on(g, b, frames, boost.max_age) if boost.any_delay else None
            est = trainee.model(x, trainee.model.make_hints(maps), arrived, ages)[0]
        loss = -pit_si_sdr(est, y).mean()
        trainee.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), CLIP_GRAD)
        trainee.opt.step()
        trainee.steps += 1
        trainee.clips += x.shape[0]
        return loss.detach()

    def _choose_batch(self, iteration, budget_s: float) -> int:
        """The largest batch (doubling from the recipe's) whose iteration is still
        about flat in time, within a few percent of the phase's time for probing."""
        batch = self.args.batch
        if self.args.fixed_batch or self.device.type != "cuda":
            return batch

        def timed(b: int) -> float:
            iteration(b)  # warm-up: cuDNN plans, allocator
            _sync(self.device)
            t = time.perf_counter()
            iteration(b)
            _sync(self.device)
            return time.perf_counter() - t

        cost = timed(batch)
        spent = 2 * cost
        while batch * 2 <= self.args.max_batch and spent < 0.05 * budget_s:
            try:
                doubled = timed(batch * 2)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            spent += 2 * doubled
            self.log(f"  batch {batch * 2}: {doubled * 1e3:.0f} ms an iteration")
            if doubled > FLAT * cost:
                break
            batch, cost = batch * 2, doubled
        self.log(f"  batch {batch} ({cost * 1e3:.0f} ms an iteration)")
        return batch

    def _samples(self) -> int:
        return int(self.args.seconds * SAMPLE_RATE)

    def _phase(self, names: list[str], seconds: float, large: torch.nn.Module | None) -> None:
        trainees = [self.trainees[n] for n in names]
        end = time.monotonic() + seconds
        begin = time.monotonic()

        def iteration(batch: int, fraction: float = 0.0) -> list[torch.Tensor]:
            x, y = self.mixer.batch(batch, self._samples())
            maps = None
            if large is not None:
                with torch.no_grad():
                    maps = large(x)[1]
            return [
                self._step(t, x, y, maps if t.recipe.role == "boosted" else None, fraction)
                for t in trainees
            ]

        batch = self._choose_batch(iteration, seconds)
        for t in trainees:
            t.batch = batch
        losses: list[list[torch.Tensor]] = []
        # At least one step, even on a budget already spent (a slow machine, a
        # rerun with seconds left): every model in the archive has trained.
        stepped = False
        while not stepped or time.monotonic() < end:
            fraction = min(1.0, (time.monotonic() - begin) / max(1e-9, seconds))
            losses.append(iteration(batch, fraction))
            stepped = True
            if time.monotonic() - self.last_checkpoint >= self.args.checkpoint_s:
                self._checkpoint(trainees, losses, large)
                losses = []
        if losses or any(t.best_state is None for t in trainees):
            self._checkpoint(trainees, losses, large)

    # ---- validation and the archive ----
    def _validate(self, trainee: Trainee, val_maps: torch.Tensor | None) -> dict:
        maps = val_maps if trainee.recipe.role == "boosted" else None
        out = validation_scores(trainee.model.eval(), self.val_x, self.val_y, maps)
        trainee.model.train()
        return out

    def _checkpoint(self, trainees: list[Trainee], losses, large) -> None:
        val_maps = None
        if large is not None:
            with torch.no_grad():
                val_maps = torch.cat(
                    [large(self.val_x[i : i + 8])[1] for i in range(0, len(self.val_x), 8)]
                )
        parts = []
        for i, t in enumerate(trainees):
            val = self._validate(t, val_maps)
            loss = float(torch.stack([step[i] for step in losses]).mean()) if losses else math.nan
            t.curve.append(
                {
                    "step": t.steps,
                    "clips": t.clips,
                    "audio_hours": round(t.hours(), 4),
                    "seconds": round(time.monotonic() - self.started, 1),
                    "loss": round(loss, 4),
                    **{k: round(v, 4) for k, v in val.items()},
                }
            )
            if val["si_sdr_i"] > t.best:
                t.best, t.best_val = val["si_sdr_i"], val
                t.best_state = {
                    k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()
                }
            extra = f" ({val['si_sdr_i_no_hints']:.2f} without hints)" if len(val) > 1 else ""
            parts.append(f"{t.recipe.name} {val['si_sdr_i']:.2f}{extra}")
        t0 = trainees[0]
        elapsed = time.monotonic() - self.last_checkpoint
        rate = (t0.clips - t0.curve[-2]["clips"] if len(t0.curve) > 1 else t0.clips) / elapsed
        memory = ""
        if self.device.type == "cuda":
            memory = f", {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB at most"
        self.log(
            f"step {t0.steps} ({rate * t0.recipe.seconds:.1f} audio-s/s per model{memory}): "
            "val SI-SDRi " + ", ".join(parts) + " dB"
        )
        self._write_archive()
        self.last_checkpoint = time.monotonic()

    def _export(self, t: Trainee, folder: Path) -> None:
        total = t.started_steps + t.steps
        recipe = dataclasses.replace(t.recipe, steps=total, batch=t.batch or self.args.batch)
        notes = {
            "recipe": recipe.describe(),
            "validation": {
                "clips": len(self.val_x),
                "seconds": self.pack_info["val"]["seconds"],
                "split": "val (speakers never used in training)",
                **{k: round(v, 3) for k, v in t.best_val.items()},
                "clips_sha256": clips_fingerprint(self.val_x, self.val_y),
            },
            "trained_steps": total,
            "continues": (
                [{"version": t.recipe.version, "steps": t.started_steps, "lr": t.recipe.lr}]
                if t.started_steps
                else []
            ),
            "device": self._device_name(),
            "train_seconds": round(time.monotonic() - self.started, 1),
            "audio_hours": round(t.hours(), 4),
            "data": (
                f"the GPU campaign's pack: {self.pack_info['talkers']} training talkers Opus-coded "
                f"(at most {self.pack_info['cap_seconds']['speech']:.0f} s each), mixed on the "
                f"device with talkers sped up or slowed by up to {self.args.speed_perturb:.0%}, "
                f"{len(self.mixer.rooms)} rooms (kboost_rt/training/campaign.py)."
            ),
        }
        model = build_model(recipe.model_config())
        model.load_state_dict(t.best_state)
        save_model(model, dataclasses.replace(recipe.model_config(), notes=notes), folder)
        write_model_readme(folder)
        if recipe.role == "boosted" and self.codec_maps is not None:
            self._codec(model).save(folder)

    def _codec(self, boosted: torch.nn.Module) -> HintCodec:
        """The hint codec of a boosted model, on its hints of the codec mixtures."""
        with torch.no_grad():
            generator = boosted.hint_generator.to(self.device)
            hints = generator(self.codec_maps).permute(0, 2, 1, 3)  # [B, T, C_h, F]
        hints = hints.reshape(-1, *hints.shape[2:]).float().cpu().numpy()
        return fit_codec(hints, min(CODEC_COMPONENTS, len(hints)))

    def _write_archive(self) -> None:
        done = [t for t in self.trainees.values() if t.best_state is not None]
        curves = {
            "task": self.task,
            "device": self._device_name(),
            "minutes": self.args.minutes,
            "pack": self.pack_info,
            "models": {
                t.recipe.name: {"batch": t.batch, "steps": t.steps, "curve": t.curve}
                for t in self.trainees.values()
            },
        }
        with tempfile.TemporaryDirectory() as tmp:
            for t in done:
                self._export(t, Path(tmp) / t.recipe.name)
            archive = self.out / f"{self.task}-models.tar"
            partial = archive.with_suffix(".tar.tmp")
            with tarfile.open(partial, "w") as tar:
                for t in done:
                    tar.add(Path(tmp) / t.recipe.name, arcname=t.recipe.name)
                data = json.dumps(curves, indent=1).encode()
                info = tarfile.TarInfo("campaign.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            os.replace(partial, archive)
        (self.out / f"{self.task}-campaign.json").write_text(json.dumps(curves, indent=1) + "\n")

    # ---- the run ----
    def run(self) -> Path:
        left = self.deadline - time.monotonic()
        large_name = f"{self.task}-large"
        large = self._trainee(large_name)
        share = self.args.large_share
        if share > 0:
            self.log(f"phase 1: {large_name} for {share * left / 60:.1f} min")
            self._phase([large_name], share * left, None)
        elif large_name in self.init:
            large.best_state = {k: v.clone() for k, v in self.init[large_name][0].items()}
            large.best_val = self._validate(large, None)
        else:
            raise SystemExit("--large-share 0 needs --init with a large model")
        large.model.load_state_dict(large.best_state)
        frozen = large.model.eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        x, _ = self.mixer.batch(self.args.codec_clips, int(CODEC_SECONDS * SAMPLE_RATE))
        with torch.no_grad():
            self.codec_maps = torch.cat([frozen(x[i : i + 8])[1] for i in range(0, len(x), 8)])
        others = [n for n in self.recipes if n != large_name]
        for name in others:
            self._trainee(name)
        left = max(0.0, self.deadline - time.monotonic())
        self.log(f"phase 2: {', '.join(others)} in lockstep for {left / 60:.1f} min")
        self._phase(others, left, frozen)
        archive = self.out / f"{self.task}-models.tar"
        self.log(f"wrote {archive}")
        return archive


def _delays(text: str) -> tuple[int, ...]:
    try:
        delays = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("hint delays in chunks, e.g. 1,3,6") from None
    unknown = [d for d in delays if d not in DELAYS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no recipe for delay {unknown[0]} (delays: {','.join(map(str, DELAYS))})"
        )
    return delays


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/gpu_run.sh",
        description="Train a task's large, small and boosted models within a time budget.",
    )
    p.add_argument("task", choices=sorted(TASK_SOURCES), help="separate or enhance")
    p.add_argument("minutes", type=float, help="wall-clock budget for the whole run")
    p.add_argument("--pack", default=".gpu", help="the data pack (kboost-rt data pack)")
    p.add_argument(
        "--out", default=os.environ.get("OUT", "out/gpu"),
        help="folder for TASK-models.tar and TASK-campaign.json (default: $OUT, else out/gpu)",
    )  # fmt: skip
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for a test run")
    p.add_argument(
        "--large-share", type=float, default=0.4,
        help="the large model's share of the budget (default 0.4)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=16, help="starting batch (default 16)")
    p.add_argument("--max-batch", type=int, default=512, help="the batch grows to at most this")
    p.add_argument("--fixed-batch", action="store_true", help="do not grow the batch")
    p.add_argument("--seconds", type=float, default=1.0, help="training clip length (default 1)")
    p.add_argument(
        "--speed-perturb", type=float, default=0.1,
        help="talkers play at a speed drawn from 1 +- this (tempo and pitch; default 0.1)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-s", type=float, default=60.0,
        help="seconds between validations and archive writes (default 60)",
    )  # fmt: skip
    p.add_argument("--rooms", type=int, default=400, help="training rooms to simulate (400)")
    p.add_argument(
        "--room-workers", type=int, default=os.cpu_count() or 1,
        help="processes simulating rooms (default: one per core)",
    )  # fmt: skip
    p.add_argument(
        "--codec-clips", type=int, default=32,
        help="training mixtures of 4 s the hint codecs are fitted on (default 32)",
    )  # fmt: skip
    p.add_argument(
        "--fixed-delays", type=_delays, default=(), metavar="D,D,...",
        help=f"also train fixed-delay boosted models for these hint delays (of "
        f"{','.join(map(str, DELAYS))}; default: none, the any-delay model replaces them)",
    )  # fmt: skip
    p.add_argument("--init", help="an earlier run's archive: its models continue")
    p.add_argument("--seed", type=int, default=0, help="of the weights and the mixing")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA GPU (use --device cpu for a test run)")
    if not 0 <= args.large_share < 1:
        p.error("--large-share must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Campaign(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
