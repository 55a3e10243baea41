"""The allocator tuning: large response buffers are reused, not mapped afresh."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import os, resource, sys
    from fibonacci.allocator import keep_large_buffers_in_heap

    if sys.argv[1] == "tuned":
        assert keep_large_buffers_in_heap(largest_response_bytes=10 << 20)

    def respond():
        body = b"".join((b"{", b"7" * (10 << 20), b"}"))
        return len(body)

    def faults_per_response():
        for _ in range(3):
            respond()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            respond()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

    if os.fork() == 0:  # as in a gunicorn worker
        print(faults_per_response())
        sys.stdout.flush()
        os._exit(0)
    os.wait()
    """
)


def _faults(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning")
def test_tuned_process_reuses_large_buffers():
    pages_per_response = (10 << 20) // 4096
    assert _faults("default") > pages_per_response  # every buffer mapped afresh
    assert _faults("tuned") < pages_per_response / 10
