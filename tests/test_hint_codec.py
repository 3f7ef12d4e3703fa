"""The hint codec (pca hints): fitting, its file, and its wire encoding."""

import numpy as np
import pytest

from kboost_rt import protocol as p
from kboost_rt.hint_codec import CODEC_FILE, HintCodec, fit_codec, load_codec
from kboost_rt.model_files import ModelFileError


def low_rank_hints(n: int, rank: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, 8 * 97))
    x = 3.0 + rng.standard_normal((n, rank)) @ basis + noise * rng.standard_normal((n, 8 * 97))
    return x.reshape(n, 8, 97).astype(np.float32)


def test_the_codec_keeps_the_hints_subspace():
    hints = low_rank_hints(400, 12)
    codec = fit_codec(hints, 12)
    assert (codec.components, codec.hint_channels) == (12, 8)
    assert codec.kept_variance(low_rank_hints(50, 12, seed=0)[:10]) == pytest.approx(1.0, abs=1e-5)
    back = codec.reconstruct(codec.coordinates(hints[7]))
    assert np.abs(back - hints[7]).max() < 1e-3 * np.abs(hints[7]).max()
    # Fewer components than the hints' rank keep less, in order of variance.
    kept = [fit_codec(hints, k).kept_variance(hints) for k in (2, 6, 12)]
    assert kept[0] < kept[1] < kept[2]


def test_pca_on_the_wire_is_int8_coordinates():
    hints = low_rank_hints(300, 20, noise=0.1)
    codec = fit_codec(hints, 16)
    payload = p.pack_hint(hints[3], p.HintEncoding.PCA, codec)
    assert len(payload) == p.hint_size(8, p.HintEncoding.PCA, codec) == 4 + 16
    back = p.unpack_hint(payload, 8, p.HintEncoding.PCA, codec)
    exact = codec.reconstruct(codec.coordinates(hints[3]))
    # Quantising 16 coordinates to int8 moves the hint by at most half a step each.
    step = np.abs(codec.coordinates(hints[3])).max() / 127
    assert np.abs(back - exact).max() <= 0.5 * step * np.abs(codec.basis).sum(0).max() + 1e-5
    two = p.pack_hints([hints[0], hints[1]], p.HintEncoding.PCA, codec)
    assert len(p.unpack_hints(two, 8, p.HintEncoding.PCA, codec)) == 2
    with pytest.raises(p.PacketError, match="hint codec"):
        p.unpack_hint(payload, 8, p.HintEncoding.PCA)  # no codec
    with pytest.raises(p.PacketError, match="hint channels"):
        p.unpack_hint(payload, 4, p.HintEncoding.PCA, codec)
    with pytest.raises(p.PacketError, match="bad HINT size"):
        p.unpack_hint(payload[:-1], 8, p.HintEncoding.PCA, codec)
    with pytest.raises(p.PacketError, match="scale"):
        p.unpack_hint(b"\x00\x00\xc0\x7f" + payload[4:], 8, p.HintEncoding.PCA, codec)  # NaN


def test_codec_file_round_trip_and_bad_files(tmp_path):
    codec = fit_codec(low_rank_hints(200, 10), 10)
    assert load_codec(tmp_path, 8) is None  # a model without one
    codec.save(tmp_path)
    loaded = load_codec(tmp_path, 8)
    assert np.array_equal(loaded.basis, codec.basis) and np.array_equal(loaded.mean, codec.mean)
    with pytest.raises(ModelFileError, match="hint channels"):
        load_codec(tmp_path, 4)
    file = tmp_path / CODEC_FILE
    blob = bytearray(file.read_bytes())
    blob[-5] ^= 0xFF
    file.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum"):
        load_codec(tmp_path, 8)
    file.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_codec(tmp_path, 8)
    skewed = HintCodec(codec.mean, codec.basis * 2)
    skewed.save(tmp_path)
    with pytest.raises(ModelFileError, match="orthonormal"):
        load_codec(tmp_path, 8)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_codec(low_rank_hints(20, 3), 300)


def test_pca_hints_of_the_paper_size_fit_25_kB_per_second():
    codec = fit_codec(low_rank_hints(200, 96, noise=0.1), 96)
    _, keyed = p.bytes_per_second(8, 2, p.HintEncoding.PCA, p.SampleFormat.INT16, True, codec)
    _, plain = p.bytes_per_second(8, 2, p.HintEncoding.PCA, p.SampleFormat.INT16, False, codec)
    # header 24, MAC 32, UDP/IPv4 28, count 1, scale 4, 96 coordinates; 125 a second
    assert keyed == 125 * (24 + 32 + 28 + 1 + 4 + 96) == 23125 <= 25000
    assert plain == 125 * (24 + 28 + 1 + 4 + 96)


def test_a_device_without_the_codec_asks_for_int8(tmp_path):
    from kboost_rt.hint_codec import default_encoding

    assert default_encoding(tmp_path) == p.HintEncoding.INT8
    fit_codec(low_rank_hints(50, 4), 4).save(tmp_path)
    assert default_encoding(tmp_path) == p.HintEncoding.PCA


def test_every_shipped_boosted_model_has_a_codec_that_fits_its_hints():
    from kboost_rt.model_files import find_model_folders, load_model_files, shipped_models_dir

    boosted = [f for f in find_model_folders(shipped_models_dir()) if "boosted" in f.name]
    assert len(boosted) == 2  # per task: the any-delay model
    for folder in boosted:
        cfg = load_model_files(folder).config
        codec = load_codec(folder, cfg.boost.hint_channels)
        assert codec is not None and codec.components == 96, folder


def test_garbage_pca_payloads_raise_packet_error_only():
    codec = fit_codec(low_rank_hints(100, 8), 8)
    rng = np.random.default_rng(5)
    for n in range(2000):
        payload = rng.bytes(int(rng.integers(0, 30)))
        if n % 3 == 0:  # the right size, random contents (NaN and huge scales among them)
            payload = rng.bytes(12)
        try:
            hint = p.unpack_hint(payload, 8, p.HintEncoding.PCA, codec)
        except p.PacketError:
            continue
        assert hint.shape == (8, 97) and np.isfinite(hint).all()
