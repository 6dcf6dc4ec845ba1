"""gpu_check.py's `kernels` and `profile` sections: the GPU data path's parts one at a time,
the model actor's loop serial and overlapped, and a profile of that loop. Imports torch:
gpu_check runs it in a child process."""

from __future__ import annotations

import io
import os
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from device_decode import timed
from forward_variants import variants
from PIL import Image

from bench import cpu_crops
from resnet_batch.core.columns import OutputColumns
from resnet_batch.core.errors import UsageError
from resnet_batch.data.decode import DecodeStage, JpegHandoff, Source, load_one
from resnet_batch.data.limits import Limits
from resnet_batch.data.preprocessing import GPU_DECODERS
from resnet_batch.device.decoders import DecodeBarrier, DeviceDecoder, jpeg_backend
from resnet_batch.device.hazard import corruption_trials, decoded_sizes
from resnet_batch.device.resize import resize_crop
from resnet_batch.model.inference import Predictor
from resnet_batch.model.registry import POOLED, feature_width
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights


def run(args) -> dict:
    device = torch.device(args.device)
    model = "resnet18" if args.smoke else "resnet50"
    resolved = resolve_weights(model, "none")
    paths = sorted(Path(args.data).glob("*.jpg"))
    paths = [paths[i % len(paths)] for i in range(args.batch_size)]
    jpegs = [p.read_bytes() for p in paths]
    n = len(jpegs)
    decoders = available_decoders(resolved.preprocessing, device)
    hazard_rows = corruption(args, device, resolved.preprocessing, paths[:32])
    rows = decode_rows(args, device, resolved.preprocessing, jpegs, paths, decoders)
    predictor = Predictor(
        InferenceSettings(
            weights=resolved, precision=args.precision, device=device.type, warmup_batch=n, gpu_decoder="nvjpeg"
        ),
        schema=OutputColumns(feature_width(model, POOLED), with_topk=True).schema(),
    )
    crops = torch.from_numpy(cpu_crops(paths[:n], resolved.preprocessing))
    if device.type == "cuda":
        crops = crops.pin_memory()
    forward_s = timed(lambda: predictor.network.run_model(crops.to(device, non_blocking=True)), device, args.batches)
    rows.append(
        row(
            "forward alone (pinned uint8 crops: copy in, normalise, forward, results out)",
            forward_s,
            n,
            f"{model}, {predictor.network.precision}",
        )
    )
    # --smoke on a CPU: compiling takes a minute there (tests/test_forward_variants.py compiles a small model).
    modes = () if args.smoke else ("default", "max-autotune-no-cudagraphs")
    rows += variants(predictor.network.model, n, device, predictor.network.precision, args.batches, modes)
    on_device = DecodeStage(resolved.preprocessing, handoff=JpegHandoff(0.0))(
        {"path": np.array([str(p) for p in paths], dtype=object)}
    )
    on_cpu = DecodeStage(resolved.preprocessing, handoff=JpegHandoff(1.0))(
        {"path": np.array([str(p) for p in paths], dtype=object)}
    )
    fed = [predictor.feed(dict(on_device), np.array(on_device["error"], dtype=object)) for _ in range(3)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the events are read below
    data_path_s = (
        min(f.data_path_s() for f in fed[1:])
        if device.type == "cuda"
        else timed(
            lambda: predictor.feed(dict(on_device), np.array(on_device["error"], dtype=object)), device, args.batches
        )
    )
    rows.append(
        row(
            "GPU data path alone (feed: decode + resize, device time)",
            data_path_s,
            n,
            f"{data_path_s / forward_s:.2f} x the forward",
        )
    )
    seconds = decode_process_loop(predictor, jpegs, args.batches)
    rows.append(
        row(
            "decode in a process of its own (own CUDA context, crops handed over by CUDA IPC), forward here",
            seconds,
            n,
            f"{forward_s / seconds:.2f} x the forward's rate",
        )
    )
    for name, batch, calls in [
        ("actor loop, JPEGs decoded on the device, 1 call (serial)", on_device, 1),
        ("actor loop, JPEGs decoded on the device, 2 calls (overlapped, as the job)", on_device, 2),
        ("actor loop, crops decoded by CPU tasks, 2 calls", on_cpu, 2),
    ]:
        seconds = actor_loop(predictor, batch, calls, args.batches)
        rows.append(row(name, seconds, n, f"{forward_s / seconds:.2f} x the forward's rate"))
    overlapped = decoder_loops(predictor, decoders, on_device, args.batches, forward_s, n)
    rows += overlapped
    return {
        "corruption": hazard_rows,
        "rows": rows,
        "profile": profile(predictor, on_device, args.batches, device),
        "decoder_choice": decoder_choice(overlapped),
    }


JPEG_KINDS = {"baseline": {}, "progressive": {"progressive": True}}


def corruption(args, device, prep, paths) -> list[dict]:
    """The write-before-read hazard (resnet_batch/device/hazard.py) per decoder, JPEG kind,
    and with and without the barrier: "corrupted N of M" each."""
    found = []
    for kind, options in JPEG_KINDS.items():
        jpegs = [_reencoded(p, options) for p in paths]
        sizes = decoded_sizes(jpegs)
        for name in GPU_DECODERS:
            for barrier in (True, False):
                entry: dict[str, object] = {"decoder": name, "kind": kind, "barrier": barrier}
                try:
                    backend = jpeg_backend(name, device)
                except (UsageError, RuntimeError) as exc:
                    found.append({**entry, "result": f"not available: {str(exc)[:100]}"})
                    continue
                decoder = DeviceDecoder(prep, device, backend, None if barrier else DecodeBarrier.off())
                trials = corruption_trials(decoder.decode, device, jpegs, sizes, args.corruption_trials)
                found.append({**entry, "corrupted": trials.corrupted, "trials": trials.trials, "result": str(trials)})
    return found


def _reencoded(path: Path, options: dict) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()


def available_decoders(prep, device) -> dict:
    """Each GPU decoder of the job (device/decoders.py) as a DeviceDecoder, or why it is not here."""
    found: dict[str, DeviceDecoder | str] = {}
    for name in GPU_DECODERS:
        try:
            found[name] = DeviceDecoder(prep, device, jpeg_backend(name, device))
        except (UsageError, RuntimeError) as exc:
            found[name] = f"not available: {str(exc)[:100]}"
    return found


def decoder_loops(
    predictor: Predictor, decoders: dict, batch: dict, batches: int, forward_s: float, n: int
) -> list[dict]:
    """The actor's two overlapped calls with each decoder in its feed."""
    rows, kept = [], predictor.feed.decoder
    try:
        for name, decoder in decoders.items():
            what = f"actor loop, 2 calls, {name} decoding"
            if isinstance(decoder, str):
                rows.append(row(what, 0.0, n, decoder))
                continue
            predictor.feed.decoder = decoder
            seconds = actor_loop(predictor, batch, 2, batches)
            rows.append(row(what, seconds, n, f"{forward_s / seconds:.2f} x the forward's rate"))
    finally:
        predictor.feed.decoder = kept
    return rows


def decoder_choice(loops: list[dict]) -> str:
    """Which decoder the job should use: the one whose overlapped loop is fastest."""
    timed_loops = [r for r in loops if r["ms"] > 0]
    if not timed_loops:
        return "no GPU decoder ran"
    best = min(timed_loops, key=lambda r: r["ms"])
    name = best["what"].rsplit(", ", 1)[1].removesuffix(" decoding")
    others = ", ".join(
        f"{r['what'].rsplit(', ', 1)[1]} {r['images_per_s']} images/s" for r in timed_loops if r is not best
    )
    return f"--gpu-decoder {name}: {best['images_per_s']} images/s overlapped with the forward" + (
        f" (against {others})" if others else ""
    )


def row(what: str, seconds: float, n: int, note: str = "") -> dict:
    return {
        "what": what,
        "ms": round(seconds * 1000, 2),
        "images_per_s": round(n / seconds) if seconds else None,
        "note": note,
    }


def decode_rows(args, device, prep, jpegs: list[bytes], paths, decoders: dict) -> list[dict]:
    """Each decode candidate alone and with the batched crop, the batched resize alone, and PIL
    on one core and on the node."""
    n, rows = len(jpegs), []
    for name, decoder in decoders.items():
        if isinstance(decoder, str):
            rows += [
                row(f"decode: {name} batched", 0.0, n, decoder),
                row(f"decode + resize + crop, {name} (DeviceDecoder)", 0.0, n, decoder),
            ]
            continue
        decode_only = partial(decoder.decode, jpegs)
        rows.append(row(f"decode: {name} batched", timed(decode_only, device, args.batches), n))
        whole = partial(decoder, jpegs)
        rows.append(row(f"decode + resize + crop, {name} (DeviceDecoder)", timed(whole, device, args.batches), n))
    for name, decode in other_decoders(device).items():
        if isinstance(decode, str):
            rows.append(row(f"decode: {name}", 0.0, n, decode))
        else:
            rows.append(row(f"decode: {name}", timed(partial(decode, jpegs), device, args.batches), n))
    images = list(decoders["nvjpeg"].decode(jpegs)[0].values())
    dtype = decoders["nvjpeg"].dtype
    rows.append(row("resize + crop, batched", timed(lambda: resize_crop(images, prep, dtype), device, args.batches), n))
    sample = paths[: min(32, n)]
    one_core = timed(lambda: [load_one(Source(str(p)), prep, Limits()) for p in sample], torch.device("cpu"), 1)
    per_batch = one_core * n / len(sample)
    cores = max(1, (os.cpu_count() or 2) - 1)
    rows.append(row("decode: PIL decode + resize, one core", per_batch, n))
    rows.append(row(f"decode: PIL decode + resize, {cores} cores (one core's rate x {cores})", per_batch / cores, n))
    return rows


def other_decoders(device) -> dict:
    """Candidates the job does not offer yet: a callable each, or why it is not here."""
    try:
        from torchcodec.decoders import decode_jpeg as codec_decode

        return {
            "torchcodec": lambda jpegs: [
                codec_decode(torch.frombuffer(j, dtype=torch.uint8), device=device) for j in jpegs
            ]
        }
    except Exception as exc:  # not installed, or built for another torch
        return {"torchcodec": f"not available: {type(exc).__name__}: {str(exc)[:80]}"}


def actor_loop(predictor: Predictor, batch: dict, calls: int, batches: int) -> float:
    """Seconds per batch of `batches` model-actor calls, `calls` at once on threads of their own."""

    def work(count: int) -> None:
        for _ in range(count):
            predictor(dict(batch))

    work(1)  # warm-up on this thread
    threads = [threading.Thread(target=work, args=(batches // calls,)) for _ in range(calls)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.monotonic() - start) / (batches // calls * calls)


def decode_process_loop(predictor: Predictor, jpegs: list[bytes], batches: int) -> float:
    """Seconds per batch when another process decodes and resizes (its own CUDA context, the
    candidate that cannot serialise with this process's streams) and this one runs the forward
    on what it hands over, two batches ahead at most."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    crops, done = context.Queue(2), context.Event()
    producer = context.Process(
        target=decode_in_process,
        daemon=True,
        args=(predictor.settings.weights.preprocessing, predictor.device.type, jpegs, batches + 1, crops, done),
    )
    producer.start()
    try:
        with predictor._stream():
            predictor.network.run_model(crops.get(timeout=300))  # the first: the process's start and warm-up
            start = time.monotonic()
            for _ in range(batches):
                predictor.network.run_model(crops.get(timeout=300))
            return (time.monotonic() - start) / batches
    finally:
        done.set()
        producer.join(timeout=30)


def decode_in_process(prep, device_type: str, jpegs: list[bytes], batches: int, crops, done) -> None:
    """The other process: decode + resize `batches` times, each crop batch put on the queue
    (CUDA tensors travel as IPC handles; they must live here until the consumer is done)."""
    device = torch.device(device_type)
    decoder = DeviceDecoder(prep, device, jpeg_backend("nvjpeg", device))
    for _ in range(batches):
        batch = decoder(jpegs).crops
        if device_type == "cuda":
            torch.cuda.current_stream().synchronize()  # the consumer's stream cannot wait on ours
        crops.put(batch)
    done.wait(timeout=600)


def profile(predictor: Predictor, batch: dict, batches: int, device) -> dict:
    """torch.profiler over `batches` overlapped actor calls: top ops and the GPU's idle gaps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        actor_loop(predictor, batch, 2, batches)
    averages = prof.key_averages()

    def top(attribute: str) -> list:
        ranked = sorted(averages, key=lambda e: getattr(e, attribute, 0), reverse=True)[:8]
        return [(e.key[:70], round(getattr(e, attribute, 0) / 1000, 2)) for e in ranked]

    kernels = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
    )
    busy, gaps, window = gpu_busy(kernels)
    return {
        "batches": batches,
        "cpu_top": top("self_cpu_time_total"),
        "cuda_top": top("self_device_time_total") if kernels else [],
        "window_ms": round(window / 1000, 1),
        "gpu_busy_pct": round(100 * busy / window, 1) if window else None,
        "longest_gaps_ms": [round(g / 1000, 2) for g in sorted(gaps, reverse=True)[:5]],
    }


def gpu_busy(kernels: list[tuple[float, float]]) -> tuple[float, list[float], float]:
    """(busy microseconds, idle gaps, window) of sorted kernel intervals, overlaps merged."""
    if not kernels:
        return 0.0, [], 0.0
    gaps: list[float] = []
    busy, (start, end) = 0.0, kernels[0]
    for s, e in kernels[1:]:
        if s > end:
            busy, gaps, start = busy + end - start, gaps + [s - end], s
        end = max(end, e)
    return busy + end - start, gaps, kernels[-1][1] - kernels[0][0]
