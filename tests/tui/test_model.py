"""The dashboard's pure logic: progress, speed/ETA, formatting, filtering, sorting, keys and rendering."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modfetch.state import ChunkRow, DownloadRow, PlacementRow, open_state
from modfetch.tui import model, render
from modfetch.tui.model import Item, SpeedTracker, View

NOW = 1_700_000_000.0


def row(id_: int, name: str, status: str = "running", size: int | None = 1000, **kw: object) -> DownloadRow:
    return DownloadRow(id=id_, url=f"https://example.com/{name}", dest_path=f"/models/{name}", status=status,
                       size=size, updated_at=NOW - id_, **kw)  # type: ignore[arg-type]


def item(id_: int, name: str, status: str = "running", done: int = 0, size: int | None = 1000,
         **kw: object) -> Item:
    return Item(row(id_, name, status, size, **kw), done)


def test_done_bytes_from_chunks_part_file_or_finished() -> None:
    chunks = [ChunkRow(0, 0, 500, 500, status="complete"), ChunkRow(1, 500, 1000, 120, status="running"),
              ChunkRow(2, 1000, 1500, 9999, status="running")]
    assert model.done_bytes(row(1, "a", size=1500), chunks, None) == 500 + 120 + 500
    assert model.done_bytes(row(1, "a", size=None), [], 777) == 777  # single stream: the .part size
    assert model.done_bytes(row(1, "a", size=500), [], 777) == 500
    assert model.done_bytes(row(1, "a", "complete", size=42), [], None) == 42
    assert model.done_bytes(row(1, "a", "failed", bytes_done=17), [], 999) == 17


def test_read_items_from_a_real_db(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    single = db.create_download("https://h/s", str(tmp_path / "s.bin"), size=None)
    db.update_download(single.id, status="running", pid=os.getpid())
    (tmp_path / "s.bin.part").write_bytes(b"x" * 300)
    chunked = db.create_download("https://h/c", str(tmp_path / "c.bin"), size=1000)
    db.update_download(chunked.id, status="running", pid=os.getpid())
    db.replace_chunks(chunked.id, [ChunkRow(0, 0, 500, 500, status="complete"), ChunkRow(1, 500, 1000, 100)])
    done = db.create_download("https://h/d", str(tmp_path / "d.bin"), size=10, status="complete")
    db.record_placement(done.id, str(tmp_path / "d.bin"), "/apps/comfy/d.bin", "comfyui", "symlink",
                        "checkpoint")
    db.close()
    ro = open_state(tmp_path / "state.db", readonly=True)
    items = {i.id: i for i in model.read_items(ro, detail_id=done.id)}
    ro.close()
    assert items[single.id].done == 300 and items[single.id].fraction is None
    assert items[chunked.id].done == 600 and items[chunked.id].fraction == pytest.approx(0.6)
    assert items[done.id].fraction == 1.0 and items[done.id].placements[0].app == "comfyui"


def test_speed_and_eta_from_successive_polls() -> None:
    tracker = SpeedTracker(smoothing=1.0)
    first = [item(1, "a", done=0, size=10_000), item(2, "b", "complete", done=100)]
    tracker.update(first, 100.0)
    assert first[0].speed is None and first[0].eta is None
    second = [item(1, "a", done=2_000, size=10_000), item(2, "b", "complete", done=100)]
    tracker.update(second, 102.0)
    assert second[0].speed == pytest.approx(1000.0) and second[0].eta == pytest.approx(8.0)
    assert second[1].speed is None
    quick = [item(1, "a", done=2_050, size=10_000)]
    tracker.update(quick, 102.05)  # forced refresh right after a poll keeps the last speed
    assert quick[0].speed == pytest.approx(1000.0)


@pytest.mark.parametrize(("seconds", "text"), [(None, ""), (5, "5s"), (65, "1m05s"), (7322, "2h02m"),
                                               (90000, "1d01h")])
def test_fmt_duration(seconds: float | None, text: str) -> None:
    assert render.fmt_duration(seconds) == text


def test_bars_and_chunk_map() -> None:
    assert render.progress_bar(0.5, 12) == "[#####.....]"
    assert render.progress_bar(None, 4) == "[??]"
    chunks = [ChunkRow(0, 0, 50, 50, status="complete"), ChunkRow(1, 50, 100, 10)]
    assert render.chunk_map(chunks, 100, 4) == "##+."
    assert render.fmt_speed(2048) == "2.0 KiB/s" and render.fmt_speed(None) == ""


def test_columns_shrink_to_fit() -> None:
    wide = [c[0] for c in render.columns_for(120)]
    assert wide[:2] == ["ID", "FILE"] and {"SPEED", "ETA", "STATUS", "UPDATED", "BAR"} <= set(wide)
    narrow = render.columns_for(40)
    assert sum(w + 1 for _n, w, _r in narrow) - 1 <= 40
    assert "FILE" in [c[0] for c in narrow] and "PROG" in [c[0] for c in narrow]


def make_view() -> View:
    view = View()
    view.set_items([item(1, "alpha.safetensors", "complete", done=1000),
                    item(2, "beta.gguf", "running", done=250),
                    item(3, "gamma.ckpt", "failed", done=10, error="HTTP 404")])
    return view


def test_keys_move_filter_sort_hide_and_quit() -> None:
    view = make_view()
    assert [i.id for i in view.visible()] == [3, 2, 1] and view.selected_id == 3
    view.handle_key("j")
    view.handle_key("down")
    assert view.selected_id == 1
    view.handle_key("j")
    assert view.selected_id == 1  # stays on the last row
    view.handle_key("k")
    assert view.selected_id == 2
    for key in "/gguf":
        view.handle_key(key)
    assert view.filter_buffer == "gguf" and len(view.visible()) == 3  # not applied until Enter
    view.handle_key("backspace")
    view.handle_key("f")
    view.handle_key("enter")
    assert [i.id for i in view.visible()] == [2]
    view.handle_key("/")
    view.handle_key("esc")
    assert view.filter_text == "" and len(view.visible()) == 3
    view.handle_key("c")
    assert [i.id for i in view.visible()] == [3, 2]
    view.handle_key("c")
    view.handle_key("s")
    assert view.sort == "name" and [i.id for i in view.visible()] == [1, 2, 3]
    view.handle_key("s")
    assert view.sort == "progress" and view.visible()[0].id == 1
    assert view.handle_key("r") == "refresh"
    assert view.handle_key("q") == "quit"


def test_filter_q_is_text_not_quit() -> None:
    view = make_view()
    view.handle_key("/")
    assert view.handle_key("q") is None and view.filter_buffer == "q"


def test_details_pane_redacts_and_shows_everything() -> None:
    view = make_view()
    it = view.items[1]
    it.row.url = "https://cdn.example.com/beta.gguf?token=SUPERSECRET&X-Amz-Signature=abc"
    it.row.sha256 = "ab" * 32
    it.chunks = [ChunkRow(0, 0, 500, 250), ChunkRow(1, 500, 1000, 0)]
    it.placements = [PlacementRow(1, 2, "/models/beta.gguf", "/lm/beta.gguf", "lmstudio", "symlink", "llm",
                                  NOW)]
    view.selected_id = 2
    assert view.handle_key("d") == "refresh" and view.mode == "details"
    text = "\n".join(line.text for line in view.render(120, 30, NOW))
    assert "SUPERSECRET" not in text and "token=***" in text
    assert "/models/beta.gguf" in text and "ab" * 32 in text and "lmstudio" in text and "0/2 complete" in text
    view.handle_key("esc")
    assert view.mode == "list"
    view.selected_id = 3
    view.handle_key("enter")
    assert "HTTP 404" in "\n".join(line.text for line in view.render(120, 30, NOW))


def test_help_and_any_key_back() -> None:
    view = make_view()
    view.handle_key("?")
    assert "filter by substring" in "\n".join(line.text for line in view.render(80, 24, NOW))
    view.handle_key("x")
    assert view.mode == "list"


SIZES = [(120, 30), (80, 24), (40, 10), (20, 5), (1, 1), (5, 2), (0, 0)]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("mode", ["list", "details", "help"])
def test_render_fits_any_size(width: int, height: int, mode: str) -> None:
    view = make_view()
    view.items.extend(item(i, f"model-{i}-with-a-very-long-name.safetensors", done=i) for i in range(4, 60))
    view.set_items(view.items)
    view.mode = mode
    for _ in range(40):
        view.handle_key("j")
        lines = view.render(width, height, NOW)
        assert len(lines) == max(0, height)
        assert all(len(line.text) <= width for line in lines)
    if height >= 3 and mode == "list":
        assert any(line.style == model.SELECTED for line in lines)


def test_empty_states() -> None:
    view = View(db_path="/x/state.db")
    text = "\n".join(line.text for line in view.render(80, 10, time.time()))
    assert "no downloads yet" in text
    view = make_view()
    view.filter_text = "nomatch"
    view.set_items(view.items)
    assert "no downloads match" in "\n".join(line.text for line in view.render(80, 10, NOW))
