"""scikit-learn's estimator base classes and checks, or, where scikit-learn is not installed (a
prediction-only install: ``pip install animeid``), the few parts of them that *using* a fitted
head needs.

Training a head needs scikit-learn (the ``train`` extra); predicting with a saved one does not:
model files hold plain arrays (:mod:`animeid.modelfile`) and every head's ``predict_proba`` is
numpy. Without scikit-learn the heads keep the same interface (``get_params``, ``predict``,
``score``, fitted state ending in ``_``) through these stand-ins; ``clone``, ``GridSearchCV`` and
``Pipeline`` of course need the real library. This saves the ~200 MB of scikit-learn and SciPy.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np

__all__ = ["HAVE_SKLEARN", "BaseEstimator", "ClassifierMixin", "TransformerMixin", "check_is_fitted",
           "validate_data", "check_classification_targets"]

#: Asked for by a command that only predicts (``animeid._sklearn_standins = True``, set by the
#: ``predict`` command before anything imports this module): the heads then use the stand-ins below
#: even where scikit-learn is installed, sparing its import (1.0-1.7 s on 2 cores; predicting needs
#: none of it). Library use is unchanged.
_PREFER_STANDINS = bool(getattr(sys.modules.get("animeid"), "_sklearn_standins", False))

try:
    if _PREFER_STANDINS:
        raise ImportError("stand-ins asked for")
    from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

    class NotFittedError(ValueError, AttributeError):
        """As scikit-learn's: the estimator is used before ``fit``."""

    class BaseEstimator:  # type: ignore[no-redef]
        """``get_params`` / ``set_params`` from the ``__init__`` signature, as scikit-learn's."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params: Any) -> "BaseEstimator":
            valid = set(self._get_param_names())
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"invalid parameter {k!r} for estimator {type(self).__name__}")
                setattr(self, k, v)
            return self

        def __repr__(self) -> str:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class ClassifierMixin:  # type: ignore[no-redef]
        _estimator_type = "classifier"

        def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
            """Mean accuracy of ``predict(X)`` against ``y``."""
            right = np.asarray(self.predict(X)) == np.asarray(y)  # type: ignore[attr-defined]
            return float(np.average(right, weights=sample_weight))

    class TransformerMixin:  # type: ignore[no-redef]
        def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
            return self.fit(X, y, **fit_params).transform(X)  # type: ignore[attr-defined]

    def check_is_fitted(estimator: Any, attributes: Any = None) -> None:  # type: ignore[no-redef]
        """Raise :class:`NotFittedError` unless ``estimator`` has fitted state (a public attribute
        ending in ``_``)."""
        names = [attributes] if isinstance(attributes, str) else attributes
        fitted = (all(hasattr(estimator, a) for a in names) if names else
                  any(k.endswith("_") and not k.startswith("__") for k in vars(estimator)))
        if not fitted:
            raise NotFittedError(f"this {type(estimator).__name__} instance is not fitted yet; call 'fit' first")

    def validate_data(estimator: Any, X: Any, y: Any = "no_validation", *, reset: bool = True,  # type: ignore[no-redef]
                      dtype: Any = np.float64, **_: Any) -> Any:
        """``X`` as a finite 2-D array of ``dtype`` whose width matches ``n_features_in_`` (or sets it)."""
        X = np.asarray(X, dtype=dtype)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array (n_samples, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("input contains NaN or infinity")
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif hasattr(estimator, "n_features_in_") and X.shape[1] != estimator.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                             f"{estimator.n_features_in_} features as input")
        if isinstance(y, str) and y == "no_validation":
            return X
        return X, np.asarray(y)

    def check_classification_targets(y: Any) -> None:  # type: ignore[no-redef]
        y = np.asarray(y)
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise ValueError("unknown label type: continuous values")
