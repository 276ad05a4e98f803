"""Read the model knowledge in ``config/``: materials, archetype rules, intensity tables."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules, BagRules, OsmNeighbours
from mfa.buildings.quality import Limits
from mfa.errors import ConfigError, InputDataError, InputNotFoundError
from mfa.schema import FUNCTIONS, STRUCTURES
from mfa.stocks.intensity import check_intensity_table

if TYPE_CHECKING:  # scipy (behind mfa.dynamics) costs ~1 s to import; only lifetimes need it
    from mfa.dynamics import Lifetime

__all__ = ["load_archetype_rules", "load_intensity_table", "load_materials"]


def _toml(path: Path) -> dict:
    if not path.is_file():
        raise InputNotFoundError(f"{path}: file not found; restore it from the repository")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _sniff_config_csv(path: Path) -> None:
    """A config CSV that is text with one header per column (safeopen's checks)."""
    from mfa.io.safeopen import check_csv_header, check_text_file

    try:
        check_text_file(path, "config table", "the config")
        check_csv_header(path, ",", "config table")
    except InputDataError as exc:
        raise ConfigError(str(exc)) from None


def _csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputNotFoundError(f"{path}: file not found; restore it from the repository")
    _sniff_config_csv(path)
    try:
        return pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid CSV table ({exc}); fix that line") from exc


def load_materials(path: Path) -> list[str]:
    """Material ids from a vocabulary TOML (one table per material), in file order."""
    data = _toml(path)
    if not data:
        raise ConfigError(f"{path}: no materials defined; add a [<material>] table")
    return list(data)


def _check_codes(df: pd.DataFrame, path: Path, col: str, allowed: tuple[str, ...]) -> None:
    bad = df[col].notna() & ~df[col].isin(allowed)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ConfigError(
            f"{path} line {i + 2}: {col} {df[col].iloc[i]!r} is not one of {allowed}; fix it"
        )


def _mapping(
    df: pd.DataFrame, path: Path, key: str, value: str, allowed: tuple[str, ...], excl: str | None
) -> tuple[pd.Series, pd.Series]:
    for c in [key, value] + ([excl] if excl else []):
        if c not in df.columns:
            raise ConfigError(f"{path}: missing column {c!r}; see config/archetypes/README.md")
    dup = df[key].duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise ConfigError(f"{path} line {i + 2}: {key} {df[key].iloc[i]!r} is listed twice")
    _check_codes(df, path, value, allowed)
    if excl:
        both = df[value].notna() & df[excl].notna()
        neither = df[value].isna() & df[excl].isna()
        for mask, what in ((both, "both a"), (neither, "neither a")):
            if mask.any():
                i = int(mask.to_numpy().argmax())
                raise ConfigError(
                    f"{path} line {i + 2}: {key} {df[key].iloc[i]!r} has {what} {value} and "
                    f"an {excl}; give exactly one"
                )
    keys = df[key].str.strip()
    mapped = pd.Series(df[value].to_numpy(), index=keys).dropna().astype("string")
    excluded = (
        pd.Series(df[excl].to_numpy(), index=keys).dropna().astype("string")
        if excl
        else pd.Series(dtype="string")
    )
    return mapped, excluded


def _with_profile(defaults: dict[str, Any], folder: Path, profile: str) -> tuple[dict, Path]:
    """``defaults.toml`` with the tables of ``profile_<profile>.toml`` laid over it."""
    path = folder / f"profile_{profile}.toml"
    if not path.is_file():
        known = sorted(f.stem.removeprefix("profile_") for f in folder.glob("profile_*.toml"))
        raise ConfigError(
            f"{path}: archetypes.profile {profile!r} not found; profiles in {folder}: "
            f"{', '.join(known) or 'none'}"
        )
    overlay = _toml(path)
    allowed = {"structure_by_function", "floors_by_function", "osm", "heights"}
    unknown = set(overlay) - allowed - {"profile", "rasmi_region", "auto"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; a profile may set "
            f"{', '.join(sorted(allowed))}"
        )
    merged = dict(defaults)
    for table in allowed & set(overlay):
        merged[table] = {**defaults.get(table, {}), **overlay[table]}
    return merged, path


#: What a landuse polygon may give its generic buildings: a function, or "residential"
#: (single- or multi-family by footprint, as ``building=residential``).
LANDUSE_FUNCTIONS = (*FUNCTIONS, "residential")


def load_archetype_rules(folder: Path, profile: str | None = None) -> ArchetypeRules:
    """Read the archetype rule tables of ``folder`` (see config/archetypes/README.md),
    with the regional ``profile`` (``profile_<name>.toml``) laid over ``defaults.toml``."""
    folder = Path(folder)
    files = {
        "use": folder / "bbr_use_codes.csv",
        "wall": folder / "bbr_wall_codes.csv",
        "osm": folder / "osm_building_tags.csv",
        "osm_mat": folder / "osm_materials.csv",
        "hazard": folder / "bbr_hazard_codes.csv",
        "height_tags": folder / "osm_height_tags.csv",
        "landuse": folder / "osm_landuse.csv",
        "height_classes": folder / "height_classes.csv",
        "bbr_height": folder / "bbr_height_classes.csv",
        "bag_use": folder / "bag_use_codes.csv",
        "bag_height": folder / "bag_height_classes.csv",
        "bag_pand": folder / "bag_pand_status.csv",
        "bag_unit": folder / "bag_unit_status.csv",
        "defaults": folder / "defaults.toml",
    }
    overture = folder / "overture_building_classes.csv"  # optional: footprints schema overture
    use_f, use_x = _mapping(
        _csv(files["use"]), files["use"], "code", "function", FUNCTIONS, "excluded_reason"
    )
    wall_s, _ = _mapping(_csv(files["wall"]), files["wall"], "code", "structure", STRUCTURES, None)
    osm_f, osm_x = _mapping(
        _csv(files["osm"]), files["osm"], "tag", "function", FUNCTIONS, "excluded_reason"
    )
    mat_s, _ = _mapping(
        _csv(files["osm_mat"]), files["osm_mat"], "tag", "structure", STRUCTURES, None
    )
    hazard = _csv(files["hazard"])
    for col in ("code", "hazard"):
        if col not in hazard.columns or hazard[col].isna().any():
            raise ConfigError(f"{files['hazard']}: column {col!r} must be filled on every line")
    bbr_hazard = pd.Series(hazard["hazard"].to_numpy(), index=hazard["code"].str.strip())
    d = _toml(files["defaults"])
    if profile is not None:
        d, files["profile"] = _with_profile(d, folder, profile)
    try:
        structure_by_function = {f: str(d["structure_by_function"][f]) for f in FUNCTIONS}
        floors_by_function = {f: float(d["floors_by_function"][f]) for f in FUNCTIONS}
        unknown = str(d["osm"]["unknown_function"])
    except KeyError as exc:
        raise ConfigError(
            f"{files['defaults']}: missing key {exc}; every function ({', '.join(FUNCTIONS)}) "
            "needs a structure and a floor count, and [osm] an unknown_function"
        ) from exc
    if not set(structure_by_function.values()) <= set(STRUCTURES):
        raise ConfigError(
            f"{files['defaults']}: structure_by_function values must be in {STRUCTURES}"
        )
    if unknown not in FUNCTIONS:
        raise ConfigError(f"{files['defaults']}: osm.unknown_function must be one of {FUNCTIONS}")
    if any(v <= 0 for v in floors_by_function.values()):
        raise ConfigError(f"{files['defaults']}: floors_by_function values must be > 0")
    try:
        storey = float(d["heights"]["storey_height_m"])
        by_function = {
            f: float(v) for f, v in d["heights"].get("storey_height_by_function", {}).items()
        }
        limits = Limits(**d["limits"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{files['defaults']}: [heights] storey_height_m and a [limits] table with "
            f"{', '.join(Limits.__dataclass_fields__)} are needed ({exc})"
        ) from exc
    for name, table in (
        ("[heights] storey_height_by_function", by_function),
        ("[limits] max_floors_from_height", limits.max_floors_from_height),
    ):
        bad = [f for f, v in table.items() if f not in FUNCTIONS or not float(v) > 0]
        if bad:
            raise ConfigError(
                f"{files['defaults']}: {name}: {bad[0]!r} = {table[bad[0]]!r}; keys must be "
                f"functions ({', '.join(FUNCTIONS)}) and values > 0"
            )
    neighbours = _osm_neighbours(d.get("osm", {}), files["defaults"])
    height_tags, height_classes = _height_tables(files["height_tags"], files["height_classes"])
    bbr_height = _use_height_classes(
        files["bbr_height"], height_classes, set(use_f.index) | set(use_x.index), "BBR", "bbr"
    )
    landuse, _ = _mapping(
        _csv(files["landuse"]), files["landuse"], "landuse", "function", LANDUSE_FUNCTIONS, None
    )
    bag = _bag_rules(files, d.get("bag", {}))
    bag_height = _use_height_classes(
        files["bag_height"],
        height_classes,
        set(bag.use_function.index) | set(bag.use_excluded.index),
        "BAG",
        "bag",
    )
    bag = dataclasses.replace(bag, height_class=bag_height)
    over_f, over_x = pd.Series(dtype="string"), pd.Series(dtype="string")
    if overture.is_file():
        files["overture"] = overture
        table = _csv(overture)
        over_f, over_x = _mapping(
            table, overture, "value", "function", FUNCTIONS, "excluded_reason"
        )
        kinds = {"class", "subtype", "class subtype"}
        bad = ~table.get("kind", pd.Series(dtype=object)).isin(kinds)
        if "kind" not in table.columns or bad.any():
            i = int(bad.to_numpy().argmax()) if bad.any() else -1
            raise ConfigError(
                f"{overture} line {i + 2}: kind must be one of {', '.join(sorted(kinds))}; fix it"
            )
    return ArchetypeRules(
        bbr_use_function=use_f,
        bbr_use_excluded=use_x,
        bbr_wall_structure=wall_s,
        osm_building_function=osm_f,
        osm_building_excluded=osm_x,
        osm_material_structure=mat_s,
        bbr_hazard=bbr_hazard.astype("string"),
        structure_by_function=structure_by_function,
        floors_by_function=floors_by_function,
        osm_unknown_function=unknown,
        storey_height_m=storey,
        storey_height_by_function=by_function,
        limits=limits,
        osm_neighbours=neighbours,
        height_tags=height_tags,
        height_classes=height_classes,
        bbr_height_class=bbr_height,
        osm_landuse_function=landuse,
        bag=bag,
        overture_function=over_f,
        overture_excluded=over_x,
        files=tuple(str(p) for p in files.values()),
    )


def _height_tables(tags_path: Path, classes_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The OSM tag → height class table (in order) and the numbers of each class."""
    classes = _csv(classes_path)
    need = ("height_class", "storey_height_m", "max_floors_from_height", "source")
    for c in need:
        if c not in classes.columns:
            raise ConfigError(
                f"{classes_path}: missing column {c!r}; see config/archetypes/README.md"
            )
    dup = classes["height_class"].duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise ConfigError(f"{classes_path} line {i + 2}: class listed twice; list it once")
    numbers = {}
    for c in ("storey_height_m", "max_floors_from_height"):
        v = pd.to_numeric(classes[c], errors="coerce")
        bad = (classes[c].notna() & v.isna()) | (v < 0) | ((c == "storey_height_m") & (v == 0))
        bad |= classes["source"].isna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise ConfigError(
                f"{classes_path} line {i + 2}: {c} must be a number > 0 (a floor limit may be "
                "0: never from the height) and every class needs a source; fix it"
            )
        numbers[c] = v.astype(float).to_numpy()
    table = pd.DataFrame(numbers, index=classes["height_class"].str.strip().to_numpy())
    tags = _csv(tags_path)
    for c in ("key", "value", "height_class"):
        if c not in tags.columns or tags[c].isna().any():
            raise ConfigError(f"{tags_path}: column {c!r} must be filled on every line")
    unknown = ~tags["height_class"].str.strip().isin(table.index)
    if unknown.any():
        i = int(unknown.to_numpy().argmax())
        raise ConfigError(
            f"{tags_path} line {i + 2}: height_class {tags['height_class'].iloc[i]!r} is not "
            f"in {classes_path.name}; add it there"
        )
    tags = pd.DataFrame(
        {c: tags[c].str.strip().str.lower() for c in ("key", "value")}
        | {"height_class": tags["height_class"].str.strip()}
    )
    return tags, table


def _use_height_classes(
    path: Path, classes: pd.DataFrame, known: set[str], register: str, prefix: str
) -> pd.Series:
    """A register's use code → height class (``<prefix>_height_classes.csv``): every code
    one of the register's use codes (``<prefix>_use_codes.csv``), every class one of
    ``height_classes.csv``."""
    table = _csv(path)
    mapped, _ = _mapping(table, path, "code", "height_class", tuple(classes.index), None)
    unknown = ~table["code"].str.strip().isin(known)
    if unknown.any():
        i = int(unknown.to_numpy().argmax())
        raise ConfigError(
            f"{path} line {i + 2}: code {table['code'].iloc[i]!r} is not a {register} use "
            f"code of {prefix}_use_codes.csv; fix the code or add it there"
        )
    return mapped


def _osm_neighbours(osm: dict[str, Any], path: Path) -> OsmNeighbours:
    """The ``[osm]`` rules for generic tags; keys left out keep their defaults."""
    keys = (
        "generic_tags",
        "neighbour_radius_m",
        "neighbour_min_count",
        "max_house_footprint_m2",
        "max_house_floors",
    )
    unknown = set(osm) - {"unknown_function", *keys}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [osm]: {', '.join(sorted(unknown))}")
    base = OsmNeighbours()
    try:
        rules = OsmNeighbours(
            generic_tags=tuple(str(t) for t in osm.get("generic_tags", base.generic_tags)),
            radius_m=float(osm.get("neighbour_radius_m", base.radius_m)),
            min_count=int(osm.get("neighbour_min_count", base.min_count)),
            max_house_footprint_m2=float(
                osm.get("max_house_footprint_m2", base.max_house_footprint_m2)
            ),
            max_house_floors=float(osm.get("max_house_floors", base.max_house_floors)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: [osm] values must be numbers and a list of tags ({exc})"
        ) from exc
    positive = (rules.radius_m, rules.max_house_footprint_m2, rules.max_house_floors)
    if min(positive) <= 0 or rules.min_count < 1:
        raise ConfigError(
            f"{path}: [osm] neighbour_radius_m, max_house_footprint_m2 and max_house_floors "
            "must be > 0 and "
            "neighbour_min_count >= 1"
        )
    return rules


def _bag_rules(files: dict[str, Path], table: dict[str, Any]) -> BagRules:
    """The BAG tables (uses, pand and unit statuses) and ``[bag]`` of ``defaults.toml``."""
    use_f, use_x = _mapping(
        _csv(files["bag_use"]), files["bag_use"], "code", "function", FUNCTIONS, "excluded_reason"
    )
    kept: dict[str, tuple[pd.Series, pd.Series]] = {}
    for name in ("bag_pand", "bag_unit"):
        yes, reason = _mapping(
            _csv(files[name]), files[name], "status", "kept", ("yes",), "excluded_reason"
        )
        kept[name] = (pd.Series(yes.index, dtype="string"), reason)
    path = files["defaults"]
    known = {
        "gross_per_usable",
        "max_single_family_dwellings",
        "residential_min_share",
        "no_units_function",
    }
    if set(table) != known:
        raise ConfigError(
            f"{path}: [bag] needs exactly {', '.join(sorted(known))} (missing: "
            f"{', '.join(sorted(known - set(table))) or 'none'}; unknown: "
            f"{', '.join(sorted(set(table) - known)) or 'none'})"
        )
    try:
        rules = BagRules(
            use_function=use_f,
            use_excluded=use_x,
            pand_kept=kept["bag_pand"][0],
            pand_excluded=kept["bag_pand"][1],
            unit_kept=kept["bag_unit"][0],
            unit_excluded=kept["bag_unit"][1],
            gross_per_usable=float(table["gross_per_usable"]),
            max_single_family_dwellings=int(table["max_single_family_dwellings"]),
            residential_min_share=float(table["residential_min_share"]),
            no_units_function=str(table["no_units_function"]),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: [bag] values must be numbers ({exc})") from exc
    if not 0.5 <= rules.gross_per_usable <= 3 or not 0 < rules.residential_min_share <= 1:
        raise ConfigError(
            f"{path}: [bag] gross_per_usable must be in 0.5…3 and residential_min_share in (0, 1]"
        )
    if rules.max_single_family_dwellings < 1 or rules.no_units_function not in FUNCTIONS:
        raise ConfigError(
            f"{path}: [bag] max_single_family_dwellings must be >= 1 and no_units_function "
            f"one of {FUNCTIONS}"
        )
    return rules


def _read_intensities(path: Path, materials: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: intensity table not found; fix [intensities]")
    dtypes = dict.fromkeys(
        ["region", "function", "structure", "material", "unit", "source"], "string"
    )
    _sniff_config_csv(path)
    try:
        table = pd.read_csv(path, dtype=dtypes)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid intensity table ({exc})") from exc
    check_intensity_table(table, str(path), materials)
    return table


def load_intensity_table(
    path: Path, materials: list[str], overrides: list[Path] | None = None
) -> pd.DataFrame:
    """Read and check a long-format intensity table (kg/m²) and apply override tables.

    Rows of an override table replace the rows with the same region, function, structure
    and material, or add new ones; later overrides win. Each table is checked on its own.
    """
    tables = [_read_intensities(path, materials)]
    tables += [_read_intensities(o, materials) for o in overrides or []]
    if len(tables) == 1:
        return tables[0]
    key = ["region", "function", "structure", "material"]
    merged = pd.concat(tables, ignore_index=True).drop_duplicates(key, keep="last")
    return merged.sort_values(key, kind="stable").reset_index(drop=True)


def load_lifetimes(path: Path) -> dict[str, Lifetime]:
    """Lifetime per building function from a TOML table (see config/lifetimes.toml)."""
    from mfa.dynamics import LIFETIME_KINDS, lifetime

    data = _toml(Path(path))
    out: dict[str, Lifetime] = {}
    for f in FUNCTIONS:
        if f not in data:
            raise ConfigError(f"{path}: no [{f}] table; every function needs a lifetime")
        entry = dict(data[f])
        kind = entry.pop("kind", None)
        if kind not in LIFETIME_KINDS:
            raise ConfigError(f"{path}: [{f}] kind must be one of {list(LIFETIME_KINDS)}")
        try:
            out[f] = lifetime(kind, **{k: float(v) for k, v in entry.items()})
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: [{f}]: {exc}") from exc
    return out
