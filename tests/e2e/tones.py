"""Which tones a recording carries: Goertzel filters in plain Python (no numpy in the project).

A mix of two anchors is two sines at once, so zero crossings (``tests.servers_nginx.tone_stats``)
cannot tell them apart: these helpers measure the level at given frequencies and find the
dominant ones. The signal is first reduced to 8 kHz by averaging (a crude low-pass, enough for
test tones of a few hundred Hz), which keeps a scan of the spectrum well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["ANALYSIS_RATE", "decimate", "dominant_frequencies", "level_dbfs", "tone_levels"]

ANALYSIS_RATE = 8000


def decimate(samples: Sequence[int], rate: int) -> list[float]:
    """Mono 16-bit samples at ``rate`` -> floats in [-1, 1] at ANALYSIS_RATE (rate a multiple)."""
    step = max(1, rate // ANALYSIS_RATE)
    scale = 1 / (32768 * step)
    return [sum(samples[i : i + step]) * scale for i in range(0, len(samples) - step + 1, step)]


def _goertzel_amplitude(x: Sequence[float], frequency: float) -> float:
    """Amplitude (0..1 for a full-scale sine) of ``frequency`` in ``x`` sampled at ANALYSIS_RATE."""
    n = len(x)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * frequency / ANALYSIS_RATE)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n


def _db(amplitude: float) -> float:
    return 20 * math.log10(amplitude) if amplitude > 0 else -math.inf


def level_dbfs(samples: Sequence[int]) -> float:
    """RMS level of 16-bit samples in dBFS."""
    if not samples:
        return -math.inf
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    return _db(rms)


def tone_levels(samples: Sequence[int], rate: int, frequencies: Iterable[float]) -> dict[float, float]:
    """The amplitude in dBFS of each frequency (a full-scale sine is 0 dB)."""
    x = decimate(samples, rate)
    return {f: _db(_goertzel_amplitude(x, f)) for f in frequencies}


def dominant_frequencies(
    samples: Sequence[int],
    rate: int,
    *,
    lo: float = 100,
    hi: float = 2000,
    step: float = 10,
    max_peaks: int = 4,
    within_db: float = 20,
) -> list[tuple[float, float]]:
    """Spectral peaks [(frequency, dBFS)], loudest first: local maxima of a Goertzel scan from
    ``lo`` to ``hi`` in ``step`` Hz that are at most ``within_db`` below the loudest one.

    A second of audio at most is scanned (the middle of it), which resolves ``step`` = 10 Hz.
    """
    x = decimate(samples, rate)
    if len(x) > ANALYSIS_RATE:
        start = (len(x) - ANALYSIS_RATE) // 2
        x = x[start : start + ANALYSIS_RATE]
    freqs = [lo + i * step for i in range(int((hi - lo) / step) + 1)]
    amps = [_goertzel_amplitude(x, f) for f in freqs]
    if not amps or max(amps) <= 0:
        return []
    top = max(amps)
    peaks = [
        (freqs[i], _db(amps[i]))
        for i in range(len(amps))
        if amps[i] >= top * 10 ** (-within_db / 20)
        and (i == 0 or amps[i] >= amps[i - 1])
        and (i == len(amps) - 1 or amps[i] > amps[i + 1])
    ]
    peaks.sort(key=lambda p: p[1], reverse=True)
    return peaks[:max_peaks]
