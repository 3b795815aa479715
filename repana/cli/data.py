"""``repana data info | show | download``: inspect datasets, draw an episode, fetch Omniglot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repana.cli.checks import check_figure_file, check_output_dir, check_seed
from repana.errors import InputError

SPLIT_NAMES = ("train", "val", "test")


def split_list(values: list[str] | None) -> list[str]:
    """Names given space-separated (``a b``), comma-separated (``a,b``, the older form) or both."""
    return [part.strip() for value in (values or []) for part in value.split(",") if part.strip()]


class _DeprecatedAlias(argparse.Action):
    """A former spelling of an option: stores into the new one's ``dest`` and says which to use."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def register(subparsers, help_text: str) -> None:
    """Add the ``repana data`` parser to ``subparsers``, listed with ``help_text``."""
    parser = subparsers.add_parser("data", help=help_text,
                                   description="Inspect the few-shot datasets, draw an episode, download Omniglot.")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")

    def common(sub, dataset_required: bool = False):
        sub.add_argument("dataset", nargs=None if dataset_required else "?", default="glyphs",
                         choices=("glyphs", "omniglot", "miniimagenet"), help="dataset (default: glyphs)")
        sub.add_argument("--data-root", default=None, metavar="DIR",
                         help="data root holding omniglot/ and miniimagenet/ (default: $REPANA_DATA_ROOT or "
                              "~/.cache/repana/data)")
        sub.add_argument("--split", default=None, help="split scheme (omniglot: auto, maml, vinyals, "
                                                       "background-evaluation, subset, alphabets)")
        sub.add_argument("--test-alphabets", nargs="+", default=None, metavar="NAME",
                         help="omniglot split=alphabets: the test alphabets (space- or comma-separated)")
        sub.add_argument("--val-alphabets", nargs="+", default=None, metavar="NAME",
                         help="omniglot split=alphabets: the validation alphabets (space- or comma-separated)")
        sub.add_argument("--rotations", default=None, choices=("train", "all", "none"),
                         help="omniglot rotated classes (default: train)")

    info = commands.add_parser("info", help="classes, images and image shape of each split")
    common(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    show = commands.add_parser("show", help="draw one episode (support row per class, then queries) as a PNG")
    common(show)
    show.add_argument("--part", default="train", choices=SPLIT_NAMES, help="which split to draw from")
    show.add_argument("--ways", type=int, default=5)
    show.add_argument("--shots", type=int, default=1)
    show.add_argument("--queries", type=int, default=5)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", type=Path, default=Path("episode.png"), metavar="FILE", help="PNG (or PDF) to write")
    show.set_defaults(func=run_show)

    grid = commands.add_parser("grid", help="a grid of samples: one row per class, one column per drawing")
    common(grid)
    grid.add_argument("--part", default="test", choices=SPLIT_NAMES, help="which split to draw from")
    grid.add_argument("--classes", type=int, default=8, help="rows: the first CLASSES classes of the split")
    grid.add_argument("--drawings", type=int, default=10, help="columns: the first DRAWINGS images of each class")
    grid.add_argument("--out", type=Path, default=Path("grid.png"), metavar="FILE", help="PNG (or PDF) to write")
    grid.set_defaults(func=run_grid)

    download = commands.add_parser("download", help="fetch Omniglot's official archives (checksummed, resumable)")
    download.add_argument("dataset", choices=("omniglot",), help="only Omniglot can be downloaded")
    download.add_argument("--data-root", default=None, metavar="DIR",
                          help="data root; archives go to DIR/omniglot (default: $REPANA_DATA_ROOT or "
                               "~/.cache/repana/data)")
    download.add_argument("--root", dest="data_root", action=_DeprecatedAlias, new="--data-root",
                          help=argparse.SUPPRESS)  # the spelling before 0.1.0's --data-root everywhere
    download.add_argument("--archives", nargs="+", default=None, metavar="NAME",
                          help="archive names (default: images_background images_evaluation; also "
                               "images_background_small1, images_background_small2)")
    download.add_argument("--base-url", default=None, help="fetch every archive from BASE_URL/<file> instead")
    download.add_argument("--url", action="append", default=[], metavar="NAME=URL", help="URL of one archive")
    download.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                          help="expected sha256 of one archive (overrides the built-in manifest)")
    download.add_argument("--manifest", type=Path, default=None,
                          help='JSON {"name": {"url": ..., "sha256": ...}} overriding the built-in manifest')
    download.add_argument("--no-extract", action="store_true", help="keep the zips only (repana reads zips)")
    download.set_defaults(func=run_download)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _options(args) -> dict:
    options = {}
    if args.split:
        options["split"] = args.split
    if args.dataset == "omniglot":
        if args.rotations:
            options["rotations"] = args.rotations
        if args.test_alphabets:
            options["test_alphabets"] = split_list(args.test_alphabets)
        if args.val_alphabets:
            options["val_alphabets"] = split_list(args.val_alphabets)
    elif args.rotations or args.test_alphabets or args.val_alphabets:
        raise InputError("--rotations / --test-alphabets / --val-alphabets apply to omniglot only")
    return options


def run_info(args) -> int:
    from repana.data import load_splits

    splits = load_splits(args.dataset, root=args.data_root, **_options(args))
    rows = {part: ds.summary() for part, ds in splits.items()}
    if args.json:
        print(json.dumps({"dataset": args.dataset, "splits": rows}, indent=2))
        return 0
    print(f"{args.dataset}: {sum(r['classes'] for r in rows.values())} classes, "
          f"{sum(r['images'] for r in rows.values())} images")
    print(f"{'split':<6} {'classes':>8} {'images':>8} {'per class':>10}  shape (C, H, W)  name")
    for part, row in rows.items():
        per_class = (f"{row['images_per_class_min']}" if row["images_per_class_min"] == row["images_per_class_max"]
                     else f"{row['images_per_class_min']}-{row['images_per_class_max']}")
        print(f"{part:<6} {row['classes']:>8} {row['images']:>8} {per_class:>10}  "
              f"{str(tuple(row['image_shape'])):<15}  {row['name']}")
    return 0


def episode_figure(episode, class_names: list[str], title: str = ""):
    """A matplotlib figure: one row per class, its support images then its query images."""
    from matplotlib.figure import Figure

    ways = len(episode.class_ids)
    shots = episode.support_x.shape[0] // ways
    queries = episode.query_x.shape[0] // ways
    columns = shots + queries
    fig = Figure(figsize=(1.1 * columns + 1.5, 1.1 * ways + 0.4))
    axes = fig.subplots(ways, columns, squeeze=False)
    for way in range(ways):
        images = list(episode.support_x[way * shots:(way + 1) * shots]) + \
            list(episode.query_x[way * queries:(way + 1) * queries])
        for column, image in enumerate(images):
            axis = axes[way, column]
            array = image.permute(1, 2, 0).numpy()
            if array.shape[2] == 1:
                axis.imshow(array[:, :, 0], cmap="gray_r", vmin=0, vmax=1)
            else:
                axis.imshow(array.clip(0, 1))
            axis.set_xticks([]), axis.set_yticks([])
            if column == shots:
                for spine in axis.spines.values():
                    spine.set_color("tab:blue")
        axes[way, 0].set_ylabel(f"{way}: {class_names[way][-18:]}", fontsize=7, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("support", fontsize=8, loc="left")
    if queries:
        axes[0, shots].set_title("queries", fontsize=8, loc="left", color="tab:blue")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def run_show(args) -> int:
    check_figure_file(args.out, "--out", "episode.png")
    check_seed(args.seed)
    from repana.data import EpisodeSampler, load_splits
    from repana.io import atomic_savefig

    splits = load_splits(args.dataset, root=args.data_root, **_options(args))
    ds = splits[args.part]
    episode = EpisodeSampler(ds, ways=args.ways, shots=args.shots, queries=args.queries, seed=args.seed).sample(1)[0]
    names = [ds.class_names[int(c)] for c in episode.class_ids]
    fig = episode_figure(episode, names, f"{ds.name}: {args.ways}-way {args.shots}-shot, seed {args.seed}")
    atomic_savefig(fig, args.out, dpi=120)
    print(f"wrote {args.out}: {args.ways}-way {args.shots}-shot {args.queries}-query episode from {ds.name} "
          f"(classes {', '.join(names)})")
    return 0


def run_grid(args) -> int:
    check_figure_file(args.out, "--out", "grid.png")
    from matplotlib.figure import Figure

    from repana.data import load_splits
    from repana.io import atomic_savefig

    ds = load_splits(args.dataset, root=args.data_root, **_options(args))[args.part]
    if not 1 <= args.classes <= ds.n_classes or args.drawings < 1:
        raise InputError(f"--classes must be in [1, {ds.n_classes}] and --drawings positive")
    table = ds.class_table()[:args.classes, :args.drawings]
    fig = Figure(figsize=(0.8 * args.drawings, 0.8 * args.classes + 0.3))
    axes = fig.subplots(args.classes, args.drawings, squeeze=False)
    for row in range(args.classes):
        for column in range(args.drawings):
            axis = axes[row, column]
            axis.axis("off")
            index = int(table[row, column]) if column < table.shape[1] else -1
            if index >= 0:
                image = ds.images[index].permute(1, 2, 0).numpy()
                axis.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray_r", vmin=0, vmax=255)
    fig.suptitle(f"{ds.name}: {args.classes} classes (rows) x {args.drawings} drawings", fontsize=9)
    fig.tight_layout(pad=0.3)
    atomic_savefig(fig, args.out, dpi=100)
    print(f"wrote {args.out}: {args.classes} classes x {args.drawings} drawings of {ds.name}")
    return 0


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise InputError(f"{what} must look like NAME={what.lstrip('-').upper()}, got {value!r}")
        pairs[name.strip()] = rest.strip()
    return pairs


def run_download(args) -> int:
    from repana.data.download import DEFAULT_OMNIGLOT_ARCHIVES, download_omniglot, load_manifest

    from repana.paths import resolve_data_root

    check_output_dir(resolve_data_root(args.data_root), "--data-root")
    archives = split_list(args.archives) if args.archives else list(DEFAULT_OMNIGLOT_ARCHIVES)
    paths = download_omniglot(root=args.data_root, archives=archives, base_url=args.base_url,
                              urls=_pairs(args.url, "--url"), checksums=_pairs(args.sha256, "--sha256"),
                              manifest=load_manifest(args.manifest) if args.manifest else None,
                              extract=not args.no_extract)
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes, checksum verified)")
    print(f"Omniglot is ready: load it with load_splits('omniglot', root={str(paths[0].parent.parent)!r})")
    return 0
