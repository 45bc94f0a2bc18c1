"""The extraction child process and the two embedders: results land in the store, cancel,
errors, and a store made by one embedder is found by the other."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl.core.errors import one_line
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.workflows.embedding.service import ExtractionProcess, ExtractionRequest

FAST = Composition(patch_size=112, zooms=(0.5,), variants=("rgb",))


def run_to_end(job: ExtractionProcess, limit: float = 120.0) -> list[tuple[str, dict]]:
    import time

    messages, deadline = [], time.monotonic() + limit
    while not job.finished and time.monotonic() < deadline:
        messages += job.poll(0.2)
    assert job.finished, "the extraction process did not finish in time"
    if isinstance(job, ExtractionProcess):
        job.join(10)
    return messages


def request(slide, tmp_path, coords, **kw) -> ExtractionRequest:
    return ExtractionRequest(slide_path=str(slide), mpp=None, coords=coords,
                             settings=Settings(composition=FAST, store_dir=str(tmp_path)), **kw)


def test_child_process_embeds_into_the_store(sample_slide_path, tmp_path):
    coords = np.array([[1000, 1500], [1112, 1500], [1000, 1612]], np.int64)
    job = ExtractionProcess(request(sample_slide_path, tmp_path, coords)).start()
    messages = run_to_end(job)
    kinds = [k for k, _ in messages]
    assert kinds[0] == "started" and kinds[-1] == "finished", messages
    committed = np.concatenate([p["committed"] for k, p in messages if k == "progress"])
    assert sorted(map(tuple, committed)) == sorted(map(tuple, coords))
    store = EmbeddingStore.open(messages[-1][1]["store"])
    assert not store.missing(coords).any()
    assert store.get(coords).shape == (3, store.dim)


def test_cancel_before_work_reports_cancelled(sample_slide_path, tmp_path):
    job = ExtractionProcess(request(sample_slide_path, tmp_path, np.zeros((2, 2), np.int64)))
    job.cancel()
    job.start()
    messages = run_to_end(job)
    assert messages[-1][0] == "cancelled"


def test_errors_come_back_as_one_line(tmp_path):
    job = ExtractionProcess(request(tmp_path / "absent.svs", tmp_path,
                                    np.zeros((1, 2), np.int64))).start()
    messages = run_to_end(job)
    kind, payload = messages[-1]
    assert kind == "failed"
    assert "absent.svs" in payload["message"] and "\n" not in payload["message"]


def test_one_line_flattens_messages():
    assert one_line(ValueError("a\nb")) == "ValueError: a b"


@pytest.mark.parametrize("code", [-9])
def test_a_killed_child_is_reported(sample_slide_path, tmp_path, code):
    coords = np.stack(np.meshgrid(np.arange(0, 2000, 112), np.arange(0, 2000, 112)),
                      -1).reshape(-1, 2)
    job = ExtractionProcess(request(sample_slide_path, tmp_path, coords)).start()
    job.service.process.kill()
    messages = run_to_end(job)
    assert messages[-1][0] == "failed"
    assert "ended unexpectedly" in messages[-1][1]["message"]


def test_the_service_keeps_its_child_between_jobs_and_restarts_a_dead_one(sample_slide_path,
                                                                         tmp_path):
    from napari_dfl.workflows.embedding.service import ExtractionService

    service = ExtractionService()
    try:
        first = np.array([[1000, 1500], [1112, 1500]], np.int64)
        messages = run_to_end(service.job(request(sample_slide_path, tmp_path, first)).start())
        assert messages[-1][0] == "finished"
        pid = service.process.pid
        # a job cancelled mid-way leaves late messages behind: the next job ignores them
        many = np.stack(np.meshgrid(np.arange(0, 2000, 112), np.arange(0, 1000, 112)),
                        -1).reshape(-1, 2)
        cancelled = service.job(request(sample_slide_path, tmp_path, many)).start()
        while not any(k == "progress" for k, _ in cancelled.poll(0.2)):
            assert not cancelled.finished
        cancelled.shutdown()
        assert cancelled.outcome[0] == "cancelled"
        second = np.array([[1000, 1612]], np.int64)
        messages = run_to_end(service.job(request(sample_slide_path, tmp_path, second)).start())
        assert messages[0][0] == "started" and messages[-1][0] == "finished"
        assert service.process.pid == pid, "the warm child should serve every job"
        store = EmbeddingStore.open(messages[-1][1]["store"])
        assert not store.missing(np.concatenate([first, second])).any()
        assert len(store) < len(many) + 3, "the cancelled job should have stopped early"

        service.process.kill()
        service.process.join(5)
        third = np.array([[1112, 1612]], np.int64)
        messages = run_to_end(service.job(request(sample_slide_path, tmp_path, third)).start())
        assert messages[-1][0] == "finished" and service.process.pid != pid
    finally:
        service.close()
    assert service.process is None


def test_preloading_loads_the_backbone_before_the_first_job(sample_slide_path, tmp_path):
    from napari_dfl.workflows.embedding.service import ExtractionService

    service = ExtractionService()
    try:
        service.preload(Settings(backbone="no-such-backbone"))  # reported, never fatal
        service.preload(Settings())
        bad = service.wait_preloaded("no-such-backbone", 120)
        assert bad is not None and not bad["ok"] and "no-such-backbone" in bad["message"]
        good = service.wait_preloaded("efficientnet-lite0", 120)
        assert good["ok"] and good["backbone"] == "efficientnet-lite0"
        assert good["identity"]["name"] == "efficientnet-lite0"
        assert service.backbone_identity(Settings()) == good["identity"]
        assert service.backbone_identity(Settings(weights="other.pth")) is None
        pid = service.process.pid
        coords = np.array([[1000, 1500]], np.int64)
        messages = run_to_end(service.job(request(sample_slide_path, tmp_path, coords)).start())
        assert messages[-1][0] == "finished" and service.process.pid == pid
    finally:
        service.close()


def test_the_child_and_the_local_embedder_share_their_stores(sample_slide_path, tmp_path):
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.workflows.embedding.child import ChildEmbedder
    from napari_dfl.workflows.embedding.local import LocalEmbedder
    from napari_dfl.workflows.embedding.service import ExtractionService

    settings = Settings(composition=FAST, store_dir=str(tmp_path))
    coords = np.array([[1000, 1500], [1112, 1500]], np.int64)
    service = ExtractionService()
    try:
        with Slide(sample_slide_path) as slide:
            child = ChildEmbedder(settings, service)
            progress = list(child.embed(slide, coords))
            assert progress[-1].done == 2 and progress[-1].computed == 2
            stored = child.known_store(slide)
            local = LocalEmbedder(settings)
            assert local.known_store(slide).path == stored.path
            again = list(local.embed(slide, coords))
            assert again[-1].computed == 0 and again[-1].done == 2
            np.testing.assert_array_equal(local.known_store(slide).get(coords),
                                          stored.get(coords))
    finally:
        service.close()


def test_the_child_ends_when_its_parent_is_killed(tmp_path):
    """A crashed panel (SIGKILL) leaves no extraction child behind holding a backbone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "from napari_dfl.workflows.embedding.service import ExtractionService\n"
         "from napari_dfl.core.features.settings import Settings\n"
         "s = ExtractionService(); s.preload(Settings())\n"
         "assert s.wait_preloaded('efficientnet-lite0', 120)['ok']\n"
         "print(s.process.pid, flush=True)\n"
         "import time; time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # the child is alive, its backbone loaded
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the extraction child outlived its killed parent")
    finally:
        parent.kill()
