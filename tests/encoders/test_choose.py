"""Which backend `auto` runs: agreement gates it, speed and start-up decide it."""

from __future__ import annotations

import pytest

from clipcli.encoders.choose import fastest, job_seconds

pytestmark = pytest.mark.backends  # pure logic: cheap on any CPU, emulated ones included


EXACT = {"cosine": 1.0, "centred": 1.0, "top5": 1.0, "labels": 1.0}
CLOSE = {"cosine": 0.9998, "centred": 0.9993, "top5": 1.0, "labels": 1.0}


def record(**changes) -> dict:
    """A CPU's figures: torch 10 img/s after 4 s of start-up, ONNX fp32 12, int8 25, both
    exports keeping the gate."""
    figures = {
        "torch": {"rate": 10.0, "start_s": 4.0, "estimated": False},
        "fp32": {**EXACT, "rate": 12.0, "start_s": 0.3},
        "int8": {"variant": "smooth-s8", **CLOSE, "rate": 25.0, "start_s": 0.2},
    }
    for kind, values in changes.items():
        figures[kind] = {**figures[kind], **values}
    return figures


def test_the_fastest_faithful_backend_wins():
    assert fastest(record()) == "int8"
    assert fastest(record(), 1) == "int8"


def test_int8_needs_centred_cosine_0999_to_be_chosen():
    assert fastest(record(int8={"centred": 0.9989})) == "fp32"
    assert fastest(record(int8={"centred": 0.9990})) == "int8"
    assert fastest(record(int8={"centred": 0.9, "rate": 1000.0})) == "fp32"


def test_int8_needs_its_rankings_kept_to_be_chosen():
    assert fastest(record(int8={"top5": 0.6})) == "fp32"
    assert fastest(record(int8={"labels": 0.9})) == "fp32"


def test_a_record_from_before_the_centred_gate_is_not_trusted():
    old = record()
    old["int8"] = {"variant": "u8", "cosine": 0.9999, "rate": 25.0, "start_s": 0.2}
    assert fastest(old) == "fp32"


def test_an_int8_that_failed_on_this_cpu_is_never_chosen():
    figures = record()
    figures["int8"] = {"tried": {"s8": {"error": "RuntimeError: no kernel"}}}
    assert fastest(figures) == "fp32"


def test_torch_faster_per_image_wins_large_jobs_but_not_small_ones():
    figures = record(torch={"rate": 14.0}, int8={"centred": 0.99})  # torch beats ONNX fp32 (12)
    # torch's 3.7 s more start-up are bought back after 3.7 / (1/12 - 1/14) = 311 images, and
    # a small job leaves torch, the fastest per image, only to save half a second or more.
    assert fastest(figures, 4) == "fp32"
    assert fastest(figures, 200) == "fp32"
    assert fastest(figures, 300) == "torch"
    assert fastest(figures, 400) == "torch"
    assert fastest(figures) == "torch"  # an unknown job size is taken as a large one


def test_a_small_job_leaves_the_fastest_backend_per_image_only_to_save_half_a_second():
    figures = record(int8={"rate": 11.0, "start_s": 0.05}, fp32={"rate": 12.0, "start_s": 0.3})
    assert fastest(figures, 1) == "fp32"  # int8 would save 0.24 s: not worth a second backend
    assert fastest(figures) == "fp32"
    slow_start = record(int8={"rate": 11.0, "start_s": 0.05}, fp32={"rate": 12.0, "start_s": 2.0})
    assert fastest(slow_start, 1) == "int8"
    assert fastest(slow_start) == "fp32"


def test_nothing_measured_on_this_cpu_means_torch():
    assert fastest(None) == "torch"
    assert fastest({}) == "torch"


def test_an_unmeasured_torch_rate_leaves_the_faithful_exports():
    assert fastest(record(torch={"rate": 0.0}, int8={"centred": 0.9}), 10_000) == "fp32"
    assert fastest(record(torch={"rate": 0.0}, fp32={"cosine": 0.5}, int8={"cosine": 0.5})) == (
        "torch"
    )


def test_job_seconds_is_start_up_plus_images_over_rate():
    assert job_seconds({"rate": 10.0, "start_s": 2.0}, 30) == 5.0
    assert job_seconds({"rate": 0.0, "start_s": 2.0}, 30) == float("inf")
