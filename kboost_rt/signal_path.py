"""Constants of the signal path every kboost-rt model shares.

A streaming step takes CHUNK new samples; its analysis window also covers the
LOOKAHEAD samples before them, so a stream's output lags its input by
LOOKAHEAD samples (4 ms) on top of the 8 ms chunk.
"""

SAMPLE_RATE = 16000
CHUNK = 128  # new samples per step (8 ms)
LOOKAHEAD = 64  # samples of look-ahead in each window (4 ms)
WINDOW = CHUNK + LOOKAHEAD  # 192-sample Hamming window, hop CHUNK
N_BINS = WINDOW // 2 + 1  # 97 frequency bins per frame


def frames_for(samples: int) -> int:
    """Frames (= chunks) that cover `samples` input samples."""
    return -(-samples // CHUNK)
