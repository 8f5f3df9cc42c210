"""The recording chain: fades, rooms (reverb), the shifted split's microphone EQ, and background
noises (pink to brown for the train and test clips; white, mains hum or babble for the shifted ones)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.fft import next_fast_len
from scipy.signal import butter, oaconvolve, sosfilt


def _fade(n: int) -> np.ndarray:
    """A raised-cosine fade from 1 to 0 over ``n`` samples."""
    return 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))


def _reverb(rng: np.random.Generator, x: np.ndarray, sample_rate: int, rt60: float) -> np.ndarray:
    """``x`` convolved with a unit-energy exponentially decaying noise impulse response (the wet signal)."""
    t = np.arange(max(1, int(rt60 * sample_rate))) / sample_rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2))
    return oaconvolve(x, ir)[: len(x)]


def add_room(rng: np.random.Generator, x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix in a small room: ``x`` convolved with decaying noise (RT60 0.1-0.9 s) at a random wet level."""
    wet = _reverb(rng, x, sample_rate, float(rng.uniform(0.1, 0.9)))
    return x + float(rng.uniform(0.0, 0.6)) * wet


# Shifted-split rooms: (RT60 range in s, wet level range); the train rooms have RT60 0.1-0.9 s, wet 0-0.6.
SHIFTED_ROOMS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "hall": ((1.0, 2.5), (0.7, 1.5)),  # large reverberant room, far microphone
    "close_mic": ((0.03, 0.08), (0.0, 0.08)),  # bone dry
}


def _peaking_sos(f0: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One peaking-EQ biquad (Audio EQ Cookbook) as a second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def microphone_eq(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, dict]:
    """A random cheap-microphone response as second-order sections, and its settings: a high-pass
    (100-400 Hz) and a phone/laptop-like low-pass (3-8 kHz), both 2nd-order Butterworth, and one or
    two peaking filters of +-6-12 dB between 250 Hz and the low-pass corner."""
    highpass = float(rng.uniform(100.0, 400.0))
    lowpass = float(rng.uniform(3000.0, 8000.0))
    sections = [butter(2, highpass, "highpass", fs=sample_rate, output="sos"),
                butter(2, lowpass, "lowpass", fs=sample_rate, output="sos")]
    peaks = []
    for _ in range(int(rng.integers(1, 3))):
        f0 = float(np.exp(rng.uniform(np.log(250.0), np.log(0.8 * lowpass))))
        gain = float(rng.uniform(6.0, 12.0)) * (1 if rng.random() < 0.5 else -1)
        q = float(rng.uniform(0.7, 4.0))
        sections.append(_peaking_sos(f0, gain, q, sample_rate))
        peaks.append(f"{f0:.0f}Hz{gain:+.1f}dB/Q{q:.1f}")
    return np.concatenate(sections), {"mic_highpass_hz": round(highpass), "mic_lowpass_hz": round(lowpass),
                                      "mic_peaks": " ".join(peaks)}


def colored_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f^beta power spectrum, beta in [1, 2] (pink to brown), above 20 Hz."""
    size = next_fast_len(n, real=True)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    shape = np.zeros_like(freqs)
    audible = freqs >= 20.0
    shape[audible] = freqs[audible] ** (-float(rng.uniform(1.0, 2.0)) / 2)
    noise = np.fft.irfft(spectrum * shape, size)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def white_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS white noise (preamp hiss)."""
    return _unit_rms(rng.standard_normal(n))


def mains_hum(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS mains hum: 50 or 60 Hz and its first 8 harmonics at random levels and phases (one
    period tabulated, then read along the clip), with a little hiss under it."""
    f0 = float(rng.choice([50.0, 60.0])) * float(rng.uniform(0.998, 1.002))
    tilt = float(rng.uniform(0.5, 1.5))
    period = np.linspace(0.0, 1.0, 4097)
    table = sum(float(rng.uniform(0.2, 1.0)) * k**-tilt * np.sin(2 * np.pi * k * period + rng.uniform(0, 2 * np.pi))
                for k in range(1, 9))
    hum = np.interp((f0 / sample_rate * np.arange(n)) % 1.0, period, table)
    return _unit_rms(_unit_rms(hum) + 0.05 * rng.standard_normal(n))


def babble_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS babble-like noise: 3-8 'talkers' switched on and off by slow random syllable envelopes
    (3-7 Hz) over speech-band noise (high-passed at 150 Hz, low-passed at 0.8-3 kHz). Independent
    Gaussian talkers add up to one Gaussian noise under their combined RMS envelope, which is what is
    drawn (one noise and one filter per clip)."""
    env_rate = 200  # envelope samples per second
    m = int(np.ceil(n / sample_rate * env_rate)) + 2
    power = np.zeros(m)
    for _ in range(int(rng.integers(3, 9))):
        smooth = butter(2, float(rng.uniform(3.0, 7.0)), fs=env_rate, output="sos")
        envelope = np.maximum(sosfilt(smooth, rng.standard_normal(m)), 0.0)
        power += (float(rng.uniform(0.3, 1.0)) * envelope) ** 2
    envelope = np.interp(np.arange(n) * (env_rate / sample_rate), np.arange(m), np.sqrt(power))
    band = np.concatenate([butter(2, 150.0, "highpass", fs=sample_rate, output="sos"),
                           butter(2, float(rng.uniform(800.0, 3000.0)), "lowpass", fs=sample_rate, output="sos")])
    return _unit_rms(sosfilt(band, envelope * rng.standard_normal(n)))


SHIFTED_NOISES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "white": white_noise, "hum": mains_hum, "babble": babble_noise,
}
SHIFTED_SNR_DB = (5.0, 25.0)  # the train and test clips: DemoSettings.snr_db (15-40 dB), pink to brown
