"""Datasets: which images to explain among thousands, and maps over all of them.

- :mod:`.sources`: arrays, torch Datasets/DataLoaders, tf.data, folders and files behind one protocol;
- :mod:`.scan`: :func:`scan` and :class:`Scan`, every image's prediction, confidence and loss;
- :mod:`.store`: the Parquet + zarr folder the rows are committed to, block by block;
- :mod:`.predictions`: from scores to a scan's columns; :mod:`.pictures`: files and thumbnails;
- :mod:`.jobs`: :func:`attribute_dataset`, maps and AUCs of every image, block by block (:mod:`.ray_engine` on Ray);
- :mod:`.keys`: content fingerprints of weights and data.
"""

from .jobs import DatasetMaps, attribute_dataset, run_block
from .scan import Scan, open_scan, scan
from .sources import DataSource, as_source

__all__ = ["DataSource", "DatasetMaps", "Scan", "as_source", "attribute_dataset", "open_scan", "run_block", "scan"]
