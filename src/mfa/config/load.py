"""Reading a pipeline file: TOML, paths resolved against the file, validation with errors
that name the file, the key and the fix; the config digest."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from mfa.config.models import Pipeline
from mfa.errors import ConfigError, InputDataError, InputNotFoundError
from mfa.io.files import path_problem


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the table at ``loc`` (without the offending key itself)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next(
            (f for k, f in current.model_fields.items() if (f.alias or k) == str(part)), None
        )
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None) or (ann,)
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or k for k, f in current.model_fields.items() if k != "source_file"]
    return []


def _explain(file: Path, exc: pydantic.ValidationError) -> ConfigError:
    errors = exc.errors()
    # a typo shows up twice (an unknown key and a missing one): report it once
    suggested: set[tuple[Any, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(Pipeline, loc), n=1)
            if close:
                suggested.add((*loc[:-1], close[0]))
    lines = []
    for err in errors:
        loc = tuple(err["loc"])
        key = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(Pipeline, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it"
            lines.append(f"{file}: unknown key '{key}': {fix} (allowed here: {', '.join(allowed)})")
        elif err["type"] == "missing":
            if loc in suggested:
                continue
            lines.append(f"{file}: missing key '{key}': add it (see pipelines/README.md)")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{file}: key '{key}': {msg}{shown}")
    return ConfigError("\n".join(lines))


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make every known path key absolute, relative to the pipeline file's folder."""
    path_keys = {
        ("sources", "register", "path"),
        ("sources", "units", "path"),
        ("sources", "footprints", "osm_file"),
        ("sources", "footprints", "file"),
        ("sources", "heights", "ndsm"),
        ("sources", "heights", "dsm"),
        ("sources", "heights", "dtm"),
        ("sources", "districts", "path"),
        ("archetypes", "dir"),
        ("intensities", "table"),
        ("intensities", "vocabulary"),
        ("output", "dir"),
        ("cache", "dir"),
        ("dynamics", "lifetimes"),
        ("match", "demand"),
        ("match", "hubs"),
        ("match", "network"),
        ("match", "output"),
        ("match", "config"),
        ("map", "roads"),
        ("map", "water"),
    }
    for table, key in (("intensities", "overrides"), ("match", "supply")):
        listed = data.get(table, {}).get(key) if isinstance(data.get(table), dict) else None
        if isinstance(listed, list):
            data[table][key] = [
                str(_absolute(base / o)) if isinstance(o, str) else o for o in listed
            ]
    for keys in path_keys:
        node: Any = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = str(_absolute(base / node[keys[-1]]))
    return data


def _absolute(path: Path) -> Path:
    """``path`` resolved; a symlink loop or an over-long name is left for the file checks
    to name (resolving it raises)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def _check_files(p: Pipeline, file: Path) -> None:
    checks: list[tuple[str, Path | None, bool]] = [
        ("sources.register.path", p.sources.register_.path if p.sources.register_ else None, False),
        ("sources.units.path", p.sources.units.path if p.sources.units else None, False),
        (
            "sources.footprints.osm_file",
            p.sources.footprints.osm_file if p.sources.footprints else None,
            False,
        ),
        (
            "sources.districts.path",
            p.sources.districts.path if p.sources.districts else None,
            False,
        ),
        *[
            (f"sources.heights.{k}", getattr(p.sources.heights, k), False)
            for k in ("ndsm", "dsm", "dtm")
            if p.sources.heights is not None
        ],
        ("archetypes.dir", p.archetypes.dir, True),
        ("dynamics.lifetimes", p.dynamics.lifetimes if p.dynamics else None, False),
        ("intensities.table", p.intensities.table, False),
        ("intensities.vocabulary", p.intensities.vocabulary, False),
        *[(f"intensities.overrides[{i}]", o, False) for i, o in enumerate(p.intensities.overrides)],
        *[(key, f, False) for key, f in (p.match.files() if p.match else [])],
        *[(f"map.{k}", getattr(p.map, k), False) for k in ("roads", "water") if p.map],
    ]
    for key, path, is_dir in checks:
        if path is None:
            continue
        problem = None if is_dir else path_problem(path)
        if problem == "is a folder, not a file":
            raise InputNotFoundError(
                f"{file}: key '{key}': {path} is a folder, not a file; give a file"
            )
        if problem not in (None, "does not exist"):
            raise InputDataError(f"{file}: key '{key}': {path} {problem}; give a regular file")
        if not (path.is_dir() if is_dir else path.is_file()):
            kind = "folder" if is_dir else "file"
            raise InputNotFoundError(
                f"{file}: key '{key}': {kind} {path} does not exist; fix the path "
                "(relative paths are relative to the pipeline file)"
            )
    _check_map_layers(p, file)


def _check_map_layers(p: Pipeline, file: Path) -> None:
    """``[map]`` roads and water: readable by content, lines and polygons, with a CRS
    (their metadata only)."""
    from mfa.io.maplayers import check_map_layer

    for kind in ("roads", "water"):
        path = getattr(p.map, kind) if p.map else None
        if path is None:
            continue
        check_map_layer(path, kind, f"key 'map.{kind}' in {file}")


def load_pipeline(path: str | Path, as_of: str | None = None) -> Pipeline:
    """Read and validate a pipeline file; no input data is read.

    Pulled sources read their newest snapshot, or with ``as_of`` (``YYYY-MM-DD``) the
    newest published on or before that day (:func:`mfa.pull.resolve_pulled`).

    Raises
    ------
    ConfigError
        The file is not valid TOML, has unknown keys, wrong types or invalid values.
    InputNotFoundError
        The pipeline file or a file it names does not exist.
    """
    file = Path(path)
    problem = path_problem(file)
    if problem not in (None, "does not exist"):
        raise InputDataError(f"{file}: the pipeline file {problem}; pass a regular file")
    if not file.is_file():
        raise InputNotFoundError(
            f"{file}: pipeline file not found; pass the path of a file in pipelines/, "
            "e.g. pipelines/dk-sample.toml"
        )
    file = file.resolve()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8-sig"))  # Notepad writes a BOM
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}; fix the syntax at that line") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc}); save it as UTF-8") from exc
    data = _resolve_paths(data, file.parent)
    try:
        pipeline = Pipeline.model_validate({**data, "source_file": file})
    except pydantic.ValidationError as exc:
        raise _explain(file, exc) from None
    _check_files(pipeline, file)
    from mfa.pull import resolve_pulled  # a pulled source reads its newest snapshot

    pipeline = resolve_pulled(pipeline, as_of)
    fp = pipeline.sources.footprints
    if as_of is not None and fp is not None and fp.online:  # a pinned OSM query: its day
        from mfa.config.sources import pinned_query_date

        pinned_query_date(fp, as_of)
    _check_sizes(pipeline, file)
    return pipeline


#: Inputs read in batches or windows, never whole: no size bound applies.
_STREAMED = (".parquet", ".geoparquet", ".tif", ".tiff", ".vrt")


def streamed_footprints(p: Pipeline) -> Path | None:
    """The footprint file a run reads in batches (:class:`mfa.io.footprints.FootprintBatches`:
    a footprint file, pulled or local, without a register to conflate with), else None."""
    fp = p.sources.footprints
    if p.sources.register_ is None and fp is not None and fp.schema_ != "overture":
        return fp.file
    return None


def _check_sizes(p: Pipeline, file: Path) -> None:
    """Refuse, before any data is read, an input mfa would read whole that is larger than
    ``[compute] max_whole_file_mb`` (a GeoParquet register, a footprint file read in
    batches and rasters are streamed)."""
    from mfa.io.files import check_whole_size

    streamed = streamed_footprints(p)
    for f in p.input_files():
        if f.path.name.lower().endswith(_STREAMED) or f.path == streamed:
            continue
        check_whole_size(
            f.path, p.compute.max_whole_file_mb, f"{file}: [compute] max_whole_file_mb", f.role
        )


def config_digest(pipeline: Pipeline, extra_files: list[Path] | None = None) -> str:
    """sha256 over the validated pipeline (paths included) and the content of config files."""
    h = hashlib.sha256()
    h.update(json.dumps(pipeline.model_dump(mode="json"), sort_keys=True).encode())
    for f in sorted(extra_files or []):
        h.update(str(f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
