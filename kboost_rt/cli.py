"""The `kboost-rt` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .client import LinkError
from .config import PRESETS, ModelConfig
from .costs import macs_per_chunk, parameter_counts
from .fallback import FALLBACK_AFTER
from .model_files import (
    ModelFileError,
    find_model_folders,
    load_model_files,
    read_config,
    shipped_models_dir,
)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _model_row(name: str, cfg: ModelConfig) -> list[str]:
    macs = macs_per_chunk(cfg)
    params = parameter_counts(cfg)
    net, boost = cfg.net, cfg.boost
    return [
        name,
        cfg.role,
        cfg.task or "-",
        f"{net.channels}/{net.sources}",
        f"{net.dim}/{net.hidden}/{net.blocks}",
        str(net.attention_heads or "-"),
        str(boost.hint_channels) if boost else "-",
        ("1-" + str(boost.max_age) if boost.any_delay else str(boost.delay)) if boost else "-",
        f"{params['device'] / 1e3:.1f} k",
        _millions(macs["device"]),
        _millions(macs["hint_generator"]) if "hint_generator" in macs else "-",
    ]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print(
            "  ".join(
                c.ljust(w) if j < 3 else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


MODEL_HEADER = [
    "model",
    "role",
    "task",
    "M/S",
    "D/H/B",
    "heads",
    "C_h",
    "delay",
    "params",
    "MACs/chunk",
    "hint MACs",
]


def cmd_models(args: argparse.Namespace) -> int:
    rows = [_model_row(name, cfg) for name, cfg in PRESETS.items()]
    root = Path(args.dir) if args.dir else shipped_models_dir()
    errors = []
    for folder in find_model_folders(root):
        try:
            rows.append(_model_row(folder.name, read_config(folder)))
        except ModelFileError as e:
            errors.append(str(e))
    print(f"Built-in presets (paper sizes) and models in {root}:\n")
    _print_table(MODEL_HEADER, rows)
    print("\nMACs per 8 ms chunk on the device; 'hint MACs' run on the large-model side.")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_info(args: argparse.Namespace) -> int:
    target = args.model
    if target in PRESETS:
        cfg, checked = PRESETS[target], "preset (no weights)"
    else:
        from .model_select import resolve_model

        folder = resolve_model(target)
        files = load_model_files(folder)  # validates everything
        cfg, checked = files.config, f"weights OK ({len(files.tensors)} tensors)"
        if cfg.boost is not None:
            from .hint_codec import load_codec
            from .protocol import HintEncoding, SampleFormat, bytes_per_second

            codec = load_codec(folder, cfg.boost.hint_channels)
            if codec is None:
                checked += "; no hint codec (devices ask for int8 hints)"
            else:
                down = bytes_per_second(
                    codec.hint_channels, cfg.net.channels, HintEncoding.PCA,
                    SampleFormat.INT16, True, codec,
                )[1]  # fmt: skip
                checked += (
                    f"; hint codec OK ({codec.components} components: pca hints "
                    f"{down / 1e3:.1f} kB/s keyed)"
                )
    print(f"{target}: {checked}")
    _print_table(MODEL_HEADER, [_model_row(Path(target).name, cfg)])
    print("\nMACs per 8 ms chunk by part:")
    for part, n in macs_per_chunk(cfg).items():
        print(f"  {part:<15} {n:>12,d}")
    print("Parameters:")
    for part, n in parameter_counts(cfg).items():
        print(f"  {part:<15} {n:>12,d}")
    print(f"Native kernels: {_kernel_choice()}")
    return 0


def _kernel_choice() -> str:
    """Which kernel set the native engine runs here, and why."""
    import platform

    from . import _native

    sets = _native.kernel_sets()
    why = {
        "avx512": "the CPU has AVX-512 F, VL, DQ and BW",
        "avx2": "the CPU has AVX2 and FMA but not all of AVX-512 F, VL, DQ, BW",
        "neon": "the CPU has Advanced SIMD (NEON)",
        "generic": f"no faster set is built for {platform.machine()} or this CPU lacks it",
    }
    return (
        f"{_native.simd()} ({why.get(_native.simd(), 'chosen')}; this CPU runs "
        f"{', '.join(sets)}; the last is used)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if not 0 <= args.loss < 1:
        print("kboost-rt: error: --loss must be in [0, 1)", file=sys.stderr)
        return 2
    return run_demo(
        Path(args.out),
        args.task,
        args.delay,
        args.loss,
        Path(args.models) if args.models else None,
        Path(args.example) if args.example else None,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BACKENDS, CONFIGS, format_breakdown, format_table, run_bench

    configs = [c for c in args.configs.split(",") if c] if args.configs else []
    if args.configs is None:
        configs = [] if args.model else list(CONFIGS)
    backends = args.backends.split(",")
    for value, allowed, what in ((configs, CONFIGS, "config"), (backends, BACKENDS, "backend")):
        unknown = [v for v in value if v not in allowed]
        if unknown:
            print(
                f"kboost-rt: error: unknown {what} {unknown[0]!r} "
                f"(choose from {', '.join(allowed)})",
                file=sys.stderr,
            )
            return 2
    subjects = configs + list(args.model or [])
    print(
        f"Benchmarking {', '.join(subjects)} on {', '.join(backends)} "
        f"({args.seconds:g} s of audio each)...",
        file=sys.stderr,
    )
    report = run_bench(
        args.seconds,
        Path(args.json) if args.json else None,
        configs,
        backends,
        progress=lambda line: print(line, file=sys.stderr),
        models=args.model or [],
        breakdown=args.breakdown,
    )
    print(format_table(report))
    if args.breakdown:
        print(format_breakdown(report))
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _key(args: argparse.Namespace) -> tuple[int, bytes] | None:
    from .protocol import load_keys

    if not args.key_file:
        return None
    keys = load_keys(args.key_file)
    key_id = args.key_id if args.key_id else min(keys)
    if key_id not in keys:
        raise ValueError(f"{args.key_file}: no key with id {key_id}")
    return key_id, keys[key_id]


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    from .protocol import load_keys
    from .server import HintServer, load_served_models

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from .model_select import resolve_model

    # Folders or shipped model names, like every other command.
    boosted = [str(resolve_model(m)) for m in args.model]
    models = load_served_models(boosted, str(resolve_model(args.large)) if args.large else None)
    keys = load_keys(args.key_file) if args.key_file else None
    server = HintServer(
        models,
        args.host,
        args.port,
        keys,
        args.max_streams,
        args.idle_timeout,
        args.workers,
        args.max_load,
        args.max_streams_per_address,
        args.opens_per_second,
    )
    host, port = server.address
    print(
        f"serving hints for {', '.join(models)} on {host}:{port}"
        f"{' (authenticated)' if keys else ''}",
        flush=True,
    )
    for m in models.values():
        print(
            f"  {m.name}: {m.step_seconds * 1e3:.2f} ms per chunk, admits {server.admits(m)} "
            f"streams at --max-load {args.max_load:g}; "
            + (f"pca hints ({m.codec.components} components)" if m.codec else "no pca hints"),
            flush=True,
        )
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever(report_every=args.report_every)
    except KeyboardInterrupt:
        pass
    print(f"shut down: {server.summary_line()}", flush=True)
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    import signal
    import time

    from .relay import FaultRelay, Impairment

    impairment = Impairment(
        args.delay_ms,
        args.jitter_ms,
        args.loss,
        args.burst,
        args.reorder,
        args.duplicate,
        args.corrupt,
    )
    relay = FaultRelay(args.to, impairment, args.listen, args.seed).start()
    host, port = relay.address
    print(f"relaying {host}:{port} -> {args.to[0]}:{args.to[1]} with {impairment}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    relay.stop()
    print(f"relay: {relay.summary()}", flush=True)
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from . import protocol
    from .hint_codec import default_encoding
    from .loadtest import Target, loadtest
    from .model_files import load_model_files
    from .model_select import resolve_model

    try:
        counts = [int(n) for n in args.streams.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        print("kboost-rt: error: --streams takes stream counts, e.g. 1,8,16", file=sys.stderr)
        return 2
    if args.server and args.paper_size:
        print("kboost-rt: error: --paper-size makes its own server; drop --server", file=sys.stderr)
        return 2
    key = None
    if args.key_file:
        keys = protocol.load_keys(args.key_file)
        key_id = args.key_id if args.key_id else min(keys)
        if key_id not in keys:
            print(f"kboost-rt: error: key id {key_id} is not in {args.key_file}", file=sys.stderr)
            return 2
        key = (key_id, keys[key_id])
    with tempfile.TemporaryDirectory() as tmp:
        if args.paper_size:
            path = _paper_size_models(Path(tmp))
        else:
            path = resolve_model(args.model)
        cfg = load_model_files(path).config
        if cfg.role != "boosted" or cfg.boost is None:
            print(f"kboost-rt: error: {path}: loadtest needs a boosted model", file=sys.stderr)
            return 2
        encoding = (
            default_encoding(path)
            if args.encoding == "auto"
            else protocol.HintEncoding[args.encoding.upper()]
        )
        target = Target(
            path.name, cfg.net.channels, cfg.boost.delay, encoding, key, cfg.boost.max_age
        )
        print(
            f"{target.model}, {encoding.name.lower()} hints, {args.seconds:g} s per stream count"
            + ("" if args.server else ", a local server")
        )
        header = (
            f"{'streams':>7} {'on time':>8} {'late':>6} {'lost':>6} {'rtt p50':>8} "
            f"{'rtt p99':>8} {'up kB/s':>8} {'down kB/s':>9} {'server':>7} {'generator':>9}"
        )
        print(header)

        def show(r: dict) -> None:
            server_cpu = f"{r['server_cpu']:.0%}" if "server_cpu" in r else "-"
            print(
                f"{r['streams']:>7} {r['on_time']:>8.1%} {r['late']:>6.1%} {r['lost']:>6.1%} "
                f"{r['rtt_p50']:>6.1f}ms {r['rtt_p99']:>6.1f}ms "
                f"{r['up_kBps_per_stream']:>8.1f} {r['down_kBps_per_stream']:>9.1f} "
                f"{server_cpu:>7} {r['generator_cpu']:>9.0%}",
                flush=True,
            )

        try:
            results = loadtest(
                target,
                counts,
                args.seconds,
                server=args.server,
                model_paths=[str(path)],
                key_file=args.key_file,
                workers=args.workers,
                progress=show,
            )
        except RuntimeError as e:
            print(f"kboost-rt: error: {e}", file=sys.stderr)
            return 2
    print("(CPU: share of one core; rtt: send to hint arrival; kB/s with IP and UDP headers)")
    if args.json:
        doc = {
            "model": target.model,
            "encoding": encoding.name.lower(),
            "seconds": args.seconds,
            "server": "{}:{}".format(*args.server) if args.server else "local",
            "cpus": os.cpu_count(),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


def _paper_size_models(root: Path) -> Path:
    """The paper's boosted (d = 3) and large models with random weights (what a step
    costs does not depend on the weights), and a hint codec of their hints."""
    import dataclasses

    import numpy as np

    from .config import PAPER_BOOSTED, PAPER_LARGE
    from .engine import NativeEngine
    from .hint_codec import fit_codec
    from .model_files import random_weights, save_model_files
    from .signal_path import CHUNK

    boosted = dataclasses.replace(
        PAPER_BOOSTED,
        large_model="paper-large",
        boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=3),
    )
    save_model_files(root / "paper-boosted-d3", boosted, random_weights(boosted, 1))
    save_model_files(root / "paper-large", PAPER_LARGE, random_weights(PAPER_LARGE, 2))
    large = NativeEngine.from_folder(root / "paper-large", hints_for=root / "paper-boosted-d3")
    noise = (0.1 * np.random.default_rng(0).standard_normal((200, 2, CHUNK))).astype(np.float32)
    hints = np.array([large.process_with_hint(chunk)[1] for chunk in noise])
    fit_codec(hints, 96).save(root / "paper-boosted-d3")
    return root / "paper-boosted-d3"


def cmd_process(args: argparse.Namespace) -> int:
    _select_model(args)
    return _with_local_server(args, lambda: _process(args))


def cmd_midi_learn(args: argparse.Namespace) -> int:
    import time

    from .midi import MidiController, MidiMapping, open_input
    from .params import LiveParams

    path = Path(args.map)
    mapping = MidiMapping.load(path) if path.exists() else MidiMapping.default()
    controller = MidiController(LiveParams(), mapping)
    controller.learn(args.param)
    port = open_input(controller, args.port)
    print(f"move the control for {args.param} on {args.port!r}...", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    try:
        while controller.learning and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        port.close_port()
    if controller.learning:
        print(f"kboost-rt: error: nothing moved in {args.timeout:g} s", file=sys.stderr)
        return 2
    binding = next(b for b in mapping.bindings if b.param == args.param)
    mapping.save(path)
    print(
        f"{args.param} <- {binding.kind} {binding.number}"
        f"{'' if binding.channel is None else f' on channel {binding.channel}'}; saved {path}"
    )
    return 0


def _mix_args(p: argparse.ArgumentParser, where: str = "mix: ") -> None:
    """The mix parameters `process --mix` and `live` share (live: the starting values)."""
    p.add_argument("--gain-db", type=float, default=0.0, help=f"{where}output gain (default: 0)")
    p.add_argument(
        "--wet", type=float, default=1.0, help=f"{where}1 model output, 0 the input (default: 1)"
    )
    p.add_argument(
        "--source",
        type=int,
        default=0,
        help=f"{where}0 all sources summed, or 1 or 2 (default: 0)",
    )
    p.add_argument("--bypass", action="store_true", help=f"{where}the input only")
    p.add_argument(
        "--no-boost",
        action="store_true",
        help="run the boosted model without hints (the server still gets the audio)",
    )


def _mix_params(args: argparse.Namespace):
    from .params import Params

    return Params(args.gain_db, args.wet, not args.no_boost, args.source, args.bypass)


def _process(args: argparse.Namespace) -> int:
    from .process import ProcessError, process_file
    from .processor import hint_age_stats

    params = _mix_params(args)
    if args.hint_schedule:
        if not args.server:
            raise ValueError("--hint-schedule records the hints of a server: give --server or "
                             "--local-server")  # fmt: skip
        Path(args.hint_schedule).touch()  # fails now, not after the whole file
    try:
        result = process_file(
            Path(args.input),
            Path(args.output),
            Path(args.model),
            args.server,
            _key(args),
            _encoding(args),
            progress=not args.quiet,
            params=params,
            mix=args.mix,
            fallback_after=args.fallback_after,
        )
    except ProcessError as e:
        print(f"kboost-rt: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(str(p) for p in result.outputs)} ({result.chunks} chunks)")
    for note in result.notes:
        print(f"note: {note}")
    if result.link is not None:
        s = result.link
        print(
            f"hints: {s.on_time} on time, {s.late} late, {s.lost} lost, {s.duplicate} "
            f"duplicate, {s.corrupt} corrupt; round trip {s.rtt_chunks:g} chunks "
            f"(max {s.max_rtt_chunks})"
        )
        if args.hint_schedule and result.hint_schedule is not None:
            Path(args.hint_schedule).write_text(
                json.dumps({"chunks": result.chunks, "hint_ages": result.hint_schedule}) + "\n"
            )
            print(f"wrote the hint schedule to {args.hint_schedule}")
        ages = hint_age_stats(result.hint_ages)
        if ages is not None:
            shares = ", ".join(f"{a}: {n}" for a, n in enumerate(ages["by_age"]) if n)
            print(
                f"hint age when used: median {ages['median']}, p95 {ages['p95']} chunks "
                f"(hints per age {shares})"
            )
    if result.chunks_on_small:
        print(f"small-model fallback: {result.chunks_on_small} chunks (hints stayed away)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import Jitter, compare_any_delay, evaluate, format_table, plot, write_json
    from .model_files import shipped_models_dir
    from .process import ProcessError

    try:
        delays = [int(d) for d in args.delays.split(",")]
        losses = [float(p) for p in args.hint_loss.split(",")]
    except ValueError:
        print("kboost-rt: error: --delays takes integers, --hint-loss fractions", file=sys.stderr)
        return 2
    encodings = args.hint_encodings.split(",")
    if any(e not in ("float32", "float16", "int8", "pca") for e in encodings):
        print(
            "kboost-rt: error: --hint-encodings takes float32, float16, int8, pca", file=sys.stderr
        )
        return 2
    if any(not 0 <= p <= 1 for p in losses):
        print("kboost-rt: error: --hint-loss values must be in [0, 1]", file=sys.stderr)
        return 2
    try:
        jitter = Jitter.parse(args.jitter) if args.jitter else None
    except ValueError as e:
        print(f"kboost-rt: error: {e}", file=sys.stderr)
        return 2
    models = Path(args.models) if args.models else shipped_models_dir()
    print(f"Evaluating {args.task} models in {models} on {args.data}...", file=sys.stderr)
    try:
        report = evaluate(
            args.task,
            Path(args.data),
            models,
            delays,
            losses,
            args.seed,
            progress=lambda line: print(line, file=sys.stderr),
            encodings=encodings,
            fallback_after=args.fallback_after,
            jitter=jitter,
        )
    except ProcessError as e:
        print(f"kboost-rt: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    for line in compare_any_delay(report):
        print(line)
    write_json(report, Path(args.json))
    png = Path(args.plot) if args.plot else Path(args.json).with_suffix(".png")
    if plot(report, png):
        print(f"wrote {args.json} and {png}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .training import sources

    if args.data_command == "packages":
        print(" ".join(sources.PACKAGES))
        return 0
    from .training.mixing import write_set

    cache = Path(args.cache)
    if args.data_command == "build":
        from .training.rooms import build_rooms

        build_rooms(cache)
        manifest = sources.build_cache(cache)
        for kind, splits in manifest.items():
            for split, items in splits.items():
                minutes = sum(items.values()) / 60
                print(f"{kind:<7}{split:<6}{len(items):>5} items {minutes:8.1f} min")
        return 0
    if args.data_command == "pack":
        from .training.pack import PackError, write_pack

        try:
            tasks = [t for t in args.tasks.split(",") if t]
            for task in tasks:
                if task not in ("separate", "enhance"):
                    raise PackError(f"unknown task {task!r} (choose from separate, enhance)")
            write_pack(cache, tasks, Path(args.out), args.megabytes, rooms=args.rooms)
        except PackError as e:
            print(f"kboost-rt: error: {e}", file=sys.stderr)
            return 2
        return 0
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"kboost-rt: error: {out} exists and is not empty", file=sys.stderr)
        return 2
    write_set(cache, args.task, args.split, out, args.count, args.seconds, args.seed)
    print(f"wrote {args.count} {args.task} examples ({args.split} split) to {out}")
    return 0


def cmd_codec(args: argparse.Namespace) -> int:
    from .model_select import resolve_model
    from .protocol import HintEncoding, SampleFormat, bytes_per_second
    from .training.codec_fit import fit_model_codec

    if not 1 <= args.components <= 255:
        print("kboost-rt: error: --components must be in [1, 255]", file=sys.stderr)
        return 2
    for name in args.models:
        try:
            folder = resolve_model(name)
            print(f"{folder}: hints of {args.clips} training clips of {args.seconds:g} s...")
            codec, kept = fit_model_codec(
                folder, Path(args.cache), args.components, args.clips, args.seconds
            )
        except (ModelFileError, FileNotFoundError, ValueError) as e:
            print(f"kboost-rt: error: {e}", file=sys.stderr)
            return 2
        file = codec.save(folder)
        down = bytes_per_second(
            codec.hint_channels, 2, HintEncoding.PCA, SampleFormat.INT16, True, codec
        )[1]
        print(
            f"  wrote {file}: {codec.components} components keep {kept['train']:.2%} of the "
            f"hints' variance on train, {kept['val']:.2%} on val; pca hints "
            f"{down / 1e3:.1f} kB/s (keyed, IP and UDP headers included)"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.recipes import RECIPES
    from .training.trainer import train

    if args.list:
        shipped = shipped_models_dir()
        for name, r in RECIPES.items():
            note = "" if (shipped / name).is_dir() else "  (not shipped)"
            print(
                f"{name:<22} v{r.version}  {r.steps:>5} steps  batch {r.batch} x {r.seconds:g} s"
                + note
            )
        return 0
    if not args.recipes:
        print("kboost-rt: error: name at least one recipe (--list shows them)", file=sys.stderr)
        return 2
    unknown = [n for n in args.recipes if n not in RECIPES]
    if unknown:
        print(
            f"kboost-rt: error: unknown recipe {unknown[0]!r} (--list shows them)", file=sys.stderr
        )
        return 2
    if args.workers < 0:
        print("kboost-rt: error: --workers must be 0 or more", file=sys.stderr)
        return 2
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        print(f"kboost-rt: error: --device {args.device!r}: {err}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("kboost-rt: error: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    # A boosted recipe needs its large model, and a recipe with `init` the model it
    # starts from: in --out already, or made earlier on this command line.
    made: set[str] = set()
    for name in args.recipes:
        r = RECIPES[name]
        for needed in (r.large, r.init):
            if needed and needed not in made and not (Path(args.out) / needed).is_dir():
                print(
                    f"kboost-rt: error: {name} needs {needed}, which is not in {args.out}: "
                    f"train it first (kboost-rt train {needed} {name})",
                    file=sys.stderr,
                )
                return 2
        made.add(name)
    for name in args.recipes:
        val = train(
            name,
            Path(args.cache),
            Path(args.workdir),
            Path(args.out),
            device=args.device,
            workers=args.workers,
        )
        scores = ", ".join(f"{k} {v:.2f} dB" for k, v in val.items())
        print(f"{name}: validation {scores}; wrote {Path(args.out) / name}")
    return 0


def _with_local_server(args: argparse.Namespace, run):
    """Run `run()` with args.server pointing at a child `kboost-rt serve` if asked,
    after picking the model by the measured round trip for --delay auto."""
    auto = args.delay == "auto"
    if not getattr(args, "local_server", False):
        if auto:
            _pick_delay(args)
        return run()
    if args.server:
        raise ValueError("--server and --local-server exclude each other")
    from .model_select import models_to_serve
    from .server import LocalServer

    with LocalServer(models_to_serve(args.model, args.task, auto)) as local:
        args.server = local.address
        print(
            f"started a local hint server on {local.address[0]}:{local.address[1]}", file=sys.stderr
        )
        if auto:
            _pick_delay(args)
        return run()


def cmd_live(args: argparse.Namespace) -> int:
    if args.midi_map and not args.midi_port:
        raise ValueError("--midi-map needs --midi-port (the port whose messages it maps)")
    _select_model(args)
    return _with_local_server(args, lambda: _live(args))


def _live(args: argparse.Namespace) -> int:
    from .live import run_live

    report = run_live(
        Path(args.model),
        args.server,
        _key(args),
        args.input_device,
        args.output_device,
        args.midi_port,
        Path(args.midi_map) if args.midi_map else None,
        args.seconds,
        Path(args.stats_json) if args.stats_json else None,
        Path(args.record_input) if args.record_input else None,
        Path(args.record_output) if args.record_output else None,
        status=not args.quiet,
        device_rate=args.device_rate,
        resample_phase=args.resample_phase,
        fallback_after=args.fallback_after,
        params=_mix_params(args),
        verbose=args.verbose,
        measure_latency=args.measure_latency,
        exact_rate=args.exact_rate,
        encoding=_encoding(args),
    )
    live = report["live"]
    t = live["callback_us"]
    print(
        f"{report['chunks']} chunks; callback median {t['p50']:.0f} us, p99 {t['p99']:.0f} us, "
        f"p99.9 {t['p999']:.0f} us, max {t['max']:.0f} us of a {live['period_us']:.0f} us "
        f"period; xruns {live['xruns']}"
    )
    if report.get("latency"):
        lat = report["latency"]
        b = lat["budget"]
        print(
            f"input-to-output latency {lat['measured_ms']:.2f} ms: the callback's path "
            f"{lat['path_ms']:.2f} ms + device input {lat['device_input_ms']:.2f} ms + output "
            f"{lat['device_output_ms']:.2f} ms (as PortAudio reports them); budget "
            f"{lat['budget_ms']:.2f} ms (algorithmic {b['algorithmic_ms']:g} + buffering "
            f"{b['buffering_ms']:.2f} + resampling {b['resampling_ms']:.2f})"
        )
        if lat["hint_delay_ms"] is not None:
            print(f"hints arrive {lat['hint_delay_ms']:g} ms after their audio, by design "
                  "(the model was trained for that); not part of the latency above")  # fmt: skip
    if report["link"]:
        s = report["link"]
        ages = report.get("hint_age_chunks")
        age = "" if not ages else f"; age when used median {ages['median']}, p95 {ages['p95']}"
        print(f"hints: {s['on_time']} on time, {s['late']} late, {s['lost']} lost{age}")
    if report.get("chunks_on_small"):
        print(f"small-model fallback: {report['chunks_on_small']} chunks (hints stayed away)")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from .live import list_devices

    print(list_devices())
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    """Model selection of `process` and `live`."""
    p.add_argument(
        "--model",
        help="model folder or shipped model name (default: the shipped model of --task: "
        "with a hint server <task>-boosted, the any-delay model; else <task>-small)",
    )
    p.add_argument(
        "--task", choices=["separate", "enhance"], help="shipped model task (default: separate)"
    )
    p.add_argument(
        "--delay",
        type=_delay_arg,
        help="only for fixed-delay models, which are not shipped: run <task>-boosted-d<DELAY> "
        "(chunks of 8 ms) of the models folder ($KBOOST_RT_MODELS) instead of the any-delay "
        "model, or auto: measure the round trip and take the smallest delay there that covers "
        "it (the any-delay model where the folder has one)",
    )


def _delay_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of chunks, or auto") from None


def _select_model(args: argparse.Namespace) -> None:
    from .model_select import resolve_model

    if args.delay == "auto":
        if args.model is not None:
            raise ValueError("--delay auto picks the model itself: drop --model")
        if not (args.server or args.local_server):
            raise ValueError(
                "--delay auto measures the round trip: give --server or --local-server"
            )
        return
    boosted = bool(args.server or args.local_server)
    args.model = str(resolve_model(args.model, args.task, args.delay, boosted))


def _pick_delay(args: argparse.Namespace) -> None:
    from .model_select import model_for_round_trip

    model, rtt = model_for_round_trip(args.server, args.task, _key(args))
    args.model = str(model)
    if rtt != rtt:  # nan: the any-delay model, nothing measured
        print(f"using {model.name}: it takes each hint at the age it arrives", file=sys.stderr)
    else:
        print(f"round trip {rtt:g} chunks (95th percentile): using {model.name}", file=sys.stderr)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


HINT_CHOICES = ["auto", "float32", "float16", "int8", "pca"]  # auto: the model's default


def _encoding(args: argparse.Namespace):
    from .protocol import HintEncoding

    return None if args.hints == "auto" else HintEncoding[args.hints.upper()]


def _link_args(p: argparse.ArgumentParser, server_help: str) -> None:
    """The hint-link options `process` and `live` share."""
    p.add_argument("--server", type=_host_port, metavar="HOST:PORT", help=server_help)
    p.add_argument(
        "--local-server",
        action="store_true",
        help="start `kboost-rt serve` for this model in a child process",
    )
    p.add_argument("--key-file", help="pre-shared key file (see serve)")
    p.add_argument("--key-id", type=int, default=0, help="which key (default: the lowest id)")
    p.add_argument(
        "--hints",
        choices=HINT_CHOICES,
        default="auto",
        help="hint encoding on the link; auto: pca (the model's hint codec, about 23 kB/s) "
        "where the boosted model has one, else int8 (default: auto)",
    )
    p.add_argument(
        "--fallback-after",
        type=_non_negative_int,
        default=FALLBACK_AFTER,
        metavar="CHUNKS",
        help="with a hint server, hand over to the task's small model (from the boosted "
        "model's folder, level- and order-matched) after this many chunks in a row without "
        "a hint, where the two models' validation says it helps (default: "
        f"{FALLBACK_AFTER}, 200 ms; 0: never)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kboost-rt",
        description="Real-time knowledge boosting: a small streaming speech model "
        "helped by delayed hints from a large one.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list built-in presets and shipped models with their cost")
    p.add_argument("--dir", help="model folder root (default: the shipped models)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="validate one model folder (or preset) and print its cost")
    p.add_argument("model", help="a model folder, or a preset: " + ", ".join(PRESETS))
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "bench",
        help="time one streaming step per backend (native, eager, torchscript, onnxruntime)",
    )
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument(
        "--seconds", type=float, default=10.0, help="audio per config and backend (default: 10)"
    )
    p.add_argument(
        "--configs",
        help="comma-separated: small, boosted, large (paper sizes, random weights; "
        "default: all three unless --model is given)",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="also a model folder or shipped model name, with its own weights (repeatable)",
    )
    p.add_argument(
        "--backends",
        default="native,eager,torchscript,onnxruntime",
        help="comma-separated: native, eager, torchscript, onnxruntime, torch-compile "
        "(compiles for minutes; default: the first four)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time each stage of the native step inside the real step (best kernels)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", help="run the large-model hint server (UDP)")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="PATH",
        help="a boosted model folder or shipped model name whose hints to serve "
        "(repeatable); its large model is the folder its config names, next to it",
    )
    p.add_argument("--large", metavar="PATH", help="the large model folder (overrides)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=47000, help="UDP port (default: 47000; 0: any)")
    p.add_argument(
        "--key-file",
        help="pre-shared keys, 'KEY_ID HEX_SECRET' per line: "
        "every packet must carry an HMAC-SHA256 under one of them",
    )
    p.add_argument("--max-streams", type=int, default=16, help="(default: 16)")
    p.add_argument(
        "--max-streams-per-address",
        type=int,
        default=4,
        help="streams one address may open on a server without keys (default: 4)",
    )
    p.add_argument(
        "--opens-per-second",
        type=float,
        default=2.0,
        help="new streams one key (or address, without keys) may open per second, "
        "after a first 8 x that (default: 2)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="threads running model steps (default: one per core)",
    )
    p.add_argument(
        "--max-load",
        type=float,
        default=0.8,
        help="refuse a stream that would push the measured model load past this share of "
        "the workers' time (default: 0.8)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="seconds of silence before a stream expires (default: 10)",
    )
    p.add_argument(
        "--report-every",
        type=float,
        default=10.0,
        help="seconds between status lines (default: 10; 0: none)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "relay",
        help="UDP relay that adds delay, jitter, loss, reordering, duplication and corruption",
    )
    p.add_argument("--to", type=_host_port, required=True, metavar="HOST:PORT", help="the server")
    p.add_argument(
        "--listen",
        type=_host_port,
        default=("127.0.0.1", 47001),
        metavar="HOST:PORT",
        help="where devices send (default: 127.0.0.1:47001)",
    )
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="fraction lost, each way")
    p.add_argument("--burst", type=float, default=1.0, help="mean loss burst length")
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--duplicate", type=float, default=0.0)
    p.add_argument("--corrupt", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser(
        "loadtest",
        help="how many real-time streams a hint server keeps on time (UDP clients "
        "in a process of their own)",
    )
    p.add_argument(
        "--streams", default="1,8,16,24", help="stream counts to run (default: 1,8,16,24)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="per stream count (default: 10)")
    p.add_argument(
        "--encoding",
        choices=HINT_CHOICES,
        default="auto",
        help="hint encoding the streams ask for; auto: pca where the model has a hint codec, "
        "else int8 (default: auto)",
    )
    p.add_argument(
        "--model",
        default="separate-boosted",
        metavar="NAME|DIR",
        help="boosted model the streams run (default: separate-boosted)",
    )
    p.add_argument(
        "--paper-size",
        action="store_true",
        help="the paper's model sizes with random weights instead of --model",
    )
    p.add_argument(
        "--server",
        type=_host_port,
        metavar="HOST:PORT",
        help="a running server to test (default: start one with room for every stream)",
    )
    p.add_argument("--key-file", help="keys: the streams sign with one (and a local server checks)")
    p.add_argument("--key-id", type=int, help="which key of --key-file (default: the lowest id)")
    p.add_argument("--workers", type=int, help="the local server's --workers")
    p.add_argument("--json", metavar="F", help="write the results here")
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("process", help="stream an audio file through a model, chunk by chunk")
    p.add_argument(
        "input", help="audio file soundfile reads (resampled to 16 kHz, mono or stereo mapped)"
    )
    p.add_argument("output", help="WAV to write (separation: OUT_s1.wav, OUT_s2.wav)")
    _model_args(p)
    _link_args(p, "hint server (boosted models); the file is paced at real time")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--hint-schedule",
        metavar="F",
        help="with a server: write when each chunk's hint came in (JSON), for "
        "`eval --jitter F` to replay the same schedule",
    )
    p.add_argument(
        "--mix",
        action="store_true",
        help="write the monitor mix under the parameters below (what `live` plays) "
        "instead of one file per source",
    )
    _mix_args(p)
    p.set_defaults(func=cmd_process)

    p = sub.add_parser(
        "live", help="process live audio (a native PortAudio duplex stream, 8 ms chunks)"
    )
    _model_args(p)
    _link_args(p, "hint server")
    p.add_argument("--input-device", help="name (substring) or index (see `devices`)")
    p.add_argument("--output-device", help="name (substring) or index")
    p.add_argument("--midi-port", help="MIDI input port (substring of its name)")
    p.add_argument("--midi-map", help="MIDI map file, .json or .toml (default map otherwise)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--stats-json", help="write callback, link and MIDI statistics here")
    p.add_argument("--record-input", help="also write what the callback received (WAV)")
    p.add_argument("--record-output", help="also write what it played (WAV)")
    p.add_argument(
        "--device-rate",
        type=int,
        help="run the device at this rate and resample (default: 16000 if the device "
        "runs it, else its default rate)",
    )
    p.add_argument(
        "--resample-phase",
        choices=["minimum", "linear"],
        default="minimum",
        help="resampler filters when the device does not run 16 kHz: minimum phase "
        "adds about 0.3 ms, linear phase about 3.3 ms (the amount is printed at "
        "start-up); both pass 0-7 kHz flat and stop everything from 8.5 kHz "
        "by 80 dB (default: minimum)",
    )
    p.add_argument(
        "--exact-rate",
        action="store_true",
        help="at a device rate where no whole number of frames is an 8 ms chunk "
        "(44.1 kHz), still run the model at exactly 16000 Hz; that costs up to a "
        "chunk (8 ms) of latency (default: run it within 0.1 %% of 16 kHz instead)",
    )
    _mix_args(p, "start with ")
    p.add_argument(
        "--measure-latency",
        action="store_true",
        help="run in bypass on silence with one click, and report how long it takes from "
        "the device's input to its output beside the budget (1.5 s unless --seconds)",
    )
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.add_argument("--verbose", action="store_true", help="show the audio libraries' own messages")
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("devices", help="list audio devices and MIDI ports")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("midi", help="MIDI mapping")
    midi = p.add_subparsers(dest="midi_command", required=True, metavar="ACTION")
    q = midi.add_parser("learn", help="bind a parameter to the next control moved")
    q.add_argument("param", help="gain_db, wet, boost, source or bypass")
    q.add_argument("--port", required=True, help="MIDI input port (substring of its name)")
    q.add_argument(
        "--map",
        default="midi-map.toml",
        help="map file to update (.toml or .json; default: midi-map.toml)",
    )
    q.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default: 30)")
    q.set_defaults(func=cmd_midi_learn)

    p = sub.add_parser(
        "eval", help="SI-SDRi of a task's models on an evaluation set, through the streaming path"
    )
    p.add_argument("--task", choices=["separate", "enhance"], required=True)
    p.add_argument(
        "--data", required=True, help="folder of <id>/mixture.wav, <id>/source1.wav[, source2.wav]"
    )
    p.add_argument(
        "--models",
        help="folder holding <task>-small, <task>-large and any of <task>-boosted "
        "(any-delay) and fixed-delay <task>-boosted-d<D>; with no boosted model, the small "
        "and large ones alone (default: the shipped models, which have no fixed-delay ones)",
    )
    p.add_argument(
        "--delays",
        default="1,3,6",
        help="hint delays in chunks: the any-delay model runs at every one, each fixed model "
        "<task>-boosted-d<D> in --models at its own (default: 1,3,6)",
    )
    p.add_argument(
        "--jitter",
        metavar="LO-HI|FILE",
        help="instead, run the any-delay model and the fixed models of --delays on one "
        "schedule of hint ages drawn per hint from LO..HI chunks (e.g. 1-6), or replayed "
        "from a schedule `process --hint-schedule FILE` recorded; hints also lost by "
        "--hint-loss; a fixed model uses a hint only if it is there by its delay",
    )
    p.add_argument("--hint-loss", default="0", help="hint loss fractions (default: 0)")
    p.add_argument(
        "--hint-encodings",
        default="float32",
        help="hint wire encodings to compare: float32, float16, int8, pca (the boosted "
        "model's hint codec) (default: float32)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the hint losses and ages (default: 0)"
    )
    p.add_argument(
        "--fallback-after",
        type=_non_negative_int,
        default=0,
        metavar="CHUNKS",
        help="run the boosted models with the small-model fallback of `process` and `live` "
        "(hand over after this many chunks without a hint; default: 0, the boosted model "
        "alone)",
    )
    p.add_argument("--json", required=True, help="results file")
    p.add_argument("--plot", help="PNG of SI-SDRi against delay (default: next to --json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="build the training data cache and evaluation sets")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data.add_parser("packages", help="print the Debian packages the data come from")
    q = data.add_parser("build", help="decode speech and noise, simulate rooms (resumes)")
    q.add_argument("--cache", default="data/cache", help="cache folder (default: data/cache)")
    q = data.add_parser("write-set", help="bake an evaluation set for `kboost-rt eval`")
    q.add_argument("--cache", default="data/cache", help="cache folder (default: data/cache)")
    q.add_argument("--task", choices=["separate", "enhance"], required=True)
    q.add_argument(
        "--split", choices=["val", "test"], default="val",
        help="val: unseen training-side speakers; test: the reserved held-out sources",
    )  # fmt: skip
    q.add_argument("--out", required=True, help="new folder for <id>/mixture.wav, ...")
    q.add_argument("--count", type=int, default=200, help="examples (default: 200)")
    q.add_argument("--seconds", type=float, default=4.0, help="length of each (default: 4)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    q = data.add_parser(
        "pack", help="the compact training data a GPU run takes along (tools/gpu_run.sh)"
    )
    q.add_argument("--cache", default="data/cache", help="cache folder (default: data/cache)")
    q.add_argument(
        "--tasks", default="separate,enhance",
        help="whose validation clips to take (default: separate,enhance)",
    )  # fmt: skip
    q.add_argument("--out", default=".gpu", help="pack folder (default: .gpu)")
    q.add_argument(
        "--megabytes", type=float, default=40.0,
        help="size of the pack (default: 40; a GPU machine takes 64 MiB with the repository)",
    )  # fmt: skip
    q.add_argument(
        "--rooms", choices=["simulate", "copy"], default="simulate",
        help="simulate: the GPU machine simulates its own training rooms (default); "
        "copy: take the cache's (only for a small room bank)",
    )  # fmt: skip
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        help="train shipped models from their recipes (resumes)",
        description="Trains each recipe into --out. A run resumes from its checkpoint in "
        "--workdir; without one, a recipe whose earlier version's model is in --out goes on "
        "from that model's weights and step count (fresh optimiser; the export is never worse "
        "than that model on validation).",
    )
    p.add_argument("recipes", nargs="*", help="recipe names, in order (e.g. separate-large)")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("--cache", default="data/cache", help="data cache (default: data/cache)")
    p.add_argument(
        "--workdir", default="data/runs", help="checkpoints and logs (default: data/runs)"
    )
    p.add_argument("--out", default="models", help="model folders go here (default: models)")
    p.add_argument(
        "--device", default="cpu", help="torch device to train on, e.g. cuda (default: cpu)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that mix training clips, for a GPU that outruns one (default: 0: "
        "mixed in the training process; boosted runs draw from their fixed clip bank)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "codec",
        help="fit a boosted model's hint codec (pca hints) on its large model's hints",
        description="Fits hint_codec.safetensors into each boosted model folder: the "
        "principal components of the hints its large model and hint generator make on "
        "training-split mixtures. `--hints pca` then sends 4 + K bytes a hint.",
    )
    p.add_argument("models", nargs="+", metavar="NAME|DIR", help="boosted model folders")
    p.add_argument("--components", type=int, default=96, help="K, coordinates a hint (default: 96)")
    p.add_argument("--cache", default="data/cache", help="data cache (default: data/cache)")
    p.add_argument("--clips", type=int, default=96, help="training clips (default: 96)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds a clip (default: 4)")
    p.set_defaults(func=cmd_codec)

    p = sub.add_parser(
        "demo",
        help="the main job: the shipped example through the hint server and the live engine "
        "path, with SI-SDRi, hint statistics, cost and spectrograms",
    )
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--task", choices=["separate", "enhance"], default="separate")
    p.add_argument(
        "--delay",
        type=int,
        help="run the fixed-delay model <task>-boosted-d<DELAY> of --models instead of the "
        "any-delay model (not shipped; default: the any-delay model)",
    )
    p.add_argument(
        "--loss", type=float, default=0.0, help="fraction of the link's packets a relay drops"
    )
    p.add_argument("--models", help="model folder root (default: the shipped models)")
    p.add_argument("--example", help="example folder (mixture.wav, source1.wav, ...)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelFileError, LinkError, ValueError, OSError) as e:
        print(f"kboost-rt: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if e.name == "torch" or (e.name or "").startswith("torch."):
            print(
                f"kboost-rt: error: '{args.command}' needs PyTorch: pip install 'kboost-rt[torch]'",
                file=sys.stderr,
            )
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
