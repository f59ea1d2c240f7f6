"""Datasets: which images to explain among thousands, and maps over all of them.

- :mod:`.sources`: arrays, torch Datasets/DataLoaders, tf.data, folders and files behind one protocol;
- :mod:`.scan`: :func:`scan` and :class:`Scan`, every image's prediction, confidence and loss;
- :mod:`.store`: the Parquet + zarr folder the rows are committed to, block by block;
- :mod:`.predictions`: from scores to a scan's columns; :mod:`.pictures`: files and thumbnails;
- :mod:`.keys`: content fingerprints of weights and data.
"""

from .scan import Scan, open_scan, scan
from .sources import DataSource, as_source

__all__ = ["DataSource", "Scan", "as_source", "open_scan", "scan"]
