r"""What :func:`~rmt_callbacks.analyze` returns: :class:`ModelAnalysis`, the results of a model as one value.

A frozen sequence of :class:`MatrixResult` (iterate, index, ``len``, unpack, :func:`to_rows` as before; look a
result up by its matrix name, ``result["0.weight"]``) with a
table (``str``), rows (:meth:`ModelAnalysis.rows`), a pandas DataFrame (:meth:`ModelAnalysis.to_pandas`, pandas only
if installed) and a model summary (:attr:`ModelAnalysis.summary`, WeightWatcher's ``get_summary()`` in spirit):

.. math::

    \text{summary}[k] = \frac{1}{|A_k|} \sum_{r \in A_k} r.\text{metrics}[k],\qquad
    A_k = \{r \text{ analysed} : k \in r.\text{metrics},\ r.\text{metrics}[k] \text{ finite}\}.

Tied weights (one tensor under several names, e.g. an output head sharing ``emb.weight``) are analysed once, under
the first name; :attr:`ModelAnalysis.tied` maps that name to the others, the table ends with one ``tied:`` line per
such weight and the summary counts them (``tied``), so no name vanishes silently.

References: WeightWatcher ``get_summary`` (arXiv:1810.01075).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from ._result import MatrixResult, to_rows

__all__ = ["TABLE_COLUMNS", "ModelAnalysis"]

TABLE_COLUMNS: tuple[str, ...] = ("lambda_max", "stable_rank", "mp_sigma2", "mp_ks", "surmise_beta")
"""The metric columns a table shows first, where a result has them; then any metric named ``alpha…`` or
``pl_…`` (the heavy-tailed fit), up to :data:`_MAX_EXTRA` of them, in the order they first appear."""
_EXTRA_PREFIXES = ("alpha", "pl_alpha")
_MAX_EXTRA = 3
_FLAGS = frozenset({"skipped", "estimated"})
_NAME_WIDTH = 40


class ModelAnalysis(Sequence[MatrixResult]):
    """The analysis of a model: an immutable sequence of :class:`MatrixResult`, one per matrix view.

    Indexing: an ``int`` or a ``slice`` as a tuple's, or a view's name (``result["0.weight"]``, ``KeyError``
    listing the names if there is none). ``tied``: weight name to the other names of the same tensor (kept for
    the names the results hold; a split weight such as ``attn.in_proj_weight`` keys its ``.q/.k/.v`` views).

    Examples:
        >>> r = MatrixResult("w", (4, 3), "linear", {"skipped": 0.0, "lambda_max": 2.0, "stable_rank": 1.5})
        >>> out = ModelAnalysis([r])
        >>> (first,) = out
        >>> len(out), out[0] is first, out["w"] is first, out.summary["lambda_max"], out.summary["analysed"]
        (1, True, True, 2.0, 1)
        >>> print(out)  # doctest: +NORMALIZE_WHITESPACE
        name  shape   source  lambda_max  stable_rank
        w     (4, 3)  linear  2           1.5
    """

    __slots__ = ("_results", "_tied")
    _results: tuple[MatrixResult, ...]
    _tied: dict[str, tuple[str, ...]]

    def __init__(self, results: Iterable[MatrixResult] = (), tied: Mapping[str, Sequence[str]] | None = None) -> None:
        results = tuple(results)
        bad = [type(r).__name__ for r in results if not isinstance(r, MatrixResult)]
        if bad:
            raise TypeError(f"ModelAnalysis holds MatrixResult values, got {bad[:3]}")
        names = {r.name for r in results}
        held = {k: tuple(v) for k, v in (tied or {}).items() if v and _holds(names, k)}
        object.__setattr__(self, "_results", results)
        object.__setattr__(self, "_tied", held)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ModelAnalysis is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("ModelAnalysis is immutable")

    @overload
    def __getitem__(self, index: int | str) -> MatrixResult: ...
    @overload
    def __getitem__(self, index: slice) -> ModelAnalysis: ...
    def __getitem__(self, index: int | str | slice) -> MatrixResult | ModelAnalysis:
        if isinstance(index, slice):
            return ModelAnalysis(self._results[index], self._tied)
        if isinstance(index, str):
            found = next((r for r in self._results if r.name == index), None)
            if found is None:
                names = [r.name for r in self._results]
                more = f" and {len(names) - 50} more" if len(names) > 50 else ""
                raise KeyError(f"no matrix named {index!r}; the names are {names[:50]}{more}")
            return found
        return self._results[index]

    @property
    def tied(self) -> dict[str, tuple[str, ...]]:
        """Analysed name to the other names of the same tensor (tied weights, analysed once); ``{}`` if none."""
        return dict(self._tied)

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[MatrixResult]:
        return iter(self._results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ModelAnalysis):
            return self._results == other._results and self._tied == other._tied
        if isinstance(other, list | tuple):
            return list(self._results) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # the results hold dicts

    def __reduce__(self) -> tuple[Any, ...]:
        return (ModelAnalysis, (self._results, self._tied))

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per result, as :func:`to_rows`."""
        return to_rows(self._results)

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (one row per matrix view).

        Raises:
            ImportError: pandas is not installed (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("ModelAnalysis.to_pandas needs pandas: pip install pandas (or use .rows())") from exc
        return pd.DataFrame(self.rows())

    @property
    def summary(self) -> dict[str, float | int]:
        """Model-level numbers: ``matrices``, ``analysed``, ``skipped``, ``estimated`` (counts of views), then the
        mean over the analysed views of each per-matrix metric (those a view lacks or has NaN are left out of its
        mean; a ``…_converged`` mean is the fraction converged). With tied weights, ``tied``: how many names are
        another's tensor, analysed under that one's name (absent when there are none)."""
        analysed = [r for r in self._results if r.skipped is None]
        out: dict[str, float | int] = {
            "matrices": len(self._results),
            "analysed": len(analysed),
            "skipped": len(self._results) - len(analysed),
            "estimated": sum(1 for r in analysed if r.metrics.get("estimated", 0.0) == 1.0),
        }
        if self._tied:
            out["tied"] = sum(len(v) for v in self._tied.values())
        sums: dict[str, list[float]] = {}
        for r in analysed:
            for k, v in r.metrics.items():
                if k not in _FLAGS and isinstance(v, int | float) and math.isfinite(v):
                    sums.setdefault(k, []).append(float(v))
        out.update({k: math.fsum(v) / len(v) for k, v in sums.items()})
        return out

    def columns(self) -> list[str]:
        """The metric columns of the table: :data:`TABLE_COLUMNS` that exist, then ``alpha…``/``pl_alpha…``."""
        present = dict.fromkeys(k for r in self._results for k in r.metrics)
        cols = [c for c in TABLE_COLUMNS if c in present]
        extra = [k for k in present if k.startswith(_EXTRA_PREFIXES) and not k.endswith(("_converged", "_std"))]
        return cols + extra[:_MAX_EXTRA]

    def table(self) -> str:
        """A fixed-width table: name, shape, source, the :meth:`columns`, why a view was skipped; then a line
        ``tied: head.weight is emb.weight (analysed once)`` per tied weight."""
        cols = self.columns()
        head = ["name", "shape", "source", *cols]
        body = []
        for r in self._results:
            name = r.name if len(r.name) <= _NAME_WIDTH else "…" + r.name[-_NAME_WIDTH + 1 :]
            cells = [name, str(tuple(r.shape)), r.source, *(_cell(r.metrics.get(c)) for c in cols)]
            if r.skipped is not None:
                cells.append(f"skipped: {r.skipped[:60]}{'…' if len(r.skipped) > 60 else ''}")
            body.append(cells)
        if any(r.skipped is not None for r in self._results):
            head.append("note")
        widths = [max(len(row[i]) for row in (head, *body) if i < len(row)) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in (head, *body)]
        lines += [
            f"tied: {', '.join(v)} {'is' if len(v) == 1 else 'are'} {k} (analysed once)" for k, v in self._tied.items()
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        s = self.summary
        return f"<ModelAnalysis of {s['matrices']} matrices: {s['analysed']} analysed, {s['skipped']} skipped>"


def _holds(names: set[str], weight: str) -> bool:
    return weight in names or any(n.startswith(weight + ".") for n in names)


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def as_analysis(results: Sequence[MatrixResult]) -> ModelAnalysis:
    """``results`` as a :class:`ModelAnalysis`."""
    return results if isinstance(results, ModelAnalysis) else ModelAnalysis(results)
