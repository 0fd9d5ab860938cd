"""Reading the price book from YAML, one file or a folder of them. A bad price book is
reported as ``PriceBookError`` naming the file, the plan, the charge and what is wrong,
so a person can fix it without a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from rating.plans import PriceBook, PriceBookError

_CONTAINERS = {"plans": "plan", "charges": "charge", "meters": "meter", "fixed_fees": "fee"}


def _describe_location(document: object, location: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into "plan 'x', charge 2 (meter 'y'), field"."""
    words: list[str] = []
    node = document
    for index, step in enumerate(location):
        previous = location[index - 1] if index else None
        child = _child(node, step)
        following = location[index + 1] if index + 1 < len(location) else None
        if isinstance(step, int) and previous in _CONTAINERS:
            item = child if isinstance(child, dict) else {}
            if previous == "charges":
                words.append(f"charge {step + 1} (meter {item.get('meter', '?')!r})")
            elif previous == "plans" and item.get("version", 1) != 1:
                words.append(f"plan {item.get('id', step)!r} version {item['version']}")
            else:
                words.append(f"{_CONTAINERS[previous]} {item.get('id', step)!r}")
        elif step in _CONTAINERS and isinstance(following, int):
            pass  # named by the item that follows
        elif isinstance(node, dict) and node.get("model") == step:
            pass  # the tag of a price model, not a field
        else:
            words.append(str(step))
        node = child
    return ", ".join(words)


def _child(node: object, step: int | str) -> object:
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    if isinstance(node, dict):
        return node.get(step)
    return None


def parse_price_book(document: object, source: str) -> PriceBook:
    try:
        return PriceBook.model_validate(document)
    except ValidationError as error:
        found = error.errors(include_url=False)
        locations = [tuple(problem["loc"]) for problem in found]
        problems = []
        for problem in found:
            loc = tuple(problem["loc"])
            if any(other[: len(loc)] == loc and other != loc for other in locations):
                continue  # a container failing only because an item inside it failed
            where = _describe_location(document, loc)
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"  {where}: {message}" if where else f"  {message}")
        raise PriceBookError(f"{source}: invalid price book\n" + "\n".join(problems)) from None


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text()
    except OSError as error:
        raise PriceBookError(f"{path}: cannot read the price book ({error.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PriceBookError(f"{path}: not valid YAML ({error})") from None


def _merge_folder(folder: Path) -> dict[str, list[object]]:
    """Every ``*.yaml``/``*.yml`` file of a folder, in name order, as one price book: a
    team can keep a file per product line, or per plan."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise PriceBookError(f"{folder}: no .yaml files in the price book folder")
    merged: dict[str, list[object]] = {"meters": [], "plans": [], "add_ons": [], "coupons": []}
    for file in files:
        document = _read_yaml(file)
        if document is None:
            continue
        if not isinstance(document, dict) or set(document) - set(merged):
            raise PriceBookError(
                f"{file}: expected a mapping with 'meters', 'plans', 'add_ons' and/or 'coupons'"
            )
        for key, collected in merged.items():
            items = document.get(key) or []
            if not isinstance(items, list):
                raise PriceBookError(f"{file}: '{key}' must be a list")
            collected.extend(items)
    return merged


def load_price_book(path: Path) -> PriceBook:
    """Load a price book from one YAML file, or from a folder of them."""
    if path.is_dir():
        return parse_price_book(_merge_folder(path), f"{path}/")
    return parse_price_book(_read_yaml(path), str(path))
