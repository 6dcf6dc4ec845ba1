"""How much of the JPEG decoding a GPU node's CPU cores take, set from the rates measured
as the job runs (`--cpu-decode-share auto`).

Per image, the GPU spends `forward` seconds on the forward, and `device` more seconds on
the data path of each JPEG it decodes itself; one core spends `cpu` seconds decoding one.
With a share `s` decoded by `cores` cores, the GPU keeps up with 1 / (forward + (1 - s) *
device) images/s and the cores with cores / (s * cpu); the share where the two meet is

    s = cores * (forward + device) / (cpu + cores * device)

(clamped to [0, 1]). The GPU side is counted as if decode and forward ran one after the
other: where the feed overlaps them the GPU has slack left, which costs less than cores
that cannot keep up. Decode tasks ask for the share at each block; the model actors and
the decode tasks report their seconds to the progress counter, which holds this.
"""

from __future__ import annotations

from ...core.reporting import BatchTimes

INITIAL_SHARE = 0.25  # until both sides have reported (the first few batches)
DECAY = 0.95  # per report: the rates follow the images as the job moves through them


class DecodeShare:
    def __init__(self, cores: int = 1, fixed: float | None = None):
        self.cores = max(1, cores)
        self.fixed = fixed  # --cpu-decode-share FRACTION: no adapting
        self.forward = _Rate()  # GPU seconds per image of the forward
        self.device = _Rate()  # GPU seconds per device-decoded JPEG of the data path
        self.cpu = _Rate()  # one core's seconds per JPEG decoded by a decode task

    def add_device_times(self, times: BatchTimes) -> None:
        self.forward.add(times.images, times.forward_s)
        if times.device_decoded:
            self.device.add(times.device_decoded, times.data_path_s)

    def add_cpu_decode(self, images: int, seconds: float) -> None:
        self.cpu.add(images, seconds)

    def share(self) -> float:
        if self.fixed is not None:
            return self.fixed
        forward, device, cpu = self.forward.per_image, self.device.per_image, self.cpu.per_image
        if forward is None or cpu is None:
            return INITIAL_SHARE
        device = device or 0.0  # no JPEG decoded on the device yet: decoding there costs nothing known
        share = self.cores * (forward + device) / (cpu + self.cores * device)
        return min(1.0, max(0.0, share))

    def describe(self) -> dict:
        return {
            "share": round(self.share(), 3),
            "cores": self.cores,
            "fixed": self.fixed is not None,
            "forward_ms": _ms(self.forward.per_image),
            "device_decode_ms": _ms(self.device.per_image),
            "cpu_decode_ms": _ms(self.cpu.per_image),
        }


class _Rate:
    """Seconds per image, the older reports weighing less."""

    def __init__(self):
        self.images = 0.0
        self.seconds = 0.0

    def add(self, images: int, seconds: float) -> None:
        if images > 0 and seconds >= 0:
            self.images = self.images * DECAY + images
            self.seconds = self.seconds * DECAY + seconds

    @property
    def per_image(self) -> float | None:
        return self.seconds / self.images if self.images else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
