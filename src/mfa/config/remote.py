"""Remote sources: the keys a source table gives instead of a local path (see :mod:`mfa.pull`).

A register, footprint or district table may give ``url`` and ``protocol`` instead of
``path`` (``file`` for footprints). The pull step then fetches the source into the dated
snapshot store (:mod:`mfa.io.cache`) and the run reads the newest snapshot as if it were
the local file. Everything here is checked when the pipeline file is loaded, without any
network access.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_DOWNLOAD_MB",
    "PROTOCOLS",
    "RemoteFields",
    "api_key",
    "check_remote",
    "remote_query",
]

#: The protocols a remote source may name.
Protocol = Literal["http", "oapif", "wfs", "datafordeler-graphql", "datafordeler-files", "wcs"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

#: The default of a source's ``max_download_mb`` (MB, 10⁶ bytes): a bound on the disk a
#: pull may fill (downloads are streamed to disk, never held in memory). A national BBR
#: total of Datafordeler is a zip of some hundred MB holding a CSV of a few GB; a larger
#: delivery needs the setting raised. A setting, not a number from literature.
MAX_DOWNLOAD_MB = 5000.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteFields(BaseModel):
    """The keys of a remote source, mixed into the source tables of the pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str | None = Field(
        default=None,
        description="where the source is published (http/https); instead of the local path",
    )
    protocol: Protocol | None = Field(default=None, description="how to fetch `url`")
    collection: str | None = Field(
        default=None,
        description="oapif: collection id (e.g. 'pand'); wfs: typeNames; graphql: entity",
    )
    filters: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="query parameters sent with every request (oapif: bbox, crs, any "
        "queryable), or graphql `where` equality filters (e.g. kommunekode = '0326')",
    )
    page_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    sort_by: str | None = Field(
        default=None,
        description="wfs: the sort key that makes startIndex paging stable (e.g. 'gml_id ASC')",
    )
    id_field: str | None = Field(
        default=None,
        description="property that must be unique per feature (default: the feature `id`)",
    )
    required_fields: list[str] = Field(
        default_factory=list, description="properties every feature must carry"
    )
    max_drop: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.2,
        description="a snapshot with this share fewer rows than the previous one warns",
    )
    retries: Annotated[int, Field(ge=0, le=10)] = 4
    max_download_mb: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        default=MAX_DOWNLOAD_MB,
        description="http/datafordeler-files: the largest file a pull downloads, and the "
        "largest member it unpacks from a zip (MB, 10^6 bytes); a bound on disk use, "
        "checked against Content-Length before and the bytes received while downloading",
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    modified_field: str | None = Field(
        default=None,
        description="oapif: a property every change updates (e.g. a publication time): "
        "each pull first asks for numberMatched and its newest value (one request) and "
        "fetches the pages only when either moved",
    )
    events_url: str | None = Field(
        default=None,
        description="datafordeler-graphql/-files: the register's GraphQL address whose "
        "<Register>_Events give deletions and the changes since the last pull (e.g. "
        "https://graphql.datafordeler.dk/BBR/v2)",
    )
    api_key_env: str | None = Field(
        default=None,
        description="name of the environment variable that holds the API key (never the key)",
    )

    @property
    def remote(self) -> bool:
        """True when the source is pulled from ``url``."""
        return self.url is not None


def check_remote(
    source: RemoteFields,
    local_key: str,
    local_value: Any,
    required: bool = True,
    raster: bool = False,
) -> None:
    """Check the remote keys of ``source`` against its local path key; raise ValueError.

    ``local_key`` names the path key the remote keys replace (``path`` or ``file``);
    ``required``: one of the two must be given; ``raster``: a height raster, the only kind
    of source protocol ``wcs`` (a coverage) may fetch.
    """
    remote_keys = [
        k
        for k in (
            "protocol",
            "collection",
            "api_key_env",
            "id_field",
            "sort_by",
            "events_url",
            "modified_field",
        )
        if getattr(source, k) is not None
    ] + [k for k in ("filters", "required_fields") if getattr(source, k)]
    if source.url is None:
        if remote_keys:
            raise ValueError(f"{', '.join(remote_keys)} go with url (a remote source)")
        if local_value is None and required:
            raise ValueError(f"give {local_key} (a local file) or url and protocol")
        return
    if local_value is not None:
        raise ValueError(f"give {local_key} or url, not both")
    parts = urlsplit(source.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url must be an http(s) address, got {source.url!r}")
    if parts.username or parts.password:
        raise ValueError("url must not carry credentials; name a variable in api_key_env")
    if source.protocol is None:
        raise ValueError(f"a url needs protocol, one of {', '.join(PROTOCOLS)}")
    if source.protocol == "wcs" and not raster:
        raise ValueError(
            "protocol wcs fetches a height raster ([sources.heights] ndsm_url …); a table "
            "or footprints need oapif, wfs, http or datafordeler-*"
        )
    if raster and source.protocol not in ("http", "wcs"):
        raise ValueError('a raster url needs protocol "http" (a GeoTIFF file) or "wcs"')
    if source.protocol == "wcs":
        if not source.collection:
            raise ValueError("protocol wcs needs the coverage id (e.g. ndsm_coverage)")
        return
    paged = ("oapif", "wfs", "datafordeler-graphql", "datafordeler-files")
    if source.protocol in paged and not source.collection:
        what = {
            "oapif": "collection id",
            "wfs": "type name",
            "datafordeler-graphql": "entity",
            "datafordeler-files": "entity, e.g. Bygning",
        }
        raise ValueError(
            f"protocol {source.protocol} needs collection (the {what[source.protocol]})"
        )
    if source.protocol == "wfs" and not source.sort_by:
        raise ValueError(
            "protocol wfs pages with startIndex/count, which is only stable with a sort "
            "key: add sort_by (e.g. 'gml_id ASC')"
        )
    if source.protocol == "http" and (source.collection or source.filters):
        raise ValueError("protocol http fetches one file: collection and filters do not apply")
    if source.protocol == "datafordeler-files" and not source.filters.get("register"):
        raise ValueError(
            'protocol datafordeler-files needs filters.register (e.g. register = "BBR"); '
            "type (default Current) and format (default csv) choose among the files"
        )
    if source.modified_field is not None and source.protocol != "oapif":
        raise ValueError("modified_field goes with protocol oapif")
    if source.events_url is not None:
        if not str(source.protocol).startswith("datafordeler-"):
            raise ValueError("events_url goes with a datafordeler-graphql or -files source")
        ev = urlsplit(source.events_url)
        if ev.scheme not in ("http", "https") or not ev.netloc or ev.username or ev.password:
            raise ValueError("events_url must be an http(s) address without credentials")
    if source.api_key_env is not None and not _ENV_NAME.match(source.api_key_env):
        raise ValueError(
            f"api_key_env names an environment variable (such as DATAFORDELER_KEY), got "
            f"{source.api_key_env!r}; never put the key itself in a pipeline file"
        )


def remote_query(source: RemoteFields) -> dict[str, Any]:
    """What identifies a remote source's snapshot: url, protocol, collection, filters.

    Never the key (only the name of its variable).
    """
    return {
        "url": source.url,
        "protocol": source.protocol,
        "collection": source.collection,
        "filters": dict(sorted(source.filters.items())),
        "page_size": source.page_size,
        "sort_by": source.sort_by,
        "api_key_env": source.api_key_env,
        **({"events_url": source.events_url} if source.events_url else {}),
    }


def api_key(source: RemoteFields) -> str | None:
    """The API key from the environment variable named by ``api_key_env`` (None if unset)."""
    if source.api_key_env is None:
        return None
    return os.environ.get(source.api_key_env) or None
