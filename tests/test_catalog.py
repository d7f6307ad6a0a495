"""The catalog importer as plain functions: letterboxing, bad rows, splits, column names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import ValidationFailed
from worker.datasets import catalog
from worker.datasets.catalog import Columns, ImageSource, ImportOptions, import_catalog, letterbox


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (60, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_catalog(tmp_path: Path, rows: list[str], images: dict[str, bytes], header: str) -> tuple[Path, Path]:
    csv_path = tmp_path / "styles.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    zip_path = tmp_path / "images.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in images.items():
            zf.writestr(f"images/{name}.jpg", data)
    return csv_path, zip_path


def test_letterbox_fits_a_portrait_photo_on_white() -> None:
    out = letterbox(jpeg((200, 0, 0)), 64)  # 60 x 80 -> 48 x 64 centred
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:, :7] == 255).all() and (out[:, -7:] == 255).all()  # white bars left and right
    assert abs(int(out[32, 32, 0]) - 200) < 8 and out[32, 32, 1] < 10  # the photo in the middle
    wide = letterbox(jpeg((0, 0, 200), (120, 60)), 64)  # landscape: bars top and bottom
    assert (wide[:14] == 255).all() and wide[32, 32, 2] > 190


def test_bad_rows_are_counted_and_rare_classes_listed(tmp_path: Path) -> None:
    header = "id,masterCategory,articleType,baseColour,productDisplayName"
    rows, images = [], {}
    for i in range(30):
        rows.append(f"{i},Apparel,Tshirts,{'Black' if i % 2 else 'White'},Tee {i}")
        images[str(i)] = jpeg((i * 8, 0, 0))
    for i in range(100, 103):  # a rare class below the minimum
        rows.append(f"{i},Apparel,Shrug,Pink,Shrug {i}")
        images[str(i)] = jpeg((0, 200, 0))
    rows += ["200,Apparel,Tshirts,Blue,No image",  # missing image
             "201,Apparel,Tshirts,Blue,Broken image",  # unreadable
             "202,Apparel,Tshirts,NA,No colour",  # the literal NA
             "203,Personal Care,Lipstick,Red,Out of scope",
             "5,Apparel,Tshirts,Black,Duplicate id",
             ",Apparel,Tshirts,Black,No id"]
    images["201"] = b"\xff\xd8 not really a jpeg"
    images["203"] = jpeg((255, 0, 0))
    csv_path, zip_path = write_catalog(tmp_path, rows, images, header)
    dataset, report = import_catalog("t", csv_path, ImageSource(zip_path), ImportOptions(min_class_count=5),
                                     lambda *_: None)
    assert report["skipped"] == {"missing_image": 1, "unreadable_image": 1, "missing_type_or_colour": 1,
                                 "outside_scope": 1, "duplicate_id": 1, "missing_id": 1}
    assert report["below_minimum"]["classes"] == {"Shrug": 3}
    assert dataset.vocabulary == {"articleType": ["Tshirts"], "baseColour": ["Black", "White"]}
    assert len(dataset.train) + len(dataset.test) == 30 and len(dataset.test) == 3
    assert dataset.train.images.shape[1:] == (64, 64, 3)
    assert set(dataset.train.ids) | set(dataset.test.ids) == {str(i) for i in range(30)}


def test_split_is_deterministic_and_independent_of_row_order(tmp_path: Path) -> None:
    header = "id,masterCategory,articleType,baseColour,productDisplayName"
    rows = [f"{i},Apparel,{'Tops' if i % 3 else 'Skirts'},Red,Item {i}" for i in range(60)]
    images = {str(i): jpeg((i, i, i)) for i in range(60)}
    first = write_catalog(tmp_path, rows, images, header)
    (tmp_path / "b").mkdir()
    second = write_catalog(tmp_path / "b", list(reversed(rows)), images, header)
    tests = []
    for csv_path, zip_path in (first, second):
        dataset, _ = import_catalog("t", csv_path, ImageSource(zip_path), ImportOptions(), lambda *_: None)
        tests.append(set(dataset.test.ids))
        per_class = np.bincount(dataset.test.conditions["articleType"])
        assert per_class.tolist() == [2, 4]  # 10 % of each class: Skirts 20, Tops 40
    assert tests[0] == tests[1]


def test_own_column_names_and_a_folder_of_images(tmp_path: Path) -> None:
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    rows = []
    for i in range(12):
        (folder / f"sku{i}.jpg").write_bytes(jpeg((0, 0, 250)))
        rows.append(f"sku{i},Jumpsuit,Navy Blue,Jumpsuit {i}")
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("sku,kind,colour,title\n" + "\n".join(rows))
    columns = Columns(id="sku", type="kind", colour="colour", title="title", group=None)
    dataset, report = import_catalog("mine", csv_path, ImageSource(tmp_path / "photos"),
                                     ImportOptions(columns=columns, groups=None), lambda *_: None)
    assert dataset.vocabulary == {"articleType": ["Jumpsuit"], "baseColour": ["Navy Blue"]}
    assert report["index"][0]["title"].startswith("Jumpsuit")
    with pytest.raises(ValidationFailed) as error:
        import_catalog("mine", csv_path, ImageSource(tmp_path / "photos"),
                       ImportOptions(columns=Columns(id="sku", type="category", group=None), groups=None),
                       lambda *_: None)
    assert error.value.field == "columns.type" and "category" in error.value.message


def test_not_a_zip_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "images.zip"
    bogus.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValidationFailed) as error:
        ImageSource(bogus)
    assert error.value.code == "invalid_archive"


def test_demo_catalog_slice(catalog_available: Path) -> None:
    folder = catalog_available / catalog.DEMO_FOLDER
    options = ImportOptions(classes=("Jumpsuit", "Rompers", "Shrug"))
    dataset, report = import_catalog("demo", folder / "styles.csv", ImageSource(folder / "images.zip"), options,
                                     lambda *_: None)
    counts = dict(zip(dataset.vocabulary["articleType"], np.bincount(np.concatenate(
        [dataset.train.conditions["articleType"], dataset.test.conditions["articleType"]])).tolist(), strict=True))
    assert counts == {"Jumpsuit": 16, "Rompers": 12}  # the rare classes stay in
    assert report["below_minimum"]["classes"] == {"Shrug": 6}  # listed, not silently dropped
    assert np.bincount(dataset.test.conditions["articleType"]).tolist() == [1, 1]


def _lie_about_size(data: bytes, declared: int) -> bytes:
    """The archive with every member's uncompressed size, local and central, rewritten to `declared`."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = out.find(signature)
        while at != -1:
            out[at + offset:at + offset + 4] = declared.to_bytes(4, "little")
            at = out.find(signature, at + 4)
    return bytes(out)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_members_compressed_other_than_stored_or_deflate_are_not_read(tmp_path: Path, method: int) -> None:
    """zipfile hands a bzip2/LZMA member's whole output over at once: such a member is refused
    before a byte is decompressed, even one declaring 100 bytes that holds 64 MB."""
    import tracemalloc

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr("p/1.jpg", b"\0" * (64 << 20))
    path.write_bytes(_lie_about_size(path.read_bytes(), 100))
    source = ImageSource(path)
    tracemalloc.start()
    with pytest.raises(ValueError, match="compression method"):
        source.read("1")
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


def test_a_deflate_member_that_holds_more_than_it_declares_stays_bounded(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p/1.jpg", b"\0" * (100 << 20))  # 100 MB of zeros: about 100 KB compressed
    path.write_bytes(_lie_about_size(path.read_bytes(), 100))
    source = ImageSource(path)
    tracemalloc.start()
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        source.read("1")
    assert tracemalloc.get_traced_memory()[1] < 2 << 20  # never the 100 MB
    tracemalloc.stop()
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p/2.jpg", b"\0" * (catalog.MAX_IMAGE_BYTES + 1))  # honest, and over the per-image cap
    with pytest.raises(ValueError, match="too large"):
        ImageSource(big).read("2")


def test_an_archive_with_too_many_entries_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "MAX_ZIP_ENTRIES", 50)
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(51):
            zf.writestr(f"p/{i}.jpg", b"")
    with pytest.raises(ValidationFailed) as refused:
        ImageSource(path)
    assert refused.value.code == "too_many_entries" and refused.value.field == "images"


def test_images_decode_only_as_the_allowed_formats() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(buffer, "TIFF")  # Pillow reads TIFF; an upload may not
    with pytest.raises(Exception, match="cannot identify"):
        letterbox(buffer.getvalue(), 16)
    assert letterbox(jpeg((255, 0, 0)), 16).shape == (16, 16, 3)
