"""Scores built on exact likelihoods: Bayes classification, calibration, ranking quality.

Example:
    >>> import numpy as np
    >>> probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> # all three in the bin (0.5, 1]: accuracy 2/3, mean confidence 0.7667
    >>> round(expected_calibration_error(probabilities, np.array([0, 1, 1]), bins=2), 4)
    0.1
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> auroc(np.array([np.inf, np.inf, 0.0, 1.0]), np.array([0, 1, 0, 1]))  # tied infinities
    0.625
"""

import numpy as np


def class_log_likelihoods(model, x, num_classes, batch_size=4096):
    """log p(x | class k) for every example and class: [N, num_classes].

    `model` is a conditional `FlowModel` whose context is the one-hot class.
    """
    if model.context_size != num_classes:
        raise ValueError(
            f"the model's context has size {model.context_size}, not the {num_classes} "
            "of a one-hot class."
        )
    x = np.asarray(x)
    one_hot = np.eye(num_classes, dtype=x.dtype)
    columns = []
    for k in range(num_classes):
        columns.append(
            np.concatenate(
                [
                    model.log_prob(chunk, context=one_hot[k]).numpy()
                    for chunk in np.array_split(x, max(1, -(-len(x) // batch_size)))
                ]
            )
        )
    return np.stack(columns, axis=1)


def bayes_posterior(log_likelihoods, log_prior=None):
    """p(class | x) ∝ p(x | class)·p(class) from [N, K] log-likelihoods; uniform prior if None."""
    log_likelihoods = np.asarray(log_likelihoods, np.float64)
    if log_prior is not None:
        log_likelihoods = log_likelihoods + np.asarray(log_prior, np.float64)
    log_joint = log_likelihoods - log_likelihoods.max(axis=1, keepdims=True)
    joint = np.exp(log_joint)
    return joint / joint.sum(axis=1, keepdims=True)


def expected_calibration_error(probabilities, labels, bins=15):
    """ECE: Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width confidence bins.

    References:
        Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins bin 0.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def auroc(scores, labels):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count ½.

    `labels` are 1 for positives (e.g. anomalies) and 0 for negatives.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("auroc needs both positive and negative examples.")
    if np.isnan(scores).any():
        raise ValueError(f"scores hold {int(np.isnan(scores).sum())} NaN values: cannot rank them.")
    # Mann-Whitney U from average ranks (ties share their mean rank).
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Comparisons, not differences: inf − inf is NaN, but tied infinities are ties.
    starts = np.r_[0, np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = 0.5 * (start + end + 1)
    positives = labels.sum()
    negatives = len(labels) - positives
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))
