"""The download layer: everything that reads bytes over HTTP, and nothing about NSD.

- :mod:`.download`: :class:`HTTPClient` (retries, ``Accept-Encoding: identity``),
  :class:`RangeFile` (a remote file read by byte ranges), :func:`download_file` (resumes a
  ``.part`` only with a validator: ETag / Last-Modified / size, ``If-Range``), the structural
  check of every downloaded file (:func:`check_file_structure`), :func:`verify_file` and
  :func:`repair_file`;
- :mod:`.hdf5`: the chunk-index reader that turns an HDF5 dataset's chunks into byte ranges,
  so that a subset reads only the voxels it keeps (:func:`read_chunks`).

:mod:`scaleinv_utils.nsd` builds on it (``remote -> nsd``).
"""
from .download import (DownloadError, HTTPClient, RangeFile, check_file_structure, coalesce_ranges,
                       download_file, repair_file, verify_file)
from .hdf5 import btree_chunk_index, chunk_decoder, read_chunks

__all__ = ["HTTPClient", "RangeFile", "DownloadError", "download_file", "verify_file", "repair_file",
           "check_file_structure", "coalesce_ranges", "read_chunks", "chunk_decoder",
           "btree_chunk_index"]
