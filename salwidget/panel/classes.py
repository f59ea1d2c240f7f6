"""Class names for people: labels with indices, the class search, the grid's row titles."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import SaliencyError


class ClassNames:
    """Names of the model's classes; an index stands in where no name is known.

    Labels carry the index (``'crane (#134)'``) so that classes sharing a
    name (ImageNet has two cranes) stay apart.
    """

    def __init__(self, names: Sequence[str] | None, num_classes: int):
        if names is not None and isinstance(names, str):
            raise SaliencyError("class_names must be a list of names, one per class; got one string.")
        if names is not None and len(names) != num_classes and not (num_classes == 1 and len(names) == 2):
            raise SaliencyError(
                f"class_names has {len(names)} names but the model has {num_classes} classes: give one name "
                "per class, in the order of the model's outputs (a single-logit model may take two)."
            )
        self.names = [str(n) for n in names] if names is not None else None
        self.num_classes = num_classes
        counts = Counter(self.names or ())
        self._duplicated = {n for n, c in counts.items() if c > 1}

    def name(self, index: int) -> str:
        if self.names is not None and 0 <= index < len(self.names):
            return self.names[index]
        return f"class {index}"

    def label(self, index: int) -> str:
        return f"{self.name(index)} (#{index})"

    def suggestions(self) -> list[str]:
        """What the search box suggests: each name, with its index where names repeat."""
        if self.names is None:
            return []
        return [self.label(i) if n in self._duplicated else n for i, n in enumerate(self.names)]

    def search(self, text: str) -> "Search":
        """Classes matching ``text``: a suggestion or name in full, else every name containing it."""
        text = text.strip()
        if not text or self.names is None:
            return Search(text, [], exact=False)
        lowered = text.lower()
        for i, suggestion in enumerate(self.suggestions()):
            if suggestion.lower() == lowered or self.label(i).lower() == lowered:
                return Search(text, [i], exact=True)
        exact = [i for i, n in enumerate(self.names) if n.lower() == lowered]
        if exact:
            return Search(text, exact, exact=True)
        return Search(text, [i for i, n in enumerate(self.names) if lowered in n.lower()], exact=False)

    def by_name(self, target: Any) -> Any:
        """``target`` with class names (a name, or one per image) turned into their indices, as the search box
        finds them; anything else unchanged. A name matching several classes, or none, raises a ``TraitError``
        that lists the candidates."""
        from traitlets import TraitError

        if isinstance(target, (list, tuple)):
            return type(target)(self.by_name(t) if isinstance(t, str) else t for t in target)
        if not isinstance(target, str) or target == "predicted" or self.names is None:
            return target
        found = self.search(target)
        if found.exact and len(found.matches) == 1:
            return found.matches[0]
        if found.exact:
            raise TraitError(f"target {target!r} names several classes {found.matches}: give one of these indices.")
        close = ", ".join(repr(self.names[i]) for i in found.matches[:5])
        raise TraitError(f"target {target!r} is no class name" + (f"; classes containing it: {close}" if close else "")
                         + "; give 'predicted', a class index or a name of class_names.")

    def target_label(self, target: Any) -> str:
        """How the target dropdown names a target value."""
        if target == "predicted":
            return "Predicted class (per image)"
        if isinstance(target, tuple):
            return "per image: " + ", ".join(self.name(t) for t in target)
        return self.label(int(target))


def check_labels(labels: Any, images: int, num_classes: int) -> np.ndarray | None:
    """The true classes as an int array, one per image (-1: unknown); refused with both lengths if they differ."""
    if labels is None:
        return None
    values = np.asarray(labels).reshape(-1)
    if len(values) != images:
        raise SaliencyError(f"labels has {len(values)} entries for {images} images: give one true class per "
                            "image (-1 where it is unknown).")
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0)):
        raise SaliencyError(f"labels must be class indices (integers); got {values[:5].tolist()}...")
    values = values.astype(np.int64)
    bad = values[(values < -1) | (values >= max(num_classes, 2))]
    if bad.size:
        raise SaliencyError(f"labels holds {int(bad[0])}, outside the model's {num_classes} classes "
                            f"(0 to {max(num_classes, 2) - 1}, or -1 for unknown).")
    return values


@dataclass
class Search:
    text: str
    matches: list[int]
    exact: bool

    def hint(self, classes: ClassNames) -> str:
        """A line under the search box saying what happened."""
        if not self.text:
            return ""
        if not self.matches:
            return f"No class matches '{self.text}'."
        if len(self.matches) == 1:
            return f"Explaining {classes.label(self.matches[0])}."
        shown = ", ".join(classes.label(i) for i in self.matches[:5]) + (", ..." if len(self.matches) > 5 else "")
        if self.exact:
            return f"{len(self.matches)} classes are called '{self.text}': {shown}. Pick one in the target list."
        return f"{len(self.matches)} classes contain '{self.text}': {shown}. Type more, or pick one."


def top_classes(probabilities: np.ndarray, k: int = 5) -> list[tuple[int, int, float]]:
    """(class, image, probability) for each image's top ``k`` classes, each class once."""
    seen, out = set(), []
    for i, row in enumerate(probabilities):
        for c in np.argsort(row)[::-1][:k]:
            if int(c) not in seen:
                seen.add(int(c))
                out.append((int(c), i, float(row[c])))
    return out


def row_titles(classes: ClassNames, probabilities: np.ndarray, predicted: np.ndarray, target: np.ndarray | None,
               labels: np.ndarray | None, first_index: int = 0, indices: np.ndarray | None = None) -> list[str]:
    """Per image: its number (its dataset index, with ``indices``), the true class, the prediction and, when
    different, the class explained."""
    titles = []
    single = probabilities.shape[1] == 1  # one logit: its sigmoid is the probability of class 0
    for i, p in enumerate(predicted):
        number = f"image {first_index + i + 1}"
        if indices is not None:
            number += f" (#{int(indices[i])})" if indices[i] >= 0 else " (added)"
        lines = [number]
        if labels is not None and labels[i] >= 0:
            lines[0] += f", true: {classes.name(int(labels[i]))}"
        if single:
            lines.append(f"p({classes.name(0)}) = {probabilities[i, 0]:.2f} (sigmoid)")
        else:
            lines.append(f"pred: {classes.name(int(p))} ({probabilities[i, p]:.2f})")
        if target is not None and int(target[i]) != int(p):
            lines.append(f"explains: {classes.name(int(target[i]))} ({probabilities[i, target[i]]:.2f})")
        titles.append("\n".join(lines))
    return titles
