"""What GPU decoding costs per image next to the forward it feeds, stage by stage.

    python bench/device_decode.py --device cuda --model resnet50 --data DIR   # on a GPU node
    python bench/device_decode.py                                             # CPU: a smoke run

Times, per batch of --batch-size JPEGs already in memory (median of --repeats after a
warm-up): the batched decode (nvJPEG on a GPU), the batched resize + center crop
(device/resize.resize_crop), the whole DeviceDecoder call (--gpu-decoder's backend), and the model's
forward on the crops (Network.run_model, --precision). Against PIL decode + resize on
one core for scale. The GPU data path keeps up when decode + resize is a small fraction of
the forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DEFAULT_DATA, ensure_images  # noqa: E402
from resnet_batch.data.decode import Source, load_one  # noqa: E402
from resnet_batch.data.limits import Limits  # noqa: E402
from resnet_batch.device.decoders import DeviceDecoder, jpeg_backend  # noqa: E402
from resnet_batch.device.resize import resize_crop  # noqa: E402
from resnet_batch.model.network import Network, resolve_device  # noqa: E402
from resnet_batch.model.settings import InferenceSettings  # noqa: E402
from resnet_batch.model.weights import resolve_weights  # noqa: E402


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up, the device synchronised."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--gpu-decoder", default="auto", help="auto|nvjpeg|nvimgcodec")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    paths = sorted(args.data.glob("*.jpg"))[: args.batch_size]
    if len(paths) < args.batch_size:
        paths = ensure_images(args.data, args.batch_size)
    jpegs = [path.read_bytes() for path in paths]
    device = torch.device(resolve_device(args.device))
    resolved = resolve_weights(args.model, "none")
    decoder = DeviceDecoder(resolved.preprocessing, device, jpeg_backend(args.gpu_decoder, device))
    network = Network(InferenceSettings(weights=resolved, precision=args.precision, device=device.type))
    images, errors = decoder.decode(jpegs)
    assert not errors, errors
    decoded = list(images.values())
    crops = decoder(jpegs).crops
    n = len(jpegs)
    forward_name = f"forward ({network.precision})"
    stages = {
        f"decode (batched, {decoder.name})": timed(lambda: decoder.decode(jpegs), device, args.repeats),
        "resize + crop (batched)": timed(
            lambda: resize_crop(decoded, resolved.preprocessing, decoder.dtype), device, args.repeats
        ),
        "DeviceDecoder, whole": timed(lambda: decoder(jpegs), device, args.repeats),
        forward_name: timed(lambda: network.run_model(crops), device, args.repeats),
    }
    pil = (
        timed(
            lambda: [load_one(Source(str(path)), resolved.preprocessing, Limits()) for path in paths[:32]],
            torch.device("cpu"),
            1,
        )
        * n
        / 32
    )
    stages["PIL decode + resize, one core"] = pil
    mean_size = sum(len(j) for j in jpegs) / n / 1024
    print(
        f"{args.model}, {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"batch {n} JPEGs of {mean_size:.0f} KB on average, median of {args.repeats}"
    )
    forward = stages[forward_name]
    print("| stage | ms per batch | images/s | x forward time |")
    print("| --- | --- | --- | --- |")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds * 1000:.1f} | {n / seconds:.0f} | {seconds / forward:.2f} |")


if __name__ == "__main__":
    main()
