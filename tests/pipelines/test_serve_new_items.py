"""A new item, added between nights with `kdrec models extend`, is served by a running `kdrec serve`
to the users whose history matches it, through the default student's content tower."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import polars as pl
import yaml
from typer.testing import CliRunner

from distill.serving.bundle import bundle_files
from distill.student.config import StudentConfig
from distill.student.content import ContentConfig
from distill.student.fit import DistillConfig
from distill.student.run import fit_and_evaluate
from distill.teacher.base import TeacherConfig
from distill.teacher.encoder import EncoderTeacher
from distill.texts import TextConfig, item_texts
from distill.training.loop import LoopConfig
from pipelines.cli import app
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.registry import Registry
from storage.split import make_split
from storage.workdir import WorkDir
from tests.conftest import write_tables
from tests.pipelines.test_serve import free_port, wait_until

GENRES = {  # each genre's titles share its words, as real titles of a genre share themes
    "Horror": "Haunted Night of the Dead",
    "Comedy": "Funny Wedding Party",
    "Action": "Fast Explosive Mission",
    "Romance": "Love Letters in Paris",
}


def genre_tables(seed: int = 0) -> dict[str, pl.DataFrame]:
    """48 items, 12 a genre; 40 users, each a fan of one genre (10 of its items, 2 others)."""
    rng = np.random.default_rng(seed)
    names = list(GENRES)
    items = {"item_id": [], "title": [], "year": [], "genres": []}
    for g, genre in enumerate(names):
        for k in range(12):
            items["item_id"].append(f"i{12 * g + k}")
            items["title"].append(f"{GENRES[genre]} {k + 1}")
            items["year"].append(str(1990 + k))
            items["genres"].append(genre)
    inter = {"user_id": [], "item_id": [], "timestamp": []}
    for u in range(40):
        g = u % 4
        own = rng.choice(12, size=10, replace=False) + 12 * g
        other = rng.choice([i for i in range(48) if i // 12 != g], size=2, replace=False)
        for t, i in enumerate(rng.permutation(np.concatenate([own, other]))):
            inter["user_id"].append(f"u{u}")
            inter["item_id"].append(f"i{i}")
            inter["timestamp"].append(1_000 + 10 * t)
    return {"interactions": pl.DataFrame(inter), "items": pl.DataFrame(items)}


def test_extend_then_serve_a_new_item_to_the_fans_of_its_genre(tmp_path, tiny_encoder_path):
    work = tmp_path / "work"
    paths = write_tables(tmp_path / "src", genre_tables())
    result = ingest(DatasetConfig(name="genres", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "genres", result.version)
    texts = item_texts(dataset.items(), TextConfig()).get_column("text").to_list()
    encoder = EncoderTeacher(TeacherConfig(model_path=tiny_encoder_path))
    run = fit_and_evaluate(  # the default student's shape: ID-only + content tower
        make_split(dataset),
        StudentConfig(dim=16, history_len=12, dropout=0.1),
        DistillConfig(alpha=0.0, init="random"),
        LoopConfig(max_epochs=30, patience=30, batch_size=16, lr=5e-3),
        soft_labels=None,
        text_emb=encoder.encode(texts),
        content=ContentConfig(alpha=0.0, epochs=40, lr=5e-3, scale=1.0),
    )
    registry = Registry(WorkDir(work).registry)
    registry.publish(bundle_files(run, dataset), validation=run.valid)
    new = tmp_path / "new_items.csv"
    pl.DataFrame(
        {
            "item_id": ["new-horror"],
            "title": [f"{GENRES['Horror']} 13"],
            "year": ["2002"],
            "genres": ["Horror"],
        }
    ).write_csv(new)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"teacher": {"model_path": str(tiny_encoder_path)}}))
    extend = ["models", "extend", "--items", str(new), "-c", str(config)]
    extended = CliRunner().invoke(app, [*extend, "--work-dir", str(work)])
    assert extended.exit_code == 0, extended.output
    port = free_port()
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--registry", str(WorkDir(work).registry)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_until(
            lambda: proc.poll() is not None or client.get("/health").status_code == 200,
            what="the server to start",
        )
        assert proc.poll() is None, proc.stdout.read()

        def rank(user: str) -> int:
            """Where the new item is in the user's whole list (seen items left out)."""
            response = client.get("/recommend", params={"user": user, "k": 48})
            assert response.status_code == 200, response.text
            return [r["item_id"] for r in response.json()["items"]].index("new-horror")

        fans = [rank(f"u{u}") for u in range(0, 40, 4)]  # 10 horror fans
        others = [rank(f"u{u}") for u in range(40) if u % 4]
        assert sum(r < 10 for r in fans) >= 8, fans  # in the top 10 of (nearly) every fan
        assert np.median(fans) + 2 <= np.median(others), (fans, others)  # and aimed at them
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
