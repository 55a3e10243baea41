"""Keep large response buffers in the heap instead of fresh memory maps.

A window of 10,000 terms is a 10 MB response, built once per request. glibc
serves an allocation that large with a new mmap and returns it with munmap,
so the kernel zero-fills 2,500 fresh pages for every such response; its
adaptive threshold does not help, as it only moves to the size of the last
freed block, and the next block of that size is mapped again. Raising the
threshold above the largest response lets freed buffers be reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_buffers_in_heap(*, largest_response_bytes: int) -> bool:
    """Tune glibc's malloc for this process and the workers it forks; False elsewhere."""
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    # At 32 MB (glibc's own ceiling for its adaptive threshold) workers still
    # mapped every 10 MB response afresh; 64 MB was measured to hold.
    threshold = max(largest_response_bytes * 2, 64 * 1024 * 1024)
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold * 2)
    )
    if not tuned:
        logger.warning("mallopt refused the thresholds; large responses will be mapped afresh")
    return tuned
