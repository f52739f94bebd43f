"""Photos uploaded to add (app/uploads.py): a zip's folders are product ids, every bad entry is listed while
the good ones beside it are kept, nothing is written before the add saves them in the catalog folder, and one
cap holds for the whole upload."""
from __future__ import annotations

import pandas as pd
import pytest

import io
import zipfile

import app.uploads
from app.uploads import UploadError, folder_product, stage_uploads, zip_members
from index.manifest import read_manifest
from index.catalog.uploaded_files import PHOTOS_FOLDER
from tests.support.photos import product_photo, zip_of


def saved_rows(staged) -> dict[str, str]:
    """Saved file name -> product id, as the upload's manifest records them once saved."""
    staged.save()
    table = read_manifest(staged.manifest)
    return dict(zip(table["path"], table["product_id"]))


def test_the_folder_a_photo_lies_in_is_its_product_id():
    assert folder_product("shoe-123/front.jpg") == "shoe-123"
    assert folder_product("new arrivals/shoe-123/side.jpg") == "shoe-123"  # a zipped folder of product folders
    assert folder_product("front.jpg") is None


def test_a_zip_of_product_folders_gives_each_photo_its_folders_product_id(tmp_path):
    archive = zip_of({"shoe-123/front.png": product_photo((200, 20, 20)), "shoe-123/side.png": product_photo((190, 30, 20)),
                      "shoe-124/front.png": product_photo((20, 20, 200))})
    staged = stage_uploads([("new.zip", archive)], tmp_path, "shoes")
    assert staged.bad == [] and list(tmp_path.iterdir()) == []  # checked in memory: nothing written yet
    assert saved_rows(staged) == {"shoe-123-front.png": "shoe-123", "shoe-123-side.png": "shoe-123",
                                  "shoe-124-front.png": "shoe-124"}
    assert staged.folder.parent == tmp_path / PHOTOS_FOLDER
    assert read_manifest(staged.manifest)["category"].unique().tolist() == ["shoes"]


def test_a_zipped_folder_of_product_folders_reads_the_inner_folders(tmp_path):
    archive = zip_of({"spring/shoe-1/a.png": product_photo((200, 20, 20)), "spring/shoe-2/a.png": product_photo((20, 200, 20))})
    assert set(saved_rows(stage_uploads([("spring.zip", archive)], tmp_path, "shoes")).values()) == {"shoe-1", "shoe-2"}


def test_a_product_id_given_in_the_form_is_every_photos(tmp_path):
    archive = zip_of({"shoe-123/front.png": product_photo((200, 20, 20)), "loose.png": product_photo((20, 200, 20))})
    staged = stage_uploads([("new.zip", archive), ("side.png", product_photo((20, 20, 200)))], tmp_path, "shoes", "shoe-9")
    assert set(saved_rows(staged).values()) == {"shoe-9"} and len(staged.saved) == 3 and staged.bad == []


def test_photos_outside_product_folders_are_listed_when_the_others_have_one(tmp_path):
    archive = zip_of({"shoe-123/front.png": product_photo((200, 20, 20)), "loose.png": product_photo((20, 200, 20))})
    staged = stage_uploads([("new.zip", archive), ("side.png", product_photo((20, 20, 200)))], tmp_path, "shoes")
    assert saved_rows(staged) == {"shoe-123-front.png": "shoe-123"}
    assert {name for name, _ in staged.bad} == {"new.zip/loose.png", "side.png"}
    assert all("not in a product folder" in reason for _, reason in staged.bad)


def test_a_zip_without_folders_adds_photos_without_product_ids(tmp_path):
    staged = stage_uploads([("flat.zip", zip_of({"a.png": product_photo((200, 20, 20)), "b.png": product_photo((20, 200, 20))}))],
                           tmp_path, "shoes")
    staged.save()
    table = read_manifest(staged.manifest)
    assert sorted(table["path"]) == ["a.png", "b.png"] and "product_id" not in table


def test_every_bad_entry_is_listed_and_the_good_ones_are_saved(tmp_path):
    archive = zip_of({
        "shoe-123/front.png": product_photo((200, 20, 20)),
        "shoe-123/side.png": product_photo((190, 30, 20)),
        "shoe-124/corrupt.jpg": b"\xff\xd8\xff\xe0 not really a JPEG" + bytes(100),
        "../x.jpg": product_photo((1, 2, 3)),
        "/etc/evil.png": product_photo((1, 2, 3)),
        "shoe-125/notes.txt": b"a note",
        "bad name!/y.png": product_photo((9, 9, 9)),
    })
    staged = stage_uploads([("batch.zip", archive)], tmp_path / "images", "shoes")
    reasons = dict(staged.bad)
    assert set(reasons) == {"batch.zip/shoe-124/corrupt.jpg", "batch.zip/../x.jpg", "batch.zip//etc/evil.png",
                            "batch.zip/shoe-125/notes.txt", "batch.zip/bad name!/y.png"}
    assert reasons["batch.zip/shoe-124/corrupt.jpg"].startswith("corrupt or truncated image")
    assert "'..'" in reasons["batch.zip/../x.jpg"] and "absolute" in reasons["batch.zip//etc/evil.png"]
    assert "folder's name" in reasons["batch.zip/bad name!/y.png"]
    assert saved_rows(staged) == {"shoe-123-front.png": "shoe-123", "shoe-123-side.png": "shoe-123"}
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith(f"images/{PHOTOS_FOLDER}/{staged.folder.name}/") for p in written), written
    assert not (tmp_path / "x.jpg").exists()


def test_nothing_is_saved_when_no_entry_is_a_usable_photo(tmp_path):
    archive = zip_of({"shoe-1/corrupt.jpg": b"\xff\xd8\xff nothing", "../x.jpg": product_photo((1, 2, 3))})
    with pytest.raises(UploadError, match="none of the uploaded files is a usable photo"):
        stage_uploads([("bad.zip", archive)], tmp_path, "shoes")
    assert list(tmp_path.iterdir()) == []


def test_uploads_sit_in_a_new_batch_folder_each_time(tmp_path):
    first = stage_uploads([("a.png", product_photo((200, 20, 20)))], tmp_path, "shoes")
    second = stage_uploads([("a.png", product_photo((200, 20, 20)))], tmp_path, "shoes")
    assert first.folder != second.folder
    first.save()
    assert pd.read_csv(first.manifest)["path"].tolist() == ["a.png"]


def zeros_zip(entries: int, each: int) -> bytes:
    """A small zip whose entries expand to `each` bytes of zeros apiece."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for i in range(entries):
            bundle.writestr(f"p{i}.png", b"\0" * each)
    return out.getvalue()


def test_one_cap_holds_for_the_whole_upload_across_its_zips_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(app.uploads, "MAX_UPLOAD_BYTES", 3 << 20)
    archive = zeros_zip(4, 512 << 10)  # 2 MiB uncompressed in a few KiB: under the cap on its own
    assert len(archive) < 50_000 and len(zip_members("one.zip", archive)[0]) == 4
    photo = product_photo((200, 20, 20))
    staged = stage_uploads([("a.zip", archive), ("b.zip", archive), ("c.png", photo)], tmp_path, "shoes")
    reasons = dict(staged.bad)  # 4 MiB together: the zip that brings the upload past the cap is refused whole
    assert reasons["b.zip"] == ("2 MiB uncompressed would bring this upload to 4 MiB, past the 3 MiB one upload may "
                                "hold (all its files and zip entries together); upload the photos in smaller batches")
    assert not any(name.startswith("b.zip/") for name in reasons) and staged.saved == ["c.png"]
    staged = stage_uploads([("a.zip", archive), ("big.png", photo + bytes((1 << 20) + 1)), ("c.png", photo)],
                           tmp_path, "shoes")
    assert "one upload may hold (all its files and zip entries together)" in dict(staged.bad)["big.png"]
    assert staged.saved == ["c.png"]
    with pytest.raises(UploadError, match="none of the uploaded files is a usable photo .*b.zip: 2 MiB uncompressed would"):
        stage_uploads([("a.zip", archive), ("b.zip", archive)], tmp_path, "shoes")
    assert list(tmp_path.iterdir()) == []  # checked in memory: nothing written


def test_three_zips_over_the_cap_together_are_refused_and_the_good_files_beside_them_kept(tmp_path, monkeypatch):
    """Memory is capped for the whole upload, not per zip: each of these zips is far under the cap, three
    together are over it; the zip that would pass it is refused before any entry of it is read."""
    monkeypatch.setattr(app.uploads, "MAX_UPLOAD_BYTES", 3 << 20)
    pad = 1200 << 10  # each zip: one real photo and 1.2 MiB of zeros (a few KiB compressed)

    def product_zip(product: str, colour) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(f"{product}/front.png", product_photo(colour))
            bundle.writestr(f"{product}/pad.png", b"\0" * pad)
        return out.getvalue()

    zips = [(f"{n}.zip", product_zip(f"shoe-{n}", (60 * n, 20, 20))) for n in (1, 2, 3)]
    assert all(len(data) < 50_000 for _, data in zips)
    opened: list[str] = []
    original_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, entry, *a, **kw: opened.append(getattr(entry, "filename", entry))
                        or original_open(self, entry, *a, **kw))
    files = [("shoe-0/loose.png", product_photo((20, 200, 20))), *zips, ("after.png", product_photo((20, 20, 200)))]
    staged = stage_uploads(files, tmp_path, "shoes", "shoe-9")
    reasons = dict(staged.bad)
    assert reasons["3.zip"].startswith("1.2 MiB uncompressed would bring this upload to 3.5 MiB, past the 3 MiB "
                                       "one upload may hold")
    assert "upload the photos in smaller batches" in reasons["3.zip"]
    assert not any(name.startswith("shoe-3/") for name in opened)  # refused before anything of it was extracted
    assert set(reasons) == {"1.zip/shoe-1/pad.png", "2.zip/shoe-2/pad.png", "3.zip"}  # the pads are no photos
    assert staged.saved == ["shoe-0/loose.png", "1.zip/shoe-1/front.png", "2.zip/shoe-2/front.png", "after.png"]
    assert list(tmp_path.iterdir()) == []  # nothing written before the add saves them
    staged.save()
    assert len(read_manifest(staged.manifest)) == 4


def test_a_zip_whose_entries_expand_beyond_what_they_declare_stops_at_the_uploads_cap(monkeypatch):
    monkeypatch.setattr(app.uploads, "MAX_UPLOAD_BYTES", 1 << 20)
    with pytest.raises(UploadError, match="uncompressed"):
        zip_members("zeros.zip", zeros_zip(1, 2 << 20))
