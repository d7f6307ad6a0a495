"""/v1/datasets: upload a merchandiser's catalog (a CSV and a zip of images) as an import job, and
read what has been imported."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from typing import IO, Annotated

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import ConfigDict, Field

from api.auth import BEARER
from api.dataset_access import claim, may_read, require_readable, upload_prefix
from api.jobs_routes import submit
from api.services import services
from shared.errors import NotFound, ValidationFailed
from shared.schemas import (
    CatalogColumnsInput,
    ColumnName,
    DatasetDetail,
    DatasetList,
    DatasetName,
    DatasetSummary,
    ErrorResponse,
    ImportDatasetInput,
    ImportDatasetJobRequest,
    Job,
    StrictModel,
)

datasets_bp = APIBlueprint("datasets", __name__, url_prefix="/v1/datasets", abp_tags=[Tag(name="datasets")],
                       abp_security=BEARER,
                           abp_responses={"401": ErrorResponse, "404": ErrorResponse, "422": ErrorResponse})
MAX_CSV_BYTES = 200 * 1024 * 1024


class DatasetUpload(StrictModel):
    """multipart/form-data: the catalog CSV, a zip of `<id>.jpg` images, and which columns hold what."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # form fields arrive as text

    name: DatasetName
    csv_file: FileStorage = Field(description="one row per product")
    images: FileStorage = Field(description="zip of images named <id>.jpg (any folder inside)")
    id_column: ColumnName = "id"
    type_column: ColumnName = "articleType"
    colour_column: ColumnName = "baseColour"
    title_column: ColumnName = "productDisplayName"
    # multipart values arrive as text: "8" is read as 8 here (JSON bodies stay strict about types)
    min_class_count: Annotated[int, Field(ge=1, le=10_000)] = 8
    test_fraction: Annotated[float, Field(ge=0.01, le=0.5)] = 0.1


class DatasetPath(StrictModel):
    name: DatasetName


@datasets_bp.before_request
def _upload_limit() -> None:
    if request.method == "POST":
        request.max_content_length = services().settings.max_upload_bytes  # beyond the JSON limit


def _digest(*streams: IO[bytes]) -> str:
    sha = hashlib.sha256()
    for stream in streams:
        stream.seek(0)
        for chunk in iter(lambda s=stream: s.read(1 << 20), b""):
            sha.update(chunk)
        stream.seek(0)
    return sha.hexdigest()[:32]


def _check_csv(stream: IO[bytes], columns: CatalogColumnsInput) -> None:
    stream.seek(0)
    first_line = stream.readline(1 << 20)
    stream.seek(0)
    try:
        header = next(csv.reader([first_line.decode("utf-8-sig")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValidationFailed("the CSV header is not UTF-8 text", code="invalid_csv", field="csv_file") from exc
    for role in ("id", "type", "colour", "title"):
        name = getattr(columns, role)
        if name not in header:
            raise ValidationFailed(f"the CSV has no column {name!r}; its columns are {header[:50]}",
                                   code="unknown_column", field=f"{role}_column", details={"columns": header[:200]})


@datasets_bp.post("", responses={"202": Job, "200": Job, "413": ErrorResponse})
def upload_dataset(form: DatasetUpload) -> Response:
    """Upload a catalog: it is stored under uploads/ and imported by an `import_dataset` job (202 with
    the job). Rows with missing or unreadable images are counted in the job's output, not fatal."""
    claim(form.name, "name")  # before the upload is stored: another key's name is refused at once
    csv_stream, zip_stream = form.csv_file.stream, form.images.stream
    csv_stream.seek(0, io.SEEK_END)
    if csv_stream.tell() > MAX_CSV_BYTES:
        raise ValidationFailed(f"the CSV is larger than {MAX_CSV_BYTES} bytes", code="too_large", field="csv_file")
    columns = CatalogColumnsInput(id=form.id_column, type=form.type_column, colour=form.colour_column,
                                  title=form.title_column)
    _check_csv(csv_stream, columns)
    if not zipfile.is_zipfile(zip_stream):
        raise ValidationFailed("images must be a zip file", code="invalid_archive", field="images")
    # the caller's own folder; same files, same prefix: retries are idempotent
    prefix = f"{upload_prefix()}{_digest(csv_stream, zip_stream)}/"
    storage = services().storage
    storage.put_file(prefix + "catalog.csv", csv_stream, "text/csv")
    zip_stream.seek(0)
    storage.put_file(prefix + "images.zip", zip_stream, "application/zip")
    spec = ImportDatasetInput(name=form.name, format="catalog", source_prefix=prefix, columns=columns,
                              min_class_count=form.min_class_count, test_fraction=form.test_fraction)
    return submit(ImportDatasetJobRequest(type="import_dataset", input=spec))


def _summary(meta: dict, model: type[DatasetSummary] = DatasetSummary) -> dict:
    fields = {k: meta[k] for k in model.model_fields if k in meta and k != "classes"}
    classes = {k: len(v) for k, v in meta.get("vocabulary", {}).items()}
    return model(**fields, classes=classes).model_dump(mode="json")


@datasets_bp.get("", responses={"200": DatasetList})
def list_datasets() -> Response:
    """Imported datasets the caller may use (its own and the shared demo ones; an admin: all) with
    their sizes and class counts."""
    storage = services().storage
    return jsonify(datasets=[_summary(storage.get_json(f"datasets/{n}/meta.json")) for n in imported_names()
                             if may_read(n)])


def imported_names() -> list[str]:
    """Datasets that finished importing (meta.json is their last write)."""
    return sorted({key.split("/")[1] for key in services().storage.list("datasets/") if key.endswith("/meta.json")})


@datasets_bp.get("/<name>", responses={"200": DatasetDetail})
def get_dataset(path: DatasetPath) -> Response:
    """One dataset: vocabulary with training counts per value, skipped rows by reason, and the classes
    below the training minimum."""
    storage = services().storage
    key = f"datasets/{path.name}/meta.json"
    require_readable(path.name, "name")
    if not storage.exists(key):
        raise NotFound(f"no dataset {path.name}", field="name")
    return jsonify(_summary(storage.get_json(key), DatasetDetail))
