"""Data pipeline and trainer: speaker splits, mixtures, loss, checkpoint/resume."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("pyroomacoustics")

from helpers import make_tiny_cache, speechlike  # noqa: E402

from kboost_rt.config import BoostConfig, NetConfig  # noqa: E402
from kboost_rt.evaluate import si_sdr as np_si_sdr  # noqa: E402
from kboost_rt.model_files import checksum, load_model_files  # noqa: E402
from kboost_rt.training import mixing, recipes, rooms, sources, trainer  # noqa: E402

RATE = 16000


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(tmp_path_factory.mktemp("cache"))


def test_rooms_have_direct_paths_1_to_3_m_away():
    rir = rooms.simulate_room(np.random.default_rng(5))
    assert rir.shape == (3, 2, rooms.RIR_LENGTH)
    first = np.argmax(np.abs(rir) > 0.2 * np.abs(rir).max(axis=-1, keepdims=True), axis=-1)
    import pyroomacoustics as pra

    # pyroomacoustics delays every response by half its fractional-delay filter.
    offset = pra.constants.get("frac_delay_length") // 2
    metres = (first - offset) / RATE * 343
    assert np.all(metres > 0.9) and np.all(metres < 3.1), metres
    # The two microphones 0.18 m apart hear each source at most 0.18 m apart.
    assert np.all(np.abs(metres[:, 0] - metres[:, 1]) <= 0.2 + 343 / RATE)
    # A wider array (the GPU run draws 0.14-0.22 m) is honoured: 1.5 m apart, the
    # microphones hear some source well over 0.2 m apart.
    wide = rooms.simulate_room(np.random.default_rng(5), (1.5, 1.5))
    first = np.argmax(np.abs(wide) > 0.2 * np.abs(wide).max(axis=-1, keepdims=True), axis=-1)
    assert np.abs(first[:, 0] - first[:, 1]).max() / RATE * 343 > 0.3


@pytest.mark.parametrize("task", ["separate", "enhance"])
def test_mixture_is_sources_plus_noise_at_the_task_snr(cache, task):
    mixer = mixing.Mixer(cache, task, "train")
    rng = np.random.default_rng(1)
    for _ in range(5):
        mixture, srcs = mixer.example(RATE, rng)
        assert mixture.shape == (2, RATE) and srcs.shape == (mixing.TASK_SOURCES[task], 2, RATE)
        noise = mixture - srcs.sum(axis=0)
        snr = 10 * np.log10(np.sum(srcs.sum(axis=0) ** 2) / np.sum(noise**2))
        lo, hi = mixing.SNR_DB[task]
        assert lo - 0.01 <= snr <= hi + 0.01
        assert np.abs(mixture).max() <= 0.95 + 1e-6


def test_separate_draws_two_different_talkers(cache):
    mixer = mixing.Mixer(cache, "separate", "val")
    rng = np.random.default_rng(2)
    for _ in range(5):
        _, srcs = mixer.example(RATE, rng)
        a, b = srcs[0, 0], srcs[1, 0]
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.9


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="kboost-rt data build"):
        mixing.Mixer(tmp_path, "separate", "train")
    with pytest.raises(ValueError, match="unknown task"):
        mixing.Mixer(tmp_path, "dereverb", "train")


def test_write_set_is_the_eval_format(cache, tmp_path):
    mixing.write_set(cache, "separate", "val", tmp_path / "set", count=2, seconds=0.5, seed=0)
    for ex in sorted((tmp_path / "set").iterdir()):
        mix, rate = sf.read(ex / "mixture.wav")
        s1, _ = sf.read(ex / "source1.wav")
        s2, _ = sf.read(ex / "source2.wav")
        assert rate == RATE and mix.shape == (8000, 2) == s1.shape == s2.shape
        assert np.abs(mix - s1 - s2).max() > 0  # plus noise
        assert np.std(mix - s1 - s2) < np.std(s1 + s2)


def test_speaker_split_keeps_reserved_sources_out_of_training(tmp_path, monkeypatch):
    """Real catalog code over a fake package tree: reserved voices go to test only."""
    klettres = tmp_path / "klettres"
    for lang in ("en", "de", "cs", "nl"):
        (klettres / lang / "alpha").mkdir(parents=True)
        sf.write(klettres / lang / "alpha" / "a.ogg", np.zeros(RATE, np.float32), RATE)
    fillets = tmp_path / "fillets"
    for name in ("city-m-x", "city-v-y", "city-hs-z"):
        (fillets / "sound" / "city" / "cs").mkdir(parents=True, exist_ok=True)
        sf.write(fillets / "sound" / "city" / "cs" / f"{name}.ogg", np.zeros(RATE), RATE)
    asterisk = tmp_path / "asterisk"  # both layouts: `en` (older packages), `it_IT_m_Carlo`
    for folder in ("en", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU"):
        (asterisk / folder).mkdir(parents=True)
        (asterisk / folder / "hello.g722").write_bytes(b"")
    for attr, path in {
        "KLETTRES": klettres,
        "FILLETS": fillets,
        "ASTERISK": asterisk,
        "SONIC_PI": tmp_path / "none",
        "MOH": tmp_path / "none",
        "SOUNDFONT": tmp_path / "none.sf2",
    }.items():
        monkeypatch.setattr(sources, attr, path)
    monkeypatch.setattr(sources.shutil, "which", lambda _: None)  # no TTS here
    split = {i.name: i.split for i in sources.catalog()}
    assert split == {
        "asterisk-allison": "train",
        "asterisk-ivrvoiceru": "val",
        "asterisk-carlo": "test",
        "klettres-en": "test",
        "klettres-de": "test",
        "klettres-cs": "train",
        "klettres-nl": "val",
        "fillets-m": "train",
        "fillets-v": "train",
        "fillets-hs": "val",
    }


def test_trim_and_join_level_speech():
    rng = np.random.default_rng(0)
    word = speechlike(0.5, 120, rng)
    padded = np.concatenate([np.zeros(8000, np.float32), word, np.zeros(8000, np.float32)])
    assert abs(sources._trim(padded).size - word.size) <= 320
    joined = sources._join([padded, 0.01 * padded], rng, speech=True)
    half = word.size
    assert np.isclose(np.std(joined[:half]), np.std(joined[-half - 8000 :][:half]), rtol=0.3)


def test_midi_file_is_a_standard_midi_file():
    blob = sources._midi_file(5, 2.0, __import__("random").Random(0))
    assert blob[:4] == b"MThd" and blob[14:18] == b"MTrk"
    assert int.from_bytes(blob[18:22], "big") == len(blob) - 22
    assert blob.endswith(b"\x00\xff\x2f\x00")


def test_loss_is_the_evaluation_si_sdr_and_permutation_invariant():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 2, 2, 4000)).astype(np.float32)
    est = ref + 0.3 * rng.standard_normal(ref.shape).astype(np.float32)
    ours = trainer.si_sdr(torch.from_numpy(est), torch.from_numpy(ref)).numpy()
    for s in range(2):
        for m in range(2):
            assert ours[0, s, m] == pytest.approx(np_si_sdr(est[0, s, m], ref[0, s, m]), abs=1e-3)
    direct = trainer.pit_si_sdr(torch.from_numpy(est), torch.from_numpy(ref))
    swapped = trainer.pit_si_sdr(torch.from_numpy(est[:, ::-1].copy()), torch.from_numpy(ref))
    assert direct.item() == pytest.approx(swapped.item(), abs=1e-5)


TINY = NetConfig(dim=4, hidden=4, blocks=2)


@pytest.fixture
def tiny_recipes(monkeypatch):
    base = dict(batch=2, seconds=0.25, warmup=2, val_every=2)
    table = {
        "t-large": recipes.Recipe(
            "t-large", 1, "separate", "large", dataclasses.replace(TINY, attention_heads=1),
            steps=2, **base,
        ),
        "t-small": recipes.Recipe("t-small", 1, "separate", "small", TINY, steps=4, **base),
        "t-boosted": recipes.Recipe(
            "t-boosted", 1, "separate", "boosted", TINY, steps=4,
            boost=BoostConfig(hint_channels=2, delay=2, heads=1, qk_dim=97), hint_bank=4,
            init="t-small", large="t-large", **base,
        ),
    }  # fmt: skip
    monkeypatch.setattr(trainer, "RECIPES", table)
    monkeypatch.setattr(trainer, "VAL_CLIPS", 2)
    monkeypatch.setattr(trainer, "VAL_SECONDS", 0.25)
    return table


def test_interrupted_training_resumes_to_the_same_weights(cache, tmp_path, tiny_recipes):
    straight = trainer.Run(tiny_recipes["t-small"], cache, tmp_path / "a", tmp_path / "ma")
    straight.run(progress=False)

    stopped = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    first = trainer.Run(stopped, cache, tmp_path / "b", tmp_path / "mb")
    first.run(progress=False)  # "killed" after step 2, with its checkpoint written
    ckpt = torch.load(tmp_path / "b" / "t-small" / "checkpoint.pt", weights_only=False)
    ckpt["recipe"] = tiny_recipes["t-small"].describe()  # the same recipe, run again
    torch.save(ckpt, tmp_path / "b" / "t-small" / "checkpoint.pt")
    resumed = trainer.Run(tiny_recipes["t-small"], cache, tmp_path / "b", tmp_path / "mb")
    assert resumed.step == 2
    resumed.run(progress=False)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name

    log = [json.loads(x) for x in (tmp_path / "a" / "t-small" / "train.log").open()]
    assert [e["step"] for e in log] == [2, 4]
    notes = json.loads((tmp_path / "ma" / "t-small" / "config.json").read_text())["notes"]
    assert notes["recipe"]["name"] == "t-small" and "si_sdr_i" in notes["validation"]


def test_a_checkpoint_of_another_recipe_is_refused(cache, tmp_path, tiny_recipes):
    trainer.Run(tiny_recipes["t-small"], cache, tmp_path, tmp_path / "m").checkpoint()
    other = dataclasses.replace(tiny_recipes["t-small"], lr=0.5)
    with pytest.raises(RuntimeError, match="another recipe"):
        trainer.Run(other, cache, tmp_path, tmp_path / "m")


def test_boosted_training_starts_from_the_small_model_and_drops_hints(
    cache, tmp_path, tiny_recipes
):
    models = tmp_path / "models"
    trainer.train("t-large", cache, tmp_path / "runs", models, progress=False)
    trainer.train("t-small", cache, tmp_path / "runs", models, progress=False)
    run = trainer.Run(tiny_recipes["t-boosted"], cache, tmp_path / "runs", models)
    small = trainer.load_model(models / "t-small")[0].state_dict()
    for name, tensor in run.model.small.state_dict().items():
        assert torch.equal(tensor, small[name]), name
    assert run.bank["maps"].shape[:2] == (4, 2 * 2 * 2)  # 2 sources x 2 mics x re/im
    drops = [run._train_batch()[3] for _ in range(50)]
    lost = torch.cat([~a for a in drops]).float().mean().item()
    assert 0.1 < lost < 0.5  # some hints dropped, most kept
    val = run.run(progress=False)
    assert set(val) == {"si_sdr_i", "si_sdr_i_no_hints"}
    assert (models / "t-boosted" / "weights.safetensors").is_file()
    # both scored on the same clips, and they say so: the fallback rule compares them
    named = {
        n: json.loads((models / n / "config.json").read_text())["notes"]["validation"]
        for n in ("t-large", "t-small", "t-boosted")
    }
    assert len({v["clips_sha256"] for v in named.values()}) == 1
    assert len(named["t-small"]["clips_sha256"]) == 16


def test_a_clip_bank_made_by_another_large_model_is_made_again(cache, tmp_path, tiny_recipes):
    models = tmp_path / "models"
    trainer.train("t-large", cache, tmp_path / "runs", models, progress=False)
    trainer.train("t-small", cache, tmp_path / "runs", models, progress=False)
    first = trainer.Run(tiny_recipes["t-boosted"], cache, tmp_path / "runs", models).bank
    again = trainer.Run(tiny_recipes["t-boosted"], cache, tmp_path / "runs", models).bank
    assert torch.equal(first["maps"], again["maps"])  # the cached bank, reused
    retrained = dataclasses.replace(tiny_recipes["t-large"], seed=1)
    trainer.Run(retrained, cache, tmp_path / "runs-2", models).run(progress=False)
    bank = trainer.Run(tiny_recipes["t-boosted"], cache, tmp_path / "runs", models).bank
    assert torch.equal(bank["x"], first["x"])  # the same clips ...
    assert not torch.equal(bank["maps"], first["maps"])  # ... with the new large model's maps
    banks = tmp_path / "runs" / "hint-banks"
    assert len(list(banks.glob("separate-train-*"))) == 1  # the stale one went


def test_boosted_runs_that_draw_the_same_clips_share_one_bank(
    cache, tmp_path, tiny_recipes, monkeypatch
):
    models, runs = tmp_path / "models", tmp_path / "runs"
    trainer.train("t-large", cache, runs, models, progress=False)
    trainer.train("t-small", cache, runs, models, progress=False)
    first = trainer.Run(tiny_recipes["t-boosted"], cache, runs, models).bank
    # another delay (as d1, d3, d6 and the any-delay model): the bank is not made again
    other = dataclasses.replace(
        tiny_recipes["t-boosted"], name="t-boosted-d1",
        boost=dataclasses.replace(tiny_recipes["t-boosted"].boost, delay=1),
    )  # fmt: skip
    monkeypatch.setattr(trainer.Mixer, "batch", lambda *a: pytest.fail("bank made again"))
    shared = trainer.Run(other, cache, runs, models).bank
    assert torch.equal(shared["maps"], first["maps"]) and torch.equal(shared["x"], first["x"])
    assert [f.name for f in (runs / "hint-banks").glob("separate-train-*")] == [
        f"separate-train-4x{tiny_recipes['t-boosted'].seconds:g}s-seed"
        f"{tiny_recipes['t-boosted'].seed + 99}-{shared['large'][:16]}.pt"
    ]
    # other clips (a bigger bank) are another bank
    monkeypatch.undo()
    bigger = dataclasses.replace(other, name="t-boosted-big", hint_bank=5)
    assert len(trainer.Run(bigger, cache, runs, models).bank["x"]) == 5
    assert len(list((runs / "hint-banks").glob("separate-train-*"))) == 2


def test_identity_merges_start_with_the_small_models_output(cache, tmp_path, tiny_recipes):
    models = tmp_path / "models"
    trainer.train("t-large", cache, tmp_path / "runs", models, progress=False)
    trainer.train("t-small", cache, tmp_path / "runs", models, progress=False)
    small = trainer.load_model(models / "t-small")[0]
    for identity in (False, True):
        recipe = dataclasses.replace(
            tiny_recipes["t-boosted"], identity_merges=identity, init_lr_scale=0.1
        )
        run = trainer.Run(recipe, cache, tmp_path / f"runs-{identity}", models)
        with torch.no_grad():
            alone = small(run.val["x"])[0]
            boosted = run._forward(run.val["x"], run.val["maps"])
        # Default merges change the small model's output from the first step;
        # identity merges leave it untouched until training moves their gain.
        assert torch.allclose(boosted, alone, atol=1e-6) == identity
    run.run(progress=False)
    assert all(m.attention.out.norm_weight.abs().max() > 0 for m in run.model.merges)
    inherited, new = run.opt.param_groups
    assert inherited["lr"] == pytest.approx(0.1 * new["lr"])
    assert len(inherited["params"]) == len(list(run.model.small.parameters()))


def test_a_checkpoint_from_before_a_recipe_field_existed_resumes(cache, tmp_path, tiny_recipes):
    recipe = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    trainer.Run(recipe, cache, tmp_path, tmp_path / "m").run(progress=False)
    path = tmp_path / "t-small" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    del ckpt["recipe"]["identity_merges"], ckpt["recipe"]["init_lr_scale"]
    torch.save(ckpt, path)
    same = trainer.Run(recipe, cache, tmp_path, tmp_path / "m")
    assert same.step == 2 and same.history == []
    longer = trainer.Run(dataclasses.replace(recipe, version=2, steps=4), cache, tmp_path,
                         tmp_path / "m")  # fmt: skip
    assert longer.step == 2 and longer.history[0]["stopped_at"] == 2


def test_a_later_version_that_only_trains_longer_continues(cache, tmp_path, tiny_recipes):
    v1 = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    trainer.Run(v1, cache, tmp_path, tmp_path / "m").run(progress=False)
    v2 = dataclasses.replace(v1, version=2, steps=4)
    run = trainer.Run(v2, cache, tmp_path, tmp_path / "m")
    assert run.step == 2
    assert trainer._lr(v2, 2, start=2) < trainer._lr(v2, 3, start=2)  # its own warm-up
    run.run(progress=False)
    notes = json.loads((tmp_path / "m" / "t-small" / "config.json").read_text())["notes"]
    assert notes["trained_steps"] == 4
    assert notes["continues"] == [{"version": 1, "steps": 2, "lr": v1.lr}]
    with pytest.raises(RuntimeError, match="another recipe"):  # nothing left to train
        trainer.Run(dataclasses.replace(v1, version=3, steps=4), cache, tmp_path, tmp_path / "m")
    with pytest.raises(RuntimeError, match="another recipe"):  # other data: not a continuation
        trainer.Run(dataclasses.replace(v2, version=3, steps=6, seconds=0.5), cache, tmp_path,
                    tmp_path)  # fmt: skip


def test_a_later_version_goes_on_from_the_model_folder_without_a_checkpoint(
    cache, tmp_path, tiny_recipes
):
    v1 = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    trainer.Run(v1, cache, tmp_path / "a", tmp_path / "m").run(progress=False)
    shipped = trainer.load_model(tmp_path / "m" / "t-small")[0].state_dict()
    # another machine: the model folder, but not the run folder with its checkpoint
    v2 = dataclasses.replace(v1, version=2, steps=4)
    run = trainer.Run(v2, cache, tmp_path / "b", tmp_path / "m")
    assert run.step == 2
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name
    assert run.best == run.shipped_score == pytest.approx(run.validate()["si_sdr_i"])
    assert run.history[-1]["optimiser_restarted"]
    val = run.run(progress=False)
    assert val["si_sdr_i"] >= run.shipped_score - 1e-6  # the export is never the worse one
    notes = json.loads((tmp_path / "m" / "t-small" / "config.json").read_text())["notes"]
    assert notes["trained_steps"] == 4
    assert notes["continues"] == [
        {"version": 1, "steps": 2, "lr": v1.lr, "optimiser_restarted": True}
    ]
    readme = (tmp_path / "m" / "t-small" / "README.md").read_text()
    assert "Trained 4 steps (the first 2 under version 1)" in readme
    # the same version again, or one that changes more than its length, starts afresh
    assert trainer.Run(v2, cache, tmp_path / "c", tmp_path / "m").step == 0
    other = dataclasses.replace(v2, version=3, steps=6, seconds=0.5)
    assert trainer.Run(other, cache, tmp_path / "d", tmp_path / "m").step == 0


def _tool(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_campaign_continues_shipped_models_and_retrains_the_boosted_one(
    cache, tmp_path, tiny_recipes, monkeypatch, capsys
):
    shipped = tmp_path / "shipped"
    for name in ("t-large", "t-small", "t-boosted"):
        trainer.train(name, cache, tmp_path / "runs", shipped, progress=False)
    campaign = _tool("cpu_campaign")
    monkeypatch.setattr(campaign, "RECIPES", tiny_recipes)
    monkeypatch.setattr(campaign, "shipped_models_dir", lambda: shipped)
    with pytest.raises(SystemExit, match="trained 4 steps already"):
        campaign.campaign_recipe("t-small", 4)
    with pytest.raises(SystemExit, match="no --steps or --lr"):
        campaign.campaign_recipe("t-boosted", 8)
    out = tmp_path / "campaign"
    common = ["--cache", str(cache), "--out", str(out)]
    with pytest.raises(SystemExit, match="needs t-large"):
        campaign.main(["t-boosted", *common])
    small = ["t-small", "--steps", "6", "--autocast", "bfloat16", *common]
    assert campaign.main(small) == 0
    said = capsys.readouterr().out
    assert "t-small v2: step 4 of 6" in said and "6 steps, validation" in said
    notes = json.loads((out / "t-small" / "config.json").read_text())["notes"]
    assert notes["recipe"]["version"] == 2 and notes["trained_steps"] == 6
    assert notes["recipe"]["autocast"] == "bfloat16"
    assert (shipped / "t-small" / "config.json").read_text() != (
        out / "t-small" / "config.json"
    ).read_text()  # the shipped folder is left alone
    assert campaign.main(small) == 0  # the same command resumes: nothing left to train
    assert "t-small v2: step 6 of 6" in capsys.readouterr().out
    # a later session, data/ gone: the next stage goes on from the committed folder
    stage = tmp_path / "committed" / "t-small"
    shutil.copytree(out / "t-small", stage)
    with pytest.raises(SystemExit, match="has trained 6 steps already"):
        campaign.campaign_recipe("t-small", 6, start=stage)
    with pytest.raises(SystemExit, match="not a model folder of t-large"):
        campaign.campaign_recipe("t-large", 8, start=stage)
    with pytest.raises(SystemExit, match="OUT writes that folder"):
        campaign.main(["t-small", "--steps", "8", "--start", str(out / "t-small"), *common])
    later = tmp_path / "later"
    assert campaign.main(["t-small", "--steps", "8", "--start", str(stage),
                          "--cache", str(cache), "--out", str(later)]) == 0  # fmt: skip
    assert "t-small v3: step 6 of 8; the start, " in capsys.readouterr().out
    notes = json.loads((later / "t-small" / "config.json").read_text())["notes"]
    assert notes["recipe"]["version"] == 3 and notes["trained_steps"] == 8
    assert [c["version"] for c in notes["continues"]] == [1, 2]

    shutil.copytree(shipped / "t-large", out / "t-large")
    with pytest.raises(SystemExit, match="is the shipped version"):
        campaign.main(["t-boosted", *common])
    shutil.rmtree(out / "t-large")
    assert campaign.main(["t-large", "--steps", "4", *common]) == 0
    shutil.rmtree(shipped / "t-boosted")  # a boosted model that is not shipped, as d1 is
    assert campaign.main(["t-boosted", *common]) == 0
    assert "the shipped model: not shipped" in capsys.readouterr().out
    notes = json.loads((out / "t-boosted" / "config.json").read_text())["notes"]
    assert notes["recipe"]["version"] == 2 and notes["trained_steps"] == 4
    (bank_file,) = (out / "work" / "hint-banks").glob("separate-train-*.pt")
    bank = torch.load(bank_file, weights_only=True)
    assert bank["large"] == checksum(load_model_files(out / "t-large").tensors)


def test_bfloat16_autocast_trains_and_is_named_in_the_model_folder(cache, tmp_path, tiny_recipes):
    v1 = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    trainer.Run(v1, cache, tmp_path, tmp_path / "m").run(progress=False)
    v2 = dataclasses.replace(v1, version=2, steps=4, autocast="bfloat16")
    run = trainer.Run(v2, cache, tmp_path, tmp_path / "m")  # a later version may switch it on
    assert run.step == 2
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    loss = run.train_step()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert any(not torch.equal(v, run.model.state_dict()[k]) for k, v in before.items())
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # weights stay float32
    run.run(progress=False)
    notes = json.loads((tmp_path / "m" / "t-small" / "config.json").read_text())["notes"]
    assert notes["recipe"]["autocast"] == "bfloat16"
    assert "bfloat16 autocast" in (tmp_path / "m" / "t-small" / "README.md").read_text()
    with pytest.raises(ValueError, match="unknown autocast 'float8'"):
        trainer.Run(dataclasses.replace(v1, autocast="float8"), cache, tmp_path / "x", tmp_path)


def test_a_later_version_may_change_the_batch_size(cache, tmp_path, tiny_recipes):
    v1 = dataclasses.replace(tiny_recipes["t-small"], steps=2)
    trainer.Run(v1, cache, tmp_path, tmp_path / "m").run(progress=False)
    v2 = dataclasses.replace(v1, version=2, steps=4, batch=3)  # e.g. a GPU's bigger batches
    run = trainer.Run(v2, cache, tmp_path, tmp_path / "m")
    assert run.step == 2 and run._train_batch()[0].shape[0] == 3
    run.run(progress=False)
    notes = json.loads((tmp_path / "m" / "t-small" / "config.json").read_text())["notes"]
    assert notes["continues"] == [{"version": 1, "steps": 2, "lr": v1.lr, "batch": v1.batch}]
    assert notes["device"] == "cpu"
    readme = (tmp_path / "m" / "t-small" / "README.md").read_text()
    assert "(the first 2, of 2 clips each, under version 1)." in readme
    config = tmp_path / "m" / "t-small" / "config.json"  # as if v2 had run on a GPU
    described = json.loads(config.read_text())
    described["notes"]["device"] = "NVIDIA H200"
    config.write_text(json.dumps(described))
    trainer.write_model_readme(config.parent)
    assert (
        "under version 1), the last 2 on NVIDIA H200." in (config.parent / "README.md").read_text()
    )


def test_worker_processes_mix_reproducible_batches(cache, tmp_path, tiny_recipes):
    recipe = tiny_recipes["t-small"]
    runs = [trainer.Run(recipe, cache, tmp_path / name, tmp_path / "m", workers=2) for name in "ab"]
    first = [run._train_batch() for run in runs]
    samples = int(recipe.seconds * mixing.SAMPLE_RATE)
    assert first[0][0].shape == (recipe.batch, 2, samples)
    assert first[0][1].shape == (recipe.batch, 2, 2, samples)
    assert torch.equal(first[0][0], first[1][0]) and torch.equal(first[0][1], first[1][1])
    assert not torch.equal(first[0][0], runs[0]._train_batch()[0])  # the other worker's
    # the mixture is the sources plus noise, as in-process mixing makes it
    noise = first[0][0] - first[0][1].sum(1)
    assert noise.pow(2).mean() < first[0][0].pow(2).mean()
    val = runs[0].run(progress=False)
    assert np.isfinite(val["si_sdr_i"]) and runs[0].step == recipe.steps


def test_festival_voices_are_training_talkers_only(tmp_path, monkeypatch):
    voices = tmp_path / "voices"
    for voice in ("english/ked_diphone", "czech/czech_ph", "english/slt_arctic_hts"):
        (voices / voice).mkdir(parents=True)
    monkeypatch.setattr(sources, "FESTIVAL", voices)
    for attr in ("KLETTRES", "FILLETS", "ASTERISK", "SONIC_PI", "MOH", "SOUNDFONT"):
        monkeypatch.setattr(sources, attr, tmp_path / "none")
    monkeypatch.setattr(sources.shutil, "which", lambda cmd: cmd if cmd == "text2wave" else None)
    split = {i.name: i.split for i in sources.catalog() if i.name.startswith("festival-")}
    # Installed voices of the list are training talkers; slt (a test talker) is never one.
    assert split == {"festival-ked_diphone": "train", "festival-czech_ph": "train"}


@pytest.mark.skipif(
    not (shutil.which("text2wave") and sources._festival_has("ked_diphone")),
    reason="festival and festvox-kdlpc16k are not installed",
)
def test_festival_speaks_levelled_unclipped_speech():
    pieces = sources._festival("ked_diphone", 0)
    assert len(pieces) == 20
    for x in pieces:
        assert x.dtype == np.float32 and x.size > sources.SAMPLE_RATE // 2  # half a second or more
        assert 0.01 < np.abs(x).max() < 0.99  # spoken, and not clipped
