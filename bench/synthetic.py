"""A seeded synthetic catalog shaped like MovieLens-100K at any size, as `files`-source tables.

At scale s: 943·s users, 1,682·s^0.9 items and 100,000·s interactions (×100 ≈ 94K users, 106K
items, 10M interactions). Like ML-100K:
- user activity is heavy-tailed (lognormal) with at least 20 interactions per user;
- item popularity follows a power law (Zipf exponent ~1 over rank);
- each item has 1–3 of 18 genres and a title whose words come from its first genre's vocabulary,
  so the text carries signal; each user prefers two genres and draws half of their items from
  them (by popularity inside the genre), half from the whole catalog by popularity;
- timestamps are chronological per user, within one year from a random start.

    python -m bench.synthetic --scale 10 --out /tmp/syn10    # writes interactions/items.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from storage.atomic import write_parquet

BASE_USERS, BASE_ITEMS, BASE_INTERACTIONS = 943, 1_682, 100_000
MIN_PER_USER = 20
OVERSAMPLE = 1.8  # draws per kept interaction: popular items repeat, repeats are dropped
GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
_COMMON = [
    "the",
    "a",
    "of",
    "and",
    "in",
    "night",
    "day",
    "man",
    "woman",
    "last",
    "first",
    "story",
    "return",
    "city",
    "house",
]


def sizes(scale: float) -> tuple[int, int, int]:
    """(users, items, interactions) at `scale` times ML-100K."""
    return (
        int(round(BASE_USERS * scale)),
        int(round(BASE_ITEMS * scale**0.9)),
        int(round(BASE_INTERACTIONS * scale)),
    )


def _vocabulary(rng: np.random.Generator) -> list[list[str]]:
    """Per genre, 60 made-up title words (syllables), distinct between genres."""
    syllables = [
        "ka",
        "lo",
        "mi",
        "ra",
        "ne",
        "so",
        "tu",
        "vi",
        "za",
        "be",
        "do",
        "fe",
        "gu",
        "hi",
        "jo",
        "ku",
        "li",
    ]
    words: list[list[str]] = []
    used: set[str] = set()
    for _ in GENRES:
        mine: list[str] = []
        while len(mine) < 60:
            word = "".join(rng.choice(syllables, size=rng.integers(2, 4))).capitalize()
            if word not in used:
                used.add(word)
                mine.append(word)
        words.append(mine)
    return words


def items_table(n_items: int, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Items with titles, years and genres; returns (table, first genre of every item)."""
    prior = 1.0 / np.arange(1, len(GENRES) + 1)  # a few genres are common, like Drama
    prior /= prior.sum()
    n_genres = rng.integers(1, 4, size=n_items)
    first = rng.choice(len(GENRES), size=n_items, p=prior)
    vocab = _vocabulary(rng)
    titles, genres = [], []
    years = rng.integers(1930, 2021, size=n_items)
    for i in range(n_items):
        extra = rng.choice(len(GENRES), size=n_genres[i] - 1, p=prior)
        mine = [first[i], *[g for g in extra if g != first[i]]]
        genres.append("|".join(GENRES[g] for g in dict.fromkeys(mine)))
        words = rng.choice(vocab[first[i]], size=rng.integers(1, 3), replace=False)
        common = _COMMON[rng.integers(len(_COMMON))].capitalize()
        titles.append(f"{common} {' '.join(words)} ({years[i]})")
    table = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": titles,
            "year": [str(y) for y in years],
            "genres": genres,
        }
    )
    return table, first


def interactions_table(
    n_users: int,
    n_items: int,
    n_interactions: int,
    first_genre: np.ndarray,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Interactions (user_id, item_id, timestamp): heavy-tailed activity, power-law popularity,
    half of each user's items from their two preferred genres."""
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    extra = n_interactions - MIN_PER_USER * n_users
    per_user = MIN_PER_USER + np.floor(activity / activity.sum() * max(extra, 0)).astype(np.int64)
    per_user = np.minimum(per_user, n_items // 2)
    draws = np.ceil(per_user * OVERSAMPLE).astype(np.int64)  # repeats are dropped below
    total = int(draws.sum())
    owner = np.repeat(np.arange(n_users), draws)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9  # rank -> weight
    popularity = popularity[rng.permutation(n_items)]  # ranks shuffled over item ids
    from_catalog = np.searchsorted(np.cumsum(popularity) / popularity.sum(), rng.random(total))
    # by genre: items sorted by genre, cumulative popularity inside each genre's segment
    order = np.argsort(first_genre, kind="stable")
    bounds = np.searchsorted(first_genre[order], np.arange(len(GENRES) + 1))
    cum = np.cumsum(popularity[order])
    liked = rng.choice(len(GENRES), size=(n_users, 2))
    genre = liked[owner, rng.integers(2, size=total)]
    lo, hi = bounds[genre], bounds[genre + 1]
    empty = hi == lo
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    span = cum[np.maximum(hi - 1, 0)] - base
    target = base + rng.random(total) * span
    in_genre = order[np.clip(np.searchsorted(cum, target), lo, np.maximum(hi - 1, lo))]
    use_genre = (rng.random(total) < 0.5) & ~empty
    item = np.where(use_genre, in_genre, from_catalog).clip(max=n_items - 1)
    start = rng.integers(880_000_000, 890_000_000, size=n_users)
    timestamp = start[owner] + rng.integers(0, 365 * 86_400, size=total)
    frame = pl.DataFrame({"u": owner, "i": item, "timestamp": timestamp})
    frame = (
        frame.unique(subset=["u", "i"], keep="first", maintain_order=True)
        .filter(pl.int_range(pl.len()).over("u") < pl.lit(per_user).gather(pl.col("u")))
        .sort("u", "timestamp", "i")
    )
    return frame.select(
        pl.format("u{}", pl.col("u")).alias("user_id"),
        pl.format("i{}", pl.col("i")).alias("item_id"),
        pl.col("timestamp"),
    )


def generate(scale: float, out: Path, *, seed: int = 0) -> dict[str, Path]:
    """Write interactions.parquet and items.parquet under `out`; returns their paths."""
    n_users, n_items, n_interactions = sizes(scale)
    rng = np.random.default_rng([seed, int(scale * 1000)])
    items, first = items_table(n_items, rng)
    inter = interactions_table(n_users, n_items, n_interactions, first, rng)
    out = Path(out)
    paths = {"interactions": out / "interactions.parquet", "items": out / "items.parquet"}
    write_parquet(paths["interactions"], inter.to_arrow())
    write_parquet(paths["items"], items.to_arrow())
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times ML-100K (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Parquet files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = generate(args.scale, args.out, seed=args.seed)
    inter = pl.read_parquet(paths["interactions"])
    print(
        f"{inter.height} interactions, {inter['user_id'].n_unique()} users, "
        f"{pl.read_parquet(paths['items']).height} items -> {args.out}"
    )


if __name__ == "__main__":
    main()
