"""A job submitted to a job server on another machine: small local files travel with it under
new names, local data is refused in one line naming the path, and a server on this machine
takes the paths as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from resnet_batch.cli import shipping
from resnet_batch.core.errors import UsageError

from .conftest import write_jpegs

ELSEWHERE = "http://198.18.250.1:8265"  # the benchmarking range: never this machine


def test_where_the_job_server_runs():
    assert shipping.job_server_is_here("http://127.0.0.1:8265")
    assert shipping.job_server_is_here("http://localhost:8265")
    assert not shipping.job_server_is_here(ELSEWHERE)
    assert not shipping.job_server_is_here("http://no-such-host.invalid:8265")


def test_small_files_travel_with_the_job_under_new_names(tmp_path):
    weights, labels = tmp_path / "model.pt", tmp_path / "names.txt"
    weights.write_bytes(b"w" * 1000)
    labels.write_text("cat\ndog\n")
    manifest = tmp_path / "list.txt"
    manifest.write_text("s3://bucket/a.jpg\ns3://bucket/b.jpg\n")
    args = ["label", str(manifest), "--output", "s3://bucket/out", "--weights", str(weights), f"--labels={labels}"]
    shipment = shipping.prepare(args, ELSEWHERE, None)
    try:
        assert shipment.working_dir and shipment.label_args[:3] == [
            "label",
            f"{shipping.SHIPPED_FOLDER}/2-list.txt",
            "--output",
        ]
        shipped = [a.split("=", 1)[-1] for a in shipment.label_args if f"{shipping.SHIPPED_FOLDER}/" in a]
        contents = sorted(Path(shipment.working_dir, name).read_bytes() for name in shipped)
        assert len(shipped) == 3 and contents == sorted(p.read_bytes() for p in (manifest, weights, labels))
        assert shipment.label_args[3] == "s3://bucket/out" and shipment.label_args[-1].startswith("--labels=shipped/")
    finally:
        if shipment.working_dir:
            shutil.rmtree(shipment.working_dir)


@pytest.mark.parametrize(
    "args, said",
    [
        (["label", "{images}", "--output", "s3://b/o"], "submit: input {images} is on this machine"),
        (["label", "{image}", "--output", "s3://b/o"], "submit: input {image} is on this machine"),
        (["label", "{glob}", "--output", "s3://b/o"], "is on this machine, not on the cluster's nodes"),
        (["label", "{manifest}", "--output", "s3://b/o"], "names {image}, a file on this machine"),
        (["label", "s3://b/in", "--output", "{tmp}/out"], "is a local path, and the cluster's nodes would each"),
    ],
    ids=["folder", "image", "glob", "manifest-of-local-files", "local-output"],
)
def test_local_data_is_refused_naming_the_path(tmp_path, args, said):
    images = tmp_path / "images"
    (image,) = write_jpegs(images, 1, seed=1)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{image}\n")
    names = dict(images=images, image=image, glob=f"{images}/*.jpg", manifest=manifest, tmp=tmp_path)
    with pytest.raises(UsageError) as refused:
        shipping.prepare([a.format(**names) for a in args], ELSEWHERE, None)
    message = str(refused.value)
    assert said.format(**names) in message and "--paths-on-cluster" in message and "\n" not in message


def test_a_path_only_the_cluster_has_is_sent_as_given(tmp_path):
    args = ["label", "/mnt/cluster-only/images", "--output", "s3://b/o", "--weights", "/mnt/cluster-only/m.pt"]
    assert shipping.prepare(args, ELSEWHERE, None) == shipping.Shipment(args, None)


def test_shipping_beside_a_working_dir_is_refused(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w")
    with pytest.raises(UsageError, match="--working-dir is given"):
        shipping.prepare(["label", "s3://b/in", "--output", "s3://b/o", "--weights", str(weights)], ELSEWHERE, "wd")
