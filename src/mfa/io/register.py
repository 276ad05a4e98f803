"""Read building registers in the BBR schema (Datafordeler field names).

CSV (``.csv``, ``.csv.gz``; the point is WKT in ``byg404Koordinat``), GeoParquet and
GeoPackage. Checks columns and numbers and names the file, row and field of any problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import shapely

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.register import BBR, BBR_NUMERIC, BBR_REQUIRED, normalise_bbr
from mfa.config import RegisterSource
from mfa.errors import InputDataError, InputNotFoundError
from mfa.io.files import check_input_file, missing_columns
from mfa.io.parquet_input import ParquetPart, geoparquet_parts, iter_geoparquet, parquet_batches
from mfa.io.safeopen import check_csv_header, check_text_file, read_vector
from mfa.numbers import Decimal, parse_numbers

__all__ = [
    "BBR_CRS_CODES",
    "buildings_from_register",
    "iter_register",
    "iter_register_ids",
    "read_register",
    "register_size",
]

#: ``byg406Koordinatsystem`` codes → CRS (5 = ETRS89 / UTM zone 32N).
BBR_CRS_CODES = {"5": "EPSG:25832"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".csv.gz", ".csv", ".parquet", ".geoparquet", ".gpkg"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _separator(path: Path) -> str:
    """The column separator of a CSV file: ';' when its header has ';' and no ',' (the
    Danish Excel export), else ','."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.readline()
    return ";" if b";" in header and b"," not in header else ","


def _row_label(df: pd.DataFrame, pos: int, kind: str) -> str:
    """Where row ``pos`` of ``df`` is in its file (its index is the record's position)."""
    rid = df[BBR.ID].iloc[pos] if BBR.ID in df.columns else "?"
    at = int(df.index[pos]) if pd.api.types.is_integer_dtype(df.index) else pos
    where = f"line {at + 2}" if kind == "csv" else f"row {at + 1}"
    return f"{where} (id_lokalId {rid})"


def _check_numeric(
    df: pd.DataFrame, path: Path, kind: str, decimal: Decimal = "auto"
) -> pd.DataFrame:
    """The numeric BBR columns as Float64; text read by :func:`mfa.numbers.parse_numbers`
    (a value that is not a number, or could be read two ways, is an error naming the row)."""
    out = df.copy()
    for col in BBR_NUMERIC:
        raw = out[col]
        if pd.api.types.is_numeric_dtype(raw):
            out[col] = raw.astype("Float64")
            continue
        text = raw.astype("string").str.strip()
        num, bad, ambiguous = parse_numbers(text, decimal)
        if ambiguous.any():
            pos = int(ambiguous.to_numpy().argmax())
            raise InputDataError(
                f"{path} {_row_label(out, pos, kind)}: {col} = {text.iloc[pos]!r} could be "
                f"thousands or decimals ({int(ambiguous.sum())} such rows); set "
                "sources.register.decimal_separator to ',' (Danish Excel) or '.'"
            )
        if bad.any():
            pos = int(bad.to_numpy().argmax())
            locale = "" if decimal == "auto" else f" with decimal separator {decimal!r}"
            raise InputDataError(
                f"{path} {_row_label(out, pos, kind)}: {col} = {text.iloc[pos]!r} is not a "
                f"number{locale} ({int(bad.sum())} such rows); fix the value or leave it empty"
            )
        out[col] = num.astype("Float64")
    return out


def _points_from_wkt(df: pd.DataFrame, path: Path, kind: str) -> gpd.GeoSeries:
    wkt = df[BBR.POINT].astype("string").str.strip()
    wkt = wkt.where(wkt != "")
    values = wkt.astype(object).where(wkt.notna(), None).to_numpy()
    geoms = shapely.from_wkt(values, on_invalid="ignore")
    bad = wkt.notna().to_numpy() & pd.isna(geoms)
    if bad.any():
        pos = int(bad.argmax())
        raise InputDataError(
            f"{path} {_row_label(df, pos, kind)}: {BBR.POINT} = {wkt.iloc[pos]!r} is not WKT; "
            "write points as 'POINT (x y)'"
        )
    return gpd.GeoSeries(geoms, index=df.index)


def read_register(source: RegisterSource, crs: str) -> gpd.GeoDataFrame:
    """Read a BBR-schema register file; return its rows with point geometry in ``crs``.

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    InputDataError
        Unknown format, missing columns, a non-numeric area/year/floor count, no CRS.
    """
    frames = list(iter_register(source, crs, batch_rows=None))
    return frames[0] if len(frames) == 1 else pd.concat(frames)


def iter_register(
    source: RegisterSource, crs: str, batch_rows: int | None = 100_000
) -> Iterator[gpd.GeoDataFrame]:
    """The register's records in batches of at most ``batch_rows`` (None: one batch), in
    file order, each checked and in ``crs`` as :func:`read_register`'s. The index of a
    batch is the records' position in the file.

    A GeoParquet register is read batch by batch (memory bounded by ``batch_rows``); CSV
    and GeoPackage files are read whole, then cut.
    """
    path = check_input_file(Path(source.path), "register file", "sources.register.path")
    kind = _suffix(path)
    if kind in (".parquet", ".geoparquet"):
        offset = 0
        for frame in iter_geoparquet(path, batch_rows):
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield _records(frame, path, "parquet", source, crs)
        return
    try:
        if kind in (".csv", ".csv.gz"):
            check_text_file(path, "register file", "sources.register.path")
            sep = _separator(path)
            check_csv_header(path, sep, "register file")
            df = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""], sep=sep)
            kind = "csv"
        elif kind == ".gpkg":
            df = read_vector(path, source.layer, "register file", "sources.register.path")
        else:
            raise InputDataError(
                f"{path}: unknown register format {kind!r}; use .csv, .csv.gz, .parquet or .gpkg"
            )
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
            f"{exc.start}; cp1252/latin-1?); save it as UTF-8 (Excel: 'CSV UTF-8')"
        ) from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"{path}: cannot be read as a register ({exc})") from exc
    step = batch_rows or max(1, len(df))
    for start in range(0, max(1, len(df)), step):
        yield _records(df.iloc[start : start + step], path, kind, source, crs)


@dataclass(frozen=True)
class RegisterPart:
    """Records ``start`` to ``start + rows`` of a GeoParquet register, read and checked by
    the worker that computes them (:meth:`read`); see :func:`register_parts`."""

    part: ParquetPart
    source: RegisterSource
    crs: str

    @property
    def start(self) -> int:
        return self.part.start

    @property
    def rows(self) -> int:
        return self.part.rows

    def read(self) -> gpd.GeoDataFrame:
        """The records as :func:`iter_register` gives them."""
        return _records(self.part.read(), self.part.path, "parquet", self.source, self.crs)


def register_parts(
    source: RegisterSource, crs: str, batch_rows: int | None = 100_000
) -> list[RegisterPart] | None:
    """A GeoParquet register as parts of whole row groups (at most ``batch_rows`` records
    each) that the run's workers read themselves, so reading is spread over them and a
    Dask cluster's workers read their own records; None where :func:`iter_register` reads
    in the caller (other formats, one batch, row groups larger than ``batch_rows``)."""
    path = check_input_file(Path(source.path), "register file", "sources.register.path")
    if _suffix(path) not in (".parquet", ".geoparquet") or batch_rows is None:
        return None
    parts = geoparquet_parts(path, batch_rows)
    return None if parts is None else [RegisterPart(p, source, crs) for p in parts]


def register_size(source: RegisterSource) -> int | None:
    """The number of records of a GeoParquet register from its metadata (None for other
    formats, or when the file cannot be read: the reader then says why)."""
    path = Path(source.path)
    if _suffix(path) not in (".parquet", ".geoparquet") or not path.is_file():
        return None
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, ValueError):
        return None


def iter_register_ids(
    source: RegisterSource, crs: str, batch_rows: int | None = 100_000
) -> Iterator[pd.DataFrame]:
    """The register's id and status columns in batches, indexed by record position: all a
    pass over the whole register needs for the repeated-id rule. A GeoParquet register
    reads just these two columns; other formats are read as :func:`iter_register` reads
    them."""
    path = check_input_file(Path(source.path), "register file", "sources.register.path")
    if _suffix(path) not in (".parquet", ".geoparquet"):
        for frame in iter_register(source, crs, batch_rows):
            yield pd.DataFrame(frame[[BBR.ID, BBR.STATUS]])
        return
    try:
        f = pq.ParquetFile(path)
        names = f.schema_arrow.names
        if BBR.ID not in names or BBR.STATUS not in names:
            return  # iter_register names the missing columns
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: cannot be read as Parquet ({exc}); replace it") from exc
    columns = [BBR.ID, BBR.STATUS]
    for offset, batch in parquet_batches(path, f, batch_rows or 1_000_000, columns):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        yield frame


def _records(
    df: pd.DataFrame, path: Path, kind: str, source: RegisterSource, crs: str
) -> gpd.GeoDataFrame:
    """Check a batch of register rows and give them point (or footprint) geometry in ``crs``."""
    missing, hints = missing_columns(df.columns, BBR_REQUIRED)
    if missing:
        raise InputDataError(
            f"{path}: missing BBR columns {missing}"
            + (f" (misspelled? {hints})" if hints else "")
            + f"; a register needs the Datafordeler field names ({', '.join(BBR_REQUIRED)}): "
            "rename the columns"
        )
    crs_of_file = df.crs if isinstance(df, gpd.GeoDataFrame) else None
    df = _check_numeric(pd.DataFrame(df), path, kind, source.decimal_separator)

    if crs_of_file is not None or ("geometry" in df.columns and kind != "csv"):
        gdf = gpd.GeoDataFrame(df, geometry="geometry", crs=crs_of_file)
        if gdf.crs is None:
            if source.crs is None:
                raise InputDataError(
                    f"{path}: the geometry has no CRS; set sources.register.crs "
                    "(e.g. 'EPSG:25832') or write the file with its CRS"
                )
            gdf = gdf.set_crs(source.crs)
    else:
        if BBR.POINT not in df.columns:
            raise InputDataError(
                f"{path}: no geometry and no {BBR.POINT} column; add the building points"
            )
        geoms = _points_from_wkt(df, path, kind)
        file_crs = source.crs
        if file_crs is None and BBR.POINT_CRS in df.columns:
            codes = df[BBR.POINT_CRS].dropna().astype("string").str.replace(r"\.0$", "", regex=True)
            unknown = sorted(set(codes) - set(BBR_CRS_CODES))
            if unknown:
                raise InputDataError(
                    f"{path}: {BBR.POINT_CRS} has codes {unknown} that mfa cannot map to a CRS; "
                    "set sources.register.crs"
                )
            crss = {BBR_CRS_CODES[c] for c in codes}
            file_crs = crss.pop() if len(crss) == 1 else None
        if file_crs is None:
            raise InputDataError(
                f"{path}: the CRS of {BBR.POINT} is unknown; set sources.register.crs "
                "(e.g. 'EPSG:25832')"
            )
        gdf = gpd.GeoDataFrame(df, geometry=geoms.values, crs=file_crs)
    return gdf.to_crs(crs)


def buildings_from_register(
    source: RegisterSource, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Read a register and normalise it: canonical buildings and dropped records."""
    records = read_register(source, crs)
    return normalise_bbr(records, rules, source.existing_status)


#: Old-schema BBR (OIS ``BYG`` table, before 2019) → Datafordeler field names.
LEGACY_BBR_COLUMNS = {
    "BYG_ANVEND_KODE": BBR.USE,
    "OPFOERELSE_AAR": BBR.YEAR,
    "YDERVAEG_KODE": BBR.WALL,
    "BYG_ARL_SAML": BBR.GFA,
    "BYG_BEBYG_ARL": BBR.FOOTPRINT,
    "ETAGER_ANT": BBR.FLOORS,
    "ObjStatus": BBR.STATUS,
    "AsbestMateriale": BBR.ASBESTOS,
}


def read_legacy_register(path: Path) -> gpd.GeoDataFrame:
    """An old-schema BBR building table (GeoParquet) in Datafordeler field names.

    The old ``Bygning_id`` ({UUID}) becomes ``id_lokalId`` (lower case, no braces), the
    same UUID the building keeps in the new register. ``status`` keeps the old
    ``ObjStatus`` codes (1 = current record); numbers are checked as for new registers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: legacy register not found")
    gdf = gpd.read_parquet(path)
    if "Bygning_id" not in gdf.columns:
        raise InputDataError(f"{path}: no Bygning_id column; is this an old-schema BBR table?")
    out = gdf.rename(columns=LEGACY_BBR_COLUMNS)
    out[BBR.ID] = gdf["Bygning_id"].astype("string").str.strip("{}").str.lower()
    missing = [c for c in BBR_REQUIRED if c not in out.columns]
    if missing:
        raise InputDataError(f"{path}: missing old-schema BBR columns for {missing}")
    return gpd.GeoDataFrame(
        _check_numeric(pd.DataFrame(out), path, "parquet"), geometry="geometry", crs=gdf.crs
    )
