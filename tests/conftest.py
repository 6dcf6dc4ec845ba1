"""Shared fixtures: one local Ray for the whole session, generated images, saved checkpoints."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import scramble_batch_norms
from .tiers import ray_sessions, refuse_new_sessions


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Photo-like content (smooth gradients plus noise) so JPEG and resizing behave realistically."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 6.28)
        channels.append(127 + 100 * np.sin(fx * x + fy * y + phase))
    img = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpegs(folder: Path, count: int, seed: int, height: int = 240, width: int = 320) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:03d}.jpg" for i in range(count)]
    for path in paths:
        Image.fromarray(smooth_image(rng, height, width)).save(path)
    return paths


def exif_rotated_jpeg(pixels: np.ndarray, orientation: int = 6) -> bytes:
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def write_reference_set(folder: Path, seed: int = 0) -> list[Path]:
    """Images in the modes and shapes the issues name: JPEG (baseline, progressive, CMYK)/PNG,
    gray, RGBA, palette, EXIF."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []

    def save(name: str, img: Image.Image, **kw) -> None:
        path = folder / name
        img.save(path, **kw)
        files.append(path)

    save("landscape.jpg", Image.fromarray(smooth_image(rng, 375, 500)), quality=92)
    save("portrait.png", Image.fromarray(smooth_image(rng, 480, 300)))
    save("tall_narrow.jpg", Image.fromarray(smooth_image(rng, 900, 120)), quality=85)
    save("small.png", Image.fromarray(smooth_image(rng, 40, 60)))
    save("square.jpeg", Image.fromarray(smooth_image(rng, 224, 224)))
    save("gray.jpg", Image.fromarray(smooth_image(rng, 256, 320)[..., 0], mode="L"))
    save("gray.png", Image.fromarray(smooth_image(rng, 200, 260)[..., 1], mode="L"))
    rgba = np.concatenate([smooth_image(rng, 240, 320), rng.integers(0, 256, (240, 320, 1), dtype=np.uint8)], -1)
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    save("palette.png", Image.fromarray(smooth_image(rng, 210, 330)).quantize(64))
    save("progressive.jpg", Image.fromarray(smooth_image(rng, 333, 500)), quality=88, progressive=True)
    save("cmyk.jpg", Image.fromarray(smooth_image(rng, 260, 300)).convert("CMYK"), quality=90)
    rotated = folder / "exif_rotated.jpg"
    rotated.write_bytes(exif_rotated_jpeg(smooth_image(rng, 300, 400)))
    files.append(rotated)
    return files


def reference_image(path: Path) -> Image.Image:
    """What users' own loaders do: EXIF orientation, then Pillow's RGB conversion."""
    from PIL import ImageOps

    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def save_random_checkpoint(model_name: str, path: Path, seed: int = 0) -> Path:
    import torchvision.models as tvm

    torch.manual_seed(seed)
    model = tvm.get_model(model_name, weights=None)
    scramble_batch_norms(model)
    torch.save(model.state_dict(), path)
    return path


S3_SECRET = "s3cr3t-never-logged"


class MotoServer:
    """A real S3-protocol server (moto, in this process) on 127.0.0.1; an outage is `down`
    then `up` on the same port (moto keeps its buckets in this process meanwhile)."""

    def __init__(self):
        from .helpers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def up(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def moto_server():
    """Configured through the standard AWS variables. Started before Ray so that Ray's
    worker processes inherit the same environment (as are the GCS and Azure servers)."""
    server = MotoServer().up()
    os.environ.update(
        AWS_ENDPOINT_URL=server.url,
        AWS_ACCESS_KEY_ID="testing-key-id",
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield server
    server.down()


@pytest.fixture(scope="session")
def s3_endpoint(moto_server):
    return moto_server.url


def _store_server(start):
    """A bucket store's server (tests/stores.py) configured through the environment, or None
    where it is not installed."""
    server = start()
    if server is not None:
        os.environ.update(server.env)
    yield server
    if server is not None:
        server.stop()
        for name in server.env:
            os.environ.pop(name, None)


@pytest.fixture(scope="session")
def gcs_server():
    from .stores import start_gcs

    yield from _store_server(start_gcs)


@pytest.fixture(scope="session")
def azure_server():
    from .stores import start_azure

    yield from _store_server(start_azure)


@pytest.fixture(scope="session")
def ray_local(s3_endpoint, gcs_server, azure_server):
    import ray

    if not ray.is_initialized():
        # "local": a Ray of the suite's own, whatever `ray start` left running on the machine.
        # Its workers' output stays in its log files: forwarded, it would land, at any moment,
        # in what a command run through main() here is seen to print (helpers.in_process).
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def reference_images(tmp_path_factory) -> list[Path]:
    return write_reference_set(tmp_path_factory.mktemp("reference_images"))


@pytest.fixture(scope="session")
def resnet18_ckpt(tmp_path_factory) -> Path:
    return save_random_checkpoint("resnet18", tmp_path_factory.mktemp("ckpt") / "resnet18.pth")


@pytest.fixture(scope="session")
def resnet50_ckpt(tmp_path_factory) -> Path:
    return save_random_checkpoint("resnet50", tmp_path_factory.mktemp("ckpt") / "resnet50.pth", seed=1)


# The end-to-end tier: each module that runs `resnet-batch` in processes of its own, starts
# clusters or Ray, says so (pytestmark = pytest.mark.e2e); a test on the shared local Ray
# (the ray_local fixture) is in it by that fixture. The rest runs in this process without
# Ray: the fast tier a developer runs after every change, pytest -m "not e2e". A test
# outside the tier that starts a Ray (here or in a process of its own) fails, naming why.
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _only_the_e2e_tier_starts_ray(request):
    if request.node.get_closest_marker("e2e"):
        yield
        return
    before = ray_sessions()
    yield
    refuse_new_sessions(before)
