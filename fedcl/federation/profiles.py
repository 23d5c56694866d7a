"""Edge-device profiles and the simulated wall-clock time of a round.

Compute speed is relative to the machine running the simulation (1.0 = as fast);
bandwidths are in Mbit/s. A round lasts as long as its slowest participant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    compute_speed: float
    uplink_mbps: float
    downlink_mbps: float
    p_unavailable: float


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in [
        DeviceProfile("jetson_nano", 0.5, 10.0, 50.0, 0.05),
        DeviceProfile("jetson_orin", 2.0, 50.0, 200.0, 0.02),
        DeviceProfile("raspberry_pi_4", 0.2, 5.0, 20.0, 0.10),
        DeviceProfile("phone", 0.4, 2.0, 20.0, 0.20),
        DeviceProfile("laptop", 1.0, 20.0, 100.0, 0.05),
        DeviceProfile("server", 4.0, 1000.0, 1000.0, 0.0),
        DeviceProfile("ideal", 1.0, 1e9, 1e9, 0.0),
    ]
}


def client_profile(names: list[str], partition_id: int, seed: int) -> DeviceProfile:
    """Deterministic profile of a client from the configured mix (not from scheduling order)."""
    return PROFILES[names[random.Random(f"{seed}-profile-{partition_id}").randrange(len(names))]]


def is_unavailable(profile: DeviceProfile, partition_id: int, server_round: int, seed: int) -> bool:
    return random.Random(f"{seed}-avail-{partition_id}-{server_round}").random() < profile.p_unavailable


def simulated_client_time(profile: DeviceProfile, train_time_s: float, bytes_down: int, bytes_up: int) -> float:
    """Download + compute (scaled by the device's speed) + upload, in seconds."""
    return (
        bytes_down * 8 / (profile.downlink_mbps * 1e6)
        + train_time_s / profile.compute_speed
        + bytes_up * 8 / (profile.uplink_mbps * 1e6)
    )
