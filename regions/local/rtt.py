"""Typical round-trip times between AWS regions, for latency routing on one machine.

Source: each region's metro area as AWS names it (``regions.catalog``: "Europe (Ireland)" is
Dublin, "US East (N. Virginia)" is Ashburn, ...), placed at that city's coordinates below; the RTT
between two regions is modelled as the great-circle distance between them, lengthened by 30 % for
the detours real fibre routes take, at the speed of light in fibre (about 200 km per millisecond),
there and back, plus 2 ms of switching. The model lands within about 15 % of the medians published
by public inter-region ping matrices (cloudping.co's p50 grid: us-east-1↔eu-west-1 ≈ 70 ms here
73 ms; us-east-1↔ap-southeast-2 ≈ 200 ms here 206 ms), which is all latency routing needs: the
order of regions by distance. ``python3 -m regions.local.rtt`` prints the table.
"""

from __future__ import annotations

import math
from functools import lru_cache

# (latitude, longitude) of each region's metro area.
LOCATIONS: dict[str, tuple[float, float]] = {
    "af-south-1": (-33.92, 18.42),  # Cape Town
    "ap-east-1": (22.32, 114.17),  # Hong Kong
    "ap-east-2": (25.03, 121.57),  # Taipei
    "ap-northeast-1": (35.68, 139.69),  # Tokyo
    "ap-northeast-2": (37.57, 126.98),  # Seoul
    "ap-northeast-3": (34.69, 135.50),  # Osaka
    "ap-south-1": (19.08, 72.88),  # Mumbai
    "ap-south-2": (17.39, 78.49),  # Hyderabad
    "ap-southeast-1": (1.35, 103.82),  # Singapore
    "ap-southeast-2": (-33.87, 151.21),  # Sydney
    "ap-southeast-3": (-6.21, 106.85),  # Jakarta
    "ap-southeast-4": (-37.81, 144.96),  # Melbourne
    "ap-southeast-5": (3.14, 101.69),  # Kuala Lumpur
    "ap-southeast-6": (-36.85, 174.76),  # Auckland
    "ap-southeast-7": (13.76, 100.50),  # Bangkok
    "ca-central-1": (45.50, -73.57),  # Montreal
    "ca-west-1": (51.05, -114.07),  # Calgary
    "eu-central-1": (50.11, 8.68),  # Frankfurt
    "eu-central-2": (47.37, 8.54),  # Zurich
    "eu-north-1": (59.33, 18.07),  # Stockholm
    "eu-south-1": (45.46, 9.19),  # Milan
    "eu-south-2": (41.65, -0.88),  # Aragon (Zaragoza)
    "eu-west-1": (53.35, -6.26),  # Dublin
    "eu-west-2": (51.51, -0.13),  # London
    "eu-west-3": (48.86, 2.35),  # Paris
    "il-central-1": (32.09, 34.78),  # Tel Aviv
    "me-central-1": (25.20, 55.27),  # Dubai
    "me-south-1": (26.07, 50.56),  # Bahrain
    "mx-central-1": (20.59, -100.39),  # Querétaro
    "sa-east-1": (-23.55, -46.63),  # São Paulo
    "us-east-1": (39.04, -77.49),  # Ashburn, N. Virginia
    "us-east-2": (39.96, -83.00),  # Columbus, Ohio
    "us-west-1": (37.34, -121.89),  # San Jose, N. California
    "us-west-2": (45.84, -119.70),  # Boardman, Oregon
}

EARTH_RADIUS_KM = 6371.0
ROUTE_FACTOR = 1.3  # fibre routes are longer than the great circle
FIBRE_KM_PER_MS = 200.0  # light in glass, about 2/3 c
SWITCHING_MS = 2.0


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, float]]:
    """``{from: {to: rtt ms}}`` for every pair of regions (0 to itself), rounded to 1 ms."""
    out: dict[str, dict[str, float]] = {}
    for a, here in LOCATIONS.items():
        out[a] = {}
        for b, there in LOCATIONS.items():
            km = _distance_km(here, there) * ROUTE_FACTOR
            out[a][b] = 0.0 if a == b else round(2 * km / FIBRE_KM_PER_MS + SWITCHING_MS)
    return out


def rtt_ms(source: str, target: str) -> float:
    """Typical RTT between two regions; an unknown region is farther than any known one."""
    return table().get(source, {}).get(target, math.inf)


def nearest(source: str, candidates: list[str]) -> list[str]:
    """``candidates`` ordered from the nearest to ``source`` to the farthest (ties by name)."""
    return sorted(candidates, key=lambda code: (rtt_ms(source, code), code))


if __name__ == "__main__":
    codes = sorted(LOCATIONS)
    print("rtt ms".ljust(15) + "".join(c[:9].rjust(10) for c in codes))
    for a in codes:
        print(a.ljust(15) + "".join(f"{table()[a][b]:10.0f}" for b in codes))
