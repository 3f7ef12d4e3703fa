"""Reverberant rooms: image-source impulse responses from pyroomacoustics.

Each room holds a 2-microphone array (0.18 m apart, as on a head; the GPU
run's training rooms draw the spacing from 0.14-0.22 m to widen what the
models hear) and three sources (two talkers and a noise) 1-3 m away; RT60 is
drawn from 0.2-0.6 s. The bank of
one split is `<cache>/rooms/<split>.npy`, float32 [rooms, 3, 2, RIR_LENGTH].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..signal_path import SAMPLE_RATE

MIC_SPACING = 0.18
TRAINING_SPACING = (0.14, 0.22)
RIR_LENGTH = 8000  # 0.5 s: at RT60 0.6 s the tail is 50 dB down by then
SOURCES_PER_ROOM = 3
ROOMS = {"train": 400, "val": 60, "test": 60}
SEEDS = {"train": 1, "val": 2, "test": 3}


def simulate_room(
    rng: np.random.Generator, spacing: tuple[float, float] = (MIC_SPACING, MIC_SPACING)
) -> np.ndarray:
    """One room -> impulse responses [3 sources, 2 mics, RIR_LENGTH]; the
    microphones' spacing is drawn from `spacing` (metres)."""
    import pyroomacoustics as pra

    while True:
        dims = np.array([rng.uniform(4, 9), rng.uniform(4, 9), rng.uniform(2.5, 3.5)])
        rt60 = rng.uniform(0.2, 0.6)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:
            continue  # this room cannot reach that RT60
        room = pra.ShoeBox(
            dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 20)
        )
        center = np.array([rng.uniform(1.2, dims[0] - 1.2), rng.uniform(1.2, dims[1] - 1.2), 1.5])
        angle = rng.uniform(0, np.pi)
        apart = spacing[0] if spacing[0] == spacing[1] else rng.uniform(*spacing)
        offset = 0.5 * apart * np.array([np.cos(angle), np.sin(angle), 0])
        room.add_microphone_array(np.stack([center - offset, center + offset], axis=1))
        placed = 0
        for _ in range(200):
            dist, az = rng.uniform(1, 3), rng.uniform(0, 2 * np.pi)
            pos = center + np.array([dist * np.cos(az), dist * np.sin(az), rng.uniform(-0.3, 0.3)])
            if np.all(pos > 0.3) and np.all(pos < dims - 0.3):
                room.add_source(pos)
                placed += 1
                if placed == SOURCES_PER_ROOM:
                    break
        if placed < SOURCES_PER_ROOM:
            continue
        room.compute_rir()
        out = np.zeros((SOURCES_PER_ROOM, 2, RIR_LENGTH), np.float32)
        for m in range(2):
            for s in range(SOURCES_PER_ROOM):
                rir = np.asarray(room.rir[m][s], np.float32)[:RIR_LENGTH]
                out[s, m, : rir.size] = rir
        fade = np.linspace(1, 0, RIR_LENGTH // 10, dtype=np.float32)
        out[..., -fade.size :] *= fade
        return out


def build_rooms(cache: Path, progress=print) -> None:
    for split, count in ROOMS.items():
        path = cache / "rooms" / f"{split}.npy"
        if path.is_file():
            continue
        rng = np.random.default_rng(SEEDS[split])
        bank = np.zeros((count, SOURCES_PER_ROOM, 2, RIR_LENGTH), np.float32)
        for i in range(count):
            bank[i] = simulate_room(rng)
            if (i + 1) % 20 == 0 or i + 1 == count:
                progress(f"rooms {split}: {i + 1}/{count}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, bank)
        tmp.replace(path)
