"""http(s):// inputs against a server of the tests' own (tests/http_server.py) that answers
as real servers do and fail to: ranges or none, redirects, 404, 5xx, a slow answer, a body
cut short, a Content-Length smaller than the file. One row per URL, always: 404 is
not_found, a 5xx is tried again for the retry budget and then a read_error, and a body cut
short is never decoded as a whole image."""

from __future__ import annotations

import io
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torchvision.models as tvm
from PIL import Image

from resnet_batch.core import storage
from resnet_batch.core.errors import ImageError
from resnet_batch.data.image_bytes import read_image_bytes

from .conftest import write_jpegs
from .helpers import cli, in_process
from .http_server import FaultyFiles, self_signed
from .test_label_reference import check_against_reference, reference_outputs

WAYS = ("files", "whole", "moved", "gone", "broken", "flaky", "slow", "cut", "short")
FINE = ("files", "whole", "moved", "flaky", "slow")
FAILED = {"gone": "not_found:", "broken": "read_error: HTTP 500", "cut": "read_error: the response was cut short"}


@pytest.fixture()
def served(tmp_path):
    images = write_jpegs(tmp_path / "site", 2, seed=3)
    with FaultyFiles(tmp_path / "site") as server:
        yield server, images


def test_each_answer_as_a_reader_sees_it(served, monkeypatch):
    server, images = served
    monkeypatch.setattr(storage, "STORAGE_RETRY_S", 4.0)
    data = images[0].read_bytes()
    url = f"{server.url}/{{}}/{images[0].name}"
    for way in FINE:
        assert read_image_bytes(url.format(way), max_bytes=1 << 20) == data, way
    assert server.requests[f"/flaky/{images[0].name}"] == 3  # two 503s, then the file
    with pytest.raises(ImageError, match="not_found"):
        read_image_bytes(url.format("gone"))
    with pytest.raises(ImageError, match=r"read_error: HTTP 500"):
        read_image_bytes(url.format("broken"))
    assert server.requests[f"/broken/{images[0].name}"] >= 2  # tried again within the budget
    with pytest.raises(ImageError, match=rf"read_error: the response was cut short: {len(data) // 2} of {len(data)}"):
        read_image_bytes(url.format("cut"))
    with pytest.raises(ImageError, match="too_large"):  # read no further than the limit, ranges or none
        read_image_bytes(url.format("whole"), max_bytes=1000)


def test_tar_members_are_read_by_range_or_from_the_whole_shard(served, tmp_path):
    server, images = served
    with tarfile.open(server.folder / "shard.tar", "w") as tar:
        for image in images:
            tar.add(image, arcname=f"sample/{image.name}")
    with tarfile.open(server.folder / "shard.tar") as tar:
        member = tar.getmember(f"sample/{images[1].name}")
    for way in ("files", "whole"):
        shard = f"{server.url}/{way}/shard.tar"
        member_bytes = read_image_bytes(f"{shard}/sample/{images[1].name}", member.offset_data, member.size)
        assert member_bytes == images[1].read_bytes(), way


@pytest.mark.e2e
def test_a_manifest_of_urls_gives_one_row_each(served, tmp_path):
    server, images = served
    urls = [f"{server.url}/{way}/{image.name}" for way in WAYS for image in images]
    manifest = server.folder / "urls.txt"
    manifest.write_text("".join(f"{u}\n" for u in urls))
    out = tmp_path / "out"
    done = cli(
        "label", f"{server.url}/files/urls.txt", "--output", str(out), "--model", "none", "--batch-size", "4",
        env={**os.environ, "RESNET_BATCH_STORAGE_RETRY_S": "5"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == sorted(urls)
    sizes = {image.name: Image.open(image).size for image in images}
    for url, row in rows.items():
        way, name = url.split("/")[-2:]
        if way in FINE:
            assert row["error"] is None and (row["width"], row["height"]) == sizes[name], row
        else:
            assert row["error"] is not None and row["error"].startswith(FAILED.get(way, "")), row
    assert rows[f"{server.url}/short/{images[0].name}"]["error"].split(":")[0] in ("decode_error", "truncated")


def test_a_cut_body_is_never_a_whole_image(served):
    """What the short answer gives the decoder: half a JPEG, which Pillow must refuse."""
    server, images = served
    half = read_image_bytes(f"{server.url}/short/{images[0].name}")
    assert len(half) == len(images[0].read_bytes()) // 2
    with pytest.raises(OSError), Image.open(io.BytesIO(half)) as img:
        img.load()


def test_https_with_a_trusted_certificate_and_without(tmp_path, monkeypatch):
    """The certificate is checked: trusted through SSL_CERT_FILE (as a user's own CA is),
    the file is read; not trusted, a read_error that says so."""
    images = write_jpegs(tmp_path / "site", 1, seed=4)
    certificate = self_signed(tmp_path)
    with FaultyFiles(tmp_path / "site", certificate) as server:
        url = f"{server.url}/files/{images[0].name}"
        assert url.startswith("https://")
        with pytest.raises(ImageError, match="read_error: .*CERTIFICATE_VERIFY_FAILED"):
            read_image_bytes(url)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        assert read_image_bytes(url) == images[0].read_bytes()


@pytest.mark.e2e
def test_values_equal_the_reference_with_weights_labels_and_config_over_http(
    ray_local, reference_images, resnet18_ckpt, tmp_path
):
    """Images, checkpoint, class names and the job's config all served over HTTP."""
    site = tmp_path / "site"
    site.mkdir()
    for image in reference_images:
        (site / image.name).write_bytes(image.read_bytes())
    (site / "resnet18.pth").write_bytes(resnet18_ckpt.read_bytes())
    (site / "classes.txt").write_text("".join(f"class-{i}\n" for i in range(1000)))
    with FaultyFiles(site) as server:
        base = f"{server.url}/files"
        (site / "job.yaml").write_text(
            f"model: resnet18\nweights: {base}/resnet18.pth\nlabels: {base}/classes.txt\n"
            "precision: fp32\ntop_k: 3\nbatch_size: 4\n"
        )
        (site / "urls.txt").write_text("".join(f"{base}/{image.name}\n" for image in reference_images))
        out = str(tmp_path / "out")
        done = in_process("label", f"{base}/urls.txt", "--config", f"{base}/job.yaml", "--output", out)
        assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(tmp_path / "out")
    for row in table.to_pylist():  # the served class names, in the checkpoint's order
        assert row["topk_labels"] == [f"class-{i}" for i in row["topk_ids"]], row["path"]
    categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    names = [[categories[i] for i in ids] for ids in table.column("topk_ids").to_pylist()]
    table = table.set_column(table.schema.get_field_index("topk_labels"), "topk_labels", pa.array(names))
    embeddings, logits = reference_outputs("resnet18", resnet18_ckpt, "IMAGENET1K_V1", reference_images)
    urls = {str(image): f"{base}/{image.name}" for image in reference_images}
    check_against_reference(
        table, {urls[p]: v for p, v in embeddings.items()}, {urls[p]: v for p, v in logits.items()}, top_k=3
    )
