"""Readers and writers of the standard jet datasets.

=================  ==================================================  =======================
format             files                                               reader / writer
=================  ==================================================  =======================
``top-hdf5``       Top Quark Tagging Reference Dataset (pandas HDF5)   :class:`TopHDF5Reader`
``qg-npz``         EnergyFlow quark/gluon jets (``QG_jets*.npz``)      :class:`QGNpzReader`
``jetclass-root``  JetClass ROOT files (TTree ``tree``)                :class:`JetClassReader`
``parquet``        awkward Parquet (particle_transformer conversions)  :class:`ParquetReader`
=================  ==================================================  =======================

Every reader streams its files in chunks with bounded memory and yields jets in the
canonical awkward layout (``part_energy, part_px, part_py, part_pz``, further ``part_*``
fields, ``label``, jet-level fields) or as :class:`~jettag.data.JetBatch` es. Every writer
(``TopHDF5Writer``, ``QGNpzWriter``, ``JetClassWriter``, ``ParquetWriter``) appends chunks
and produces the published layout, renaming ``path + ".partial"`` into place on ``close``.
The heavy optional backends (h5py/pandas/PyTables, pyarrow) are imported when a file is
opened, with an error naming the extra to install.

Example:
    >>> from jettag.data.formats import open_dataset, write_parquet    # doctest: +SKIP
    >>> reader = open_dataset("train.h5")                                # doctest: +SKIP
    >>> write_parquet("train.parquet", reader.iter_awkward(100_000))     # doctest: +SKIP
"""

from jettag.data.formats._common import (
    P4_FIELDS,
    JetChunk,
    JetFileError,
    JetReader,
    JetWriter,
    MissingKeyError,
    resolve_paths,
)
from jettag.data.formats.jetclass_root import (
    JETCLASS_LABEL_DTYPES,
    JETCLASS_LABELS,
    JetClassReader,
    JetClassWriter,
    write_jetclass_root,
)
from jettag.data.formats.parquet import ParquetReader, ParquetWriter, write_parquet
from jettag.data.formats.qg_npz import (
    PDG_MASSES,
    QGNpzReader,
    QGNpzWriter,
    pdg_mass,
    write_qg_npz,
)
from jettag.data.formats.registry import FORMATS, detect_format, open_dataset, open_writer
from jettag.data.formats.top_hdf5 import (
    TopHDF5Reader,
    TopHDF5Writer,
    top_hdf5_columns,
    write_top_hdf5,
)

__all__ = [
    "FORMATS",
    "JETCLASS_LABELS",
    "JETCLASS_LABEL_DTYPES",
    "P4_FIELDS",
    "PDG_MASSES",
    "JetChunk",
    "JetClassReader",
    "JetClassWriter",
    "JetFileError",
    "JetReader",
    "JetWriter",
    "MissingKeyError",
    "ParquetReader",
    "ParquetWriter",
    "QGNpzReader",
    "QGNpzWriter",
    "TopHDF5Reader",
    "TopHDF5Writer",
    "detect_format",
    "open_dataset",
    "open_writer",
    "pdg_mass",
    "resolve_paths",
    "top_hdf5_columns",
    "write_jetclass_root",
    "write_parquet",
    "write_qg_npz",
    "write_top_hdf5",
]
