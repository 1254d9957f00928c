"""Labels that know their raters: Dawid–Skene (1979) over one attribute's answers, with crowd-kit.

Pure: numpy, pandas and crowd-kit, no Django (``annotation.services.rater_models`` reads the
judgments and stores what this gives). Imported by the Celery worker only: crowd-kit brings
scikit-learn and scipy (two seconds), and pandas brings pyarrow, none of which a web process needs.

The question is the one the majority label answers: did the rater say "yes" (1) or not (0; "no" and
"maybe" alike, as ``annotation.rules`` never counts a "maybe" as "yes"). Dawid–Skene gives each
rater a 2 × 2 confusion matrix, P(answer | true label), and each item a posterior P(true label = 1),
fitted together by EM from the majority vote's start (crowd-kit's ``DawidSkene``): a rater who agrees
with the others' consensus weighs more than one who does not, so a few careful raters can outvote
several noisy ones where a majority cannot.

A rater with fewer than ``POOL_BELOW`` answers to a question has no confusion matrix of their own:
one or two answers say nothing about the person who gave them, and a matrix fitted to them only
explains them away (every answer then counts for nothing and each item gets the prior). Such raters
share one matrix, the pool's (FED, which does not name its annotators, is all pool).

Per rater, ``accuracy`` is the expected share of their answers that are right under the fitted
model: the mean over their answers of the posterior probability of the label they gave. The flag
rule (``flagged``) marks raters far below the others, for an admin to look at; nothing blocks them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene

METHOD = "dawid_skene"
POOL_BELOW = 10  # answers; raters with fewer share one confusion matrix
_POOL = -1  # the pool's rater id in the model (ours are positive)
MAX_ITERATIONS = 100
TOLERANCE = 1e-5  # on the evidence lower bound per answer (crowd-kit's default stopping rule)

# The flag rule: on one attribute, a rater with at least FLAG_MIN_ANSWERS answers is flagged when
# their estimated accuracy is more than FLAG_MARGIN below the median of the raters with that many
# answers, provided at least FLAG_MIN_RATERS raters have that many (a median of two says little).
FLAG_MIN_ANSWERS = 20
FLAG_MIN_RATERS = 3
FLAG_MARGIN = 0.15


@dataclass(frozen=True)
class RaterFit:
    """One rater on one attribute: answers given, estimated accuracy, confusion matrix
    ``confusion[true][answer]`` = P(answer | true label), labels 0 and 1 (the pool's, for a rater
    with fewer than ``POOL_BELOW`` answers)."""

    answers: int
    accuracy: float
    confusion: tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class AttributeFit:
    """Dawid–Skene on one attribute: per item (``items``, ascending ids) the posterior
    P(true label = 1) (``probability``); per rater their fit; the EM iterations run."""

    items: np.ndarray  # int64, ascending
    probability: np.ndarray  # float64, aligned with items
    raters: dict[int, RaterFit]
    iterations: int

    @property
    def labels(self) -> np.ndarray:
        """The hard labels: 1 where the posterior of 1 is over one half (a tie is 0, as a majority's)."""
        return (self.probability > 0.5).astype(np.int8)


def fit(items: np.ndarray, raters: np.ndarray, answers: np.ndarray) -> AttributeFit:
    """Dawid–Skene over one attribute's answers: ``items``, ``raters`` (ids) and ``answers`` (1 for
    "yes", 0 otherwise) are aligned arrays, one entry per answer; a rater answers an item once."""
    if not (len(items) == len(raters) == len(answers)):
        raise ValueError(
            f"items, raters and answers differ in length: {len(items)}, {len(raters)}, {len(answers)}"
        )
    answers = np.asarray(answers, dtype=np.int8)
    if len(answers) and not np.isin(answers, (0, 1)).all():
        raise ValueError("answers: every answer must be 0 or 1")
    data = pd.DataFrame(
        {"task": np.asarray(items, np.int64), "worker": np.asarray(raters, np.int64), "label": answers}
    )
    if data.duplicated(["task", "worker"]).any():
        raise ValueError("a rater answers an item at most once")
    if data.empty:
        return AttributeFit(np.empty(0, np.int64), np.empty(0), {}, 0)
    raters_seen = data["worker"].map(data["worker"].value_counts())
    pooled = data.assign(worker=data["worker"].where(raters_seen >= POOL_BELOW, _POOL))
    model = DawidSkene(n_iter=MAX_ITERATIONS, tol=TOLERANCE)
    with warnings.catch_warnings():
        # crowd-kit 1.4.2 still passes pandas 3's deprecated inplace=/copy= keywords (they work
        # until pandas 4; requirements.txt pins pandas 3).
        warnings.simplefilter("ignore", category=pd.errors.Pandas4Warning)
        model.fit(pooled)  # the pool's answers to one item are so many observations of its matrix
    # A label nobody gave has no column: its posterior is 0.
    probas = model.probas_.reindex(columns=[0, 1], fill_value=0.0).sort_index()
    task_ids = probas.index.to_numpy(np.int64)
    probability = probas[1].to_numpy(np.float64)
    return AttributeFit(
        items=task_ids,
        probability=probability,
        raters=_rater_fits(data, task_ids, probability, model.errors_),
        iterations=len(model.loss_history_),
    )


def _rater_fits(
    data: pd.DataFrame, task_ids: np.ndarray, probability: np.ndarray, errors: pd.DataFrame
) -> dict[int, RaterFit]:
    at = np.searchsorted(task_ids, data["task"].to_numpy())
    p_one = probability[at]
    answer = data["label"].to_numpy()
    right = np.where(answer == 1, p_one, 1.0 - p_one)  # P(the answer is the true label)
    rater = data["worker"].to_numpy()
    ids, inverse, counts = np.unique(rater, return_inverse=True, return_counts=True)
    accuracy = np.bincount(inverse, weights=right) / counts
    # errors: index (worker, answer), columns true label; rows missing for answers a rater never gave.
    matrix = errors.reindex(columns=[0, 1], fill_value=0.0)
    table = {(int(w), int(a)): (float(row[0]), float(row[1])) for (w, a), row in matrix.iterrows()}
    fits = {}
    for rater_id, n, acc in zip(ids.tolist(), counts.tolist(), accuracy.tolist(), strict=True):
        own = rater_id if n >= POOL_BELOW else _POOL
        given_0 = table.get((own, 0), (0.0, 0.0))  # (P(0 | true 0), P(0 | true 1))
        given_1 = table.get((own, 1), (0.0, 0.0))
        confusion = ((given_0[0], given_1[0]), (given_0[1], given_1[1]))
        fits[rater_id] = RaterFit(answers=n, accuracy=acc, confusion=confusion)
    return fits


def flagged(fits: Mapping[int, RaterFit]) -> set[int]:
    """The raters far below the others on one attribute (the rule at the top of this module)."""
    counted = {rater: f.accuracy for rater, f in fits.items() if f.answers >= FLAG_MIN_ANSWERS}
    if len(counted) < FLAG_MIN_RATERS:
        return set()
    median = float(np.median(list(counted.values())))
    return {rater for rater, accuracy in counted.items() if accuracy < median - FLAG_MARGIN}


def majority(items: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The majority label of each item (ascending ids) from the same answers: 1 when more than
    half said "yes" (``annotation.rules.majority_label``'s rule, for comparison)."""
    ids, inverse = np.unique(np.asarray(items, np.int64), return_inverse=True)
    yes = np.bincount(inverse, weights=np.asarray(answers, np.float64))
    total = np.bincount(inverse)
    return ids, (yes * 2 > total).astype(np.int8)
